import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { gzip } from 'node:zlib';
import { SandboxError } from './tool-call';

/**
 * Tar archives, written and read in this process so that building or reading one opens nothing by
 * name (the sandbox server used to run `tar` as root in the workspace, which follows whatever the
 * sandbox swaps in). Writing: POSIX ustar headers; a name or link target over 100 bytes gets a PAX
 * extended header (`x`) carrying it in full, as GNU tar and bsdtar write and read it. Reading:
 * ustar, PAX `path`/`linkpath`/`size`, and GNU `L`/`K` long names, one entry at a time from a
 * gzip stream, so an upload of any size is read with bounded memory.
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
  /** A regular file unless said otherwise. */
  type?: 'file';
}

/** One folder of an archive. */
export interface TarDirectory {
  type: 'directory';
  name: string;
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
}

/** One symbolic link of an archive, stored as a link (never its target's content). */
export interface TarSymlink {
  type: 'symlink';
  name: string;
  linkTarget: string;
  uid: number;
  gid: number;
  mtimeMs: number;
  mode?: number;
}

/** What {@link createTarGzip} and {@link tarEntryHeader} take. */
export type TarEntry = TarFile | TarDirectory | TarSymlink;

/** Size of a tar block: headers and data are padded to it. */
export const TAR_BLOCK_BYTES = 512;
const NAME_FIELD_BYTES = 100;

/** The gzip-compressed tar of `entries`, in order. */
export async function createTarGzip(entries: readonly TarEntry[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(
      tarEntryHeader(entry, entry.type === 'directory' || entry.type === 'symlink' ? 0 : entry.data.length),
    );
    if (entry.type !== 'directory' && entry.type !== 'symlink') parts.push(padded(entry.data));
  }
  parts.push(tarEndBlocks());
  return promisify(gzip)(Buffer.concat(parts));
}

/**
 * The header blocks of one entry (a PAX header first when its name or link target does not fit
 * ustar's 100 bytes); a file's `size` bytes of data, then {@link tarPadding}, follow them.
 */
