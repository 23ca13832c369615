import { promisify } from 'node:util';
import { gzip } from 'node:zlib';

/**
 * A tar.gz built in memory from regular files the caller has already read, so building an archive
 * opens nothing by name (the sandbox server used to run `tar` as root in the workspace, which
 * follows whatever the sandbox swaps in). POSIX ustar headers; a name over 100 bytes gets a PAX
 * extended header (`x`) carrying the full path, as GNU tar and bsdtar write and read it.
 */

/** One regular file of an archive. */
export interface TarFile {
  /** Path inside the archive, `/`-separated and relative. */
  name: string;
  data: Buffer;
  /** Permission bits. */
  mode: number;
  uid: number;
  gid: number;
  /** Modification time, in milliseconds since the epoch. */
  mtimeMs: number;
}

const BLOCK_BYTES = 512;
const NAME_FIELD_BYTES = 100;

/** The gzip-compressed tar of `files`, in order. */
export async function createTarGzip(files: readonly TarFile[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const file of files) {
    const mtime = Math.floor(file.mtimeMs / 1000);
    const name = Buffer.from(file.name);
    if (name.length > NAME_FIELD_BYTES) {
      const record = paxRecord('path', file.name);
      parts.push(
        header({
          name: Buffer.from('PaxHeader'),
          size: record.length,
          mode: 0o644,
          uid: 0,
          gid: 0,
          mtime,
          type: 'x',
        }),
        padded(record),
      );
    }
    parts.push(
      header({
        // Readers take the PAX path over this field when the name did not fit.
        name: name.subarray(0, NAME_FIELD_BYTES),
        size: file.data.length,
        mode: file.mode & 0o7777,
        uid: file.uid,
        gid: file.gid,
        mtime,
        type: '0',
      }),
      padded(file.data),
    );
  }
  // Two zero blocks end the archive.
  parts.push(Buffer.alloc(2 * BLOCK_BYTES));
  return promisify(gzip)(Buffer.concat(parts));
}

interface HeaderFields {
  /** At most 100 bytes. */
  name: Buffer;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  type: '0' | 'x';
}

function header(fields: HeaderFields): Buffer {
  const block = Buffer.alloc(BLOCK_BYTES);
  fields.name.copy(block, 0, 0, NAME_FIELD_BYTES);
  writeOctal(block, 100, 8, fields.mode);
  writeOctal(block, 108, 8, fields.uid);
  writeOctal(block, 116, 8, fields.gid);
  writeOctal(block, 124, 12, fields.size);
  writeOctal(block, 136, 12, fields.mtime);
  block.write(fields.type, 156, 'ascii');
  block.write('ustar\0', 257, 'ascii');
  block.write('00', 263, 'ascii');
  // The checksum is computed with its own field taken as eight spaces.
  block.fill(0x20, 148, 156);
  let checksum = 0;
  for (const byte of block) checksum += byte;
  block.write(`${checksum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return block;
}

/** An octal number, zero-padded, NUL-terminated, filling `length` bytes; ids too large become 0. */
function writeOctal(block: Buffer, offset: number, length: number, value: number): void {
  const digits = value.toString(8);
  const text = digits.length < length ? digits.padStart(length - 1, '0') : '0'.repeat(length - 1);
  block.write(`${text}\0`, offset, 'ascii');
}

/** A PAX record "<length> <key>=<value>\n", its length counting its own digits. */
function paxRecord(key: string, value: string): Buffer {
  const body = ` ${key}=${value}\n`;
  const bodyBytes = Buffer.byteLength(body);
  let length = bodyBytes + String(bodyBytes).length;
  if (String(length).length !== String(bodyBytes).length) length += 1;
  return Buffer.from(`${length}${body}`);
}

function padded(data: Buffer): Buffer {
  const remainder = data.length % BLOCK_BYTES;
  return remainder === 0 ? data : Buffer.concat([data, Buffer.alloc(BLOCK_BYTES - remainder)]);
}