export function tarEntryHeader(entry: TarEntry, size: number): Buffer {
  const mtime = Math.floor(entry.mtimeMs / 1000);
  const name = Buffer.from(
    entry.type === 'directory' && !entry.name.endsWith('/') ? `${entry.name}/` : entry.name,
  );
  const linkTarget = Buffer.from(entry.type === 'symlink' ? entry.linkTarget : '');
  const parts: Buffer[] = [];
  const records: Buffer[] = [];
  if (name.length > NAME_FIELD_BYTES) records.push(paxRecord('path', name.toString()));
  if (linkTarget.length > NAME_FIELD_BYTES) records.push(paxRecord('linkpath', linkTarget.toString()));
  if (records.length > 0) {
    const record = Buffer.concat(records);
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
  const type = entry.type === 'directory' ? '5' : entry.type === 'symlink' ? '2' : '0';
  const defaultMode = entry.type === 'symlink' ? 0o777 : 0o644;
  parts.push(
    header({
      // Readers take the PAX path over these fields when a name did not fit.
      name: name.subarray(0, NAME_FIELD_BYTES),
      linkName: linkTarget.subarray(0, NAME_FIELD_BYTES),
      size: type === '0' ? size : 0,
      mode: (entry.mode ?? defaultMode) & 0o7777,
      uid: entry.uid,
      gid: entry.gid,
      mtime,
      type,
    }),
  );
  return Buffer.concat(parts);
}

/** The zeros that pad `size` bytes of data to a whole block. */
export function tarPadding(size: number): Buffer {
  const remainder = size % TAR_BLOCK_BYTES;
  return Buffer.alloc(remainder === 0 ? 0 : TAR_BLOCK_BYTES - remainder);
}

/** The two zero blocks that end an archive. */
export function tarEndBlocks(): Buffer {
  return Buffer.alloc(2 * TAR_BLOCK_BYTES);
}

interface HeaderFields {
  /** At most 100 bytes. */
  name: Buffer;
  linkName?: Buffer;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  type: string;
}

function header(fields: HeaderFields): Buffer {
  const block = Buffer.alloc(TAR_BLOCK_BYTES);
  fields.name.copy(block, 0, 0, NAME_FIELD_BYTES);
  writeOctal(block, 100, 8, fields.mode);
  writeOctal(block, 108, 8, fields.uid);
  writeOctal(block, 116, 8, fields.gid);
  writeOctal(block, 124, 12, fields.size);
  writeOctal(block, 136, 12, fields.mtime);
  block.write(fields.type, 156, 'ascii');
  fields.linkName?.copy(block, 157, 0, NAME_FIELD_BYTES);
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
  return Buffer.concat([data, tarPadding(data.length)]);
}

// ---------------------------------------------------------------------------------------------
// Reading

/** The archive is not a tar.gz this reader understands: bad gzip, a bad header, a cut stream. */
export class InvalidArchiveError extends SandboxError {
  override readonly name = 'InvalidArchiveError';

  constructor(reason: string, options?: { cause?: unknown }) {
    super(`Invalid archive: ${reason}`, options);
  }
}

/**
 * The kind of an entry as its header says: the ones a workspace can hold, and the ones a reader
 * must see to refuse them.
 */
export type TarEntryType =
  | 'file'
  | 'directory'
  | 'symlink'
  | 'hardlink'
  | 'character-device'
  | 'block-device'
  | 'fifo'
  | 'sparse'
  | 'unsupported';

/** One entry read from an archive; its data must be read (or is skipped) before the next entry. */
export interface TarReadEntry {
  /** The name as stored, after PAX and GNU long-name overrides. */
  path: string;
  type: TarEntryType;
  /** The raw type flag, for messages about unsupported entries. */
  typeFlag: string;
  /** Bytes of data the header declares. */
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  /** Target of a symlink or hard link. */
  linkTarget: string;
  /** PAX keys naming GNU sparse files were present. */
  paxSparse: boolean;
  /** The entry's data, `size` bytes in chunks; read at most once. */
  data(): AsyncIterable<Buffer>;
}

/** Longest PAX header or GNU long name read into memory. */
const MAX_META_BYTES = 64 * 1024;

/**
 * Reads the entries of a gzip-compressed tar stream one at a time. `maxTarBytes` bounds the
 * decompressed bytes ever read, so a gzip bomb stops at that bound rather than after it; nothing
 * after the end-of-archive blocks is decompressed. Throws {@link InvalidArchiveError} for a stream
 * that is not a valid tar.gz.
 */
export async function* readTarEntries(
  source: AsyncIterable<Buffer>,
  options: { maxTarBytes?: number } = {},
): AsyncGenerator<TarReadEntry> {
  const gunzip = createGunzip();
  const input = Readable.from(source);
  input.on('error', (error) => gunzip.destroy(error));
  input.pipe(gunzip);
  const reader = new ByteReader(
    gunzip[Symbol.asyncIterator]() as AsyncIterator<Buffer>,
    options.maxTarBytes ?? Infinity,
  );
  try {
    let pax: Record<string, string> = {};
    let longName: string | undefined;
    let longLink: string | undefined;
    for (;;) {
      const block = await reader.read(TAR_BLOCK_BYTES);
      if (block === undefined) throw new InvalidArchiveError('it ends without the end-of-archive blocks');
      if (block.every((byte) => byte === 0)) return;
      verifyChecksum(block);
      const typeFlag = String.fromCharCode(block[156]!) || '0';
      const size = readNumber(block, 124, 12, 'size');
      if (typeFlag === 'x' || typeFlag === 'g' || typeFlag === 'L' || typeFlag === 'K') {
        if (size > MAX_META_BYTES)
          throw new InvalidArchiveError(`an extended header of ${size} bytes (at most ${MAX_META_BYTES})`);
        const data = await reader.readExactly(size);
        await reader.skip(tarPadding(size).length);
        if (typeFlag === 'x') pax = { ...pax, ...parsePax(data) };
        else if (typeFlag === 'L') longName = cString(data);
        else if (typeFlag === 'K') longLink = cString(data);
        continue;
      }
      const prefix = block[345] === 0 ? '' : cString(block.subarray(345, 500));
      const ustarName = cString(block.subarray(0, 100));
      const declaredSize = pax.size === undefined ? size : parsePaxSize(pax.size);
      const entry: TarReadEntry = {
        path:
          pax.path ?? longName ?? (prefix === '' || !isUstar(block) ? ustarName : `${prefix}/${ustarName}`),
        type: entryType(typeFlag, ustarName),
        typeFlag,
        size: entryTypeHasData(typeFlag) ? declaredSize : 0,
        mode: readNumber(block, 100, 8, 'mode'),
        uid: readNumber(block, 108, 8, 'uid'),
        gid: readNumber(block, 116, 8, 'gid'),
        mtimeMs: readNumber(block, 136, 12, 'mtime') * 1000,
        linkTarget: pax.linkpath ?? longLink ?? cString(block.subarray(157, 257)),
        paxSparse: Object.keys(pax).some((key) => key.startsWith('GNU.sparse')),
        data: () => reader.entryData(),
      };
      // Links, folders and devices carry no data whatever the size field says (GNU tar's reading).
      const dataBytes = entry.size;
      pax = {};
      longName = undefined;
      longLink = undefined;
      reader.pending = dataBytes;
      yield entry;
      await reader.skip(reader.pending);
      reader.pending = 0;
      await reader.skip(tarPadding(dataBytes).length);
    }
  } finally {
    input.unpipe(gunzip);
    input.destroy();
    gunzip.destroy();
  }
}

function entryTypeHasData(typeFlag: string): boolean {
  return typeFlag === '0' || typeFlag === '\0' || typeFlag === '7' || typeFlag === 'S';
}

function entryType(typeFlag: string, name: string): TarEntryType {
  switch (typeFlag) {
    case '0':
    case '\0':
    case '7':
      // Old tars mark a folder by a trailing slash on a regular entry.
      return name.endsWith('/') ? 'directory' : 'file';
    case '5':
      return 'directory';
    case '2':
      return 'symlink';
    case '1':
      return 'hardlink';
    case '3':
      return 'character-device';
    case '4':
      return 'block-device';
    case '6':
      return 'fifo';
    case 'S':
      return 'sparse';
    default:
      return 'unsupported';
  }
}

/** POSIX ustar (magic "ustar\0"), whose prefix field extends the name; old GNU headers hold times there. */
function isUstar(block: Buffer): boolean {
  return block.subarray(257, 263).toString('latin1') === 'ustar\0';
}

function verifyChecksum(block: Buffer): void {
  const stored = readNumber(block, 148, 8, 'checksum');
  let unsigned = 0;
  for (let index = 0; index < TAR_BLOCK_BYTES; index += 1)
    unsigned += index >= 148 && index < 156 ? 0x20 : block[index]!;
  if (stored !== unsigned) throw new InvalidArchiveError('a header checksum does not match');
}

/** A numeric header field: octal text, or GNU base-256 when its first byte has the high bit set. */
function readNumber(block: Buffer, offset: number, length: number, field: string): number {
  const bytes = block.subarray(offset, offset + length);
  if ((bytes[0]! & 0x80) !== 0) {
    if ((bytes[0]! & 0x40) !== 0) throw new InvalidArchiveError(`a negative ${field} field`);
    let value = bytes[0]! & 0x3f;
    for (const byte of bytes.subarray(1)) value = value * 256 + byte;
    if (!Number.isSafeInteger(value)) throw new InvalidArchiveError(`a ${field} field too large`);
    return value;
  }
  const text = bytes
    .toString('latin1')
    .replace(/[\0 ]+$/, '')
    .replace(/^[ \0]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new InvalidArchiveError(`a ${field} field that is not a number`);
  return parseInt(text, 8);
}

function cString(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end === -1 ? bytes.length : end).toString('utf8');
}

/** The records of a PAX extended header ("<length> <key>=<value>\n" each). */
function parsePax(data: Buffer): Record<string, string> {
  const records: Record<string, string> = {};
  let offset = 0;
  while (offset < data.length) {
    if (data[offset] === 0) break;
    const space = data.indexOf(0x20, offset);
    const length = space === -1 ? NaN : Number(data.subarray(offset, space).toString('ascii'));
    if (!Number.isInteger(length) || length <= 0 || offset + length > data.length)
      throw new InvalidArchiveError('a malformed PAX record');
    const record = data.subarray(space + 1, offset + length - 1).toString('utf8');
    const equals = record.indexOf('=');
    if (equals === -1) throw new InvalidArchiveError('a malformed PAX record');
    records[record.slice(0, equals)] = record.slice(equals + 1);
    offset += length;
  }
  return records;
}

function parsePaxSize(text: string): number {
  if (!/^[0-9]{1,16}$/.test(text)) throw new InvalidArchiveError('a PAX size that is not a number');
  const size = Number(text);
  if (!Number.isSafeInteger(size)) throw new InvalidArchiveError('a PAX size too large');
  return size;
}

/** Exact reads over a stream of chunks, with a bound on the bytes ever taken from it. */
class ByteReader {
  private buffered: Buffer = Buffer.alloc(0);
  private taken = 0;
  /** Data bytes of the current entry not yet read by its consumer. */
  pending = 0;

  constructor(
    private readonly source: AsyncIterator<Buffer>,
    private readonly maxBytes: number,
  ) {}

  /** More bytes from the source, or false at its end. */
  private async fill(): Promise<boolean> {
    let next: IteratorResult<Buffer>;
    try {
      next = await this.source.next();
    } catch (error) {
      throw new InvalidArchiveError(`not a gzip stream or cut short (${(error as Error).message})`, {
        cause: error,
      });
    }
    if (next.done === true) return false;
    this.taken += next.value.length;
    if (this.taken > this.maxBytes)
      throw new InvalidArchiveError(`it decompresses to over ${this.maxBytes} bytes`);
    this.buffered = this.buffered.length === 0 ? next.value : Buffer.concat([this.buffered, next.value]);
    return true;
  }

  /** Exactly `length` bytes, or undefined when the stream ends first. */
  async read(length: number): Promise<Buffer | undefined> {
    while (this.buffered.length < length) if (!(await this.fill())) return undefined;
    const result = this.buffered.subarray(0, length);
    this.buffered = this.buffered.subarray(length);
    return result;
  }

  async readExactly(length: number): Promise<Buffer> {
    const data = await this.read(length);
    if (data === undefined) throw new InvalidArchiveError('it is cut short inside an entry');
    return data;
  }

  /** Reads past `length` bytes. */
  async skip(length: number): Promise<void> {
    let remaining = length;
    while (remaining > 0) {
      if (this.buffered.length === 0 && !(await this.fill()))
        throw new InvalidArchiveError('it is cut short inside an entry');
      const taken = Math.min(remaining, this.buffered.length);
      this.buffered = this.buffered.subarray(taken);
      remaining -= taken;
    }
  }

  /** The current entry's data not read yet, in chunks as they arrive. */
  async *entryData(): AsyncGenerator<Buffer> {
    while (this.pending > 0) {
      if (this.buffered.length === 0 && !(await this.fill()))
        throw new InvalidArchiveError('it is cut short inside an entry');
      const chunk = this.buffered.subarray(0, Math.min(this.pending, this.buffered.length));
      this.buffered = this.buffered.subarray(chunk.length);
      this.pending -= chunk.length;
      yield chunk;
    }
  }
}
