import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

/**
 * POSIX access ACLs of folders, read and written as the kernel's `system.posix_acl_access`
 * extended attribute. Node has no xattr call and Debian's `acl` package (setfacl) is not on a fresh
 * machine, but python3 is (the project needs it anyway), and its `os.getxattr` / `os.setxattr` are
 * thin wrappers of the system calls: the value is built and parsed here, python3 only moves bytes.
 */

const execFileAsync = promisify(execFile);

/** Name of the extended attribute that holds a file's access ACL. */
const ACCESS_ACL_ATTRIBUTE = 'system.posix_acl_access';

/** Version of the xattr layout (`POSIX_ACL_XATTR_VERSION` in linux/posix_acl_xattr.h). */
const ACL_XATTR_VERSION = 2;

/** The id field of entries that name no user or group (`ACL_UNDEFINED_ID`). */
const UNDEFINED_ID = 0xffff_ffff;

/** Bytes of the header (the version) and of each entry (tag u16, permissions u16, id u32). */
const HEADER_BYTES = 4;
const ENTRY_BYTES = 8;

/** Entry tags, as the kernel numbers them. */
export const AclTag = {
  userObject: 0x01,
  user: 0x02,
  groupObject: 0x04,
  group: 0x08,
  mask: 0x10,
  other: 0x20,
} as const;
export type AclTag = (typeof AclTag)[keyof typeof AclTag];

/** Permission bits of an entry. */
export const ACL_READ = 4;
export const ACL_WRITE = 2;
export const ACL_EXECUTE = 1;

/** One ACL entry: `id` is the user or group of `user` and `group` entries only. */
export interface AclEntry {
  tag: AclTag;
  permissions: number;
  id?: number;
}

/**
 * No ACL can be set on `folder`: its file system does not store them (`EOPNOTSUPP`), the kernel
 * refused the value, or python3 is not on PATH.
 */
export class AclUnsupportedError extends Error {
  override readonly name = 'AclUnsupportedError';

  constructor(
    readonly folder: string,
    message: string,
  ) {
    super(message);
  }
}

function unsupportedBy(folder: string, errorName: string): AclUnsupportedError {
  return new AclUnsupportedError(folder, `${folder} does not take a POSIX ACL (${errorName})`);
}

/** The xattr value of `entries`, sorted by tag then id as the kernel requires. */
export function encodePosixAcl(entries: readonly AclEntry[]): Buffer {
  const sorted = [...entries].sort((a, b) => a.tag - b.tag || (a.id ?? 0) - (b.id ?? 0));
  const buffer = Buffer.alloc(HEADER_BYTES + ENTRY_BYTES * sorted.length);
  buffer.writeUInt32LE(ACL_XATTR_VERSION, 0);
  sorted.forEach((entry, index) => {
    const offset = HEADER_BYTES + ENTRY_BYTES * index;
    buffer.writeUInt16LE(entry.tag, offset);
    buffer.writeUInt16LE(entry.permissions, offset + 2);
    buffer.writeUInt32LE(entry.id ?? UNDEFINED_ID, offset + 4);
  });
  return buffer;
}

/** The entries of an xattr value; throws on a value that is not version 2 or is cut short. */
export function decodePosixAcl(value: Buffer): AclEntry[] {
  if (value.length < HEADER_BYTES || (value.length - HEADER_BYTES) % ENTRY_BYTES !== 0) {
    throw new Error(`a POSIX ACL of ${value.length} bytes is malformed`);
  }
  const version = value.readUInt32LE(0);
  if (version !== ACL_XATTR_VERSION)
    throw new Error(`POSIX ACL version ${version} is not ${ACL_XATTR_VERSION}`);
  const entries: AclEntry[] = [];
  for (let offset = HEADER_BYTES; offset < value.length; offset += ENTRY_BYTES) {
    const tag = value.readUInt16LE(offset) as AclTag;
    const permissions = value.readUInt16LE(offset + 2);
    const id = value.readUInt32LE(offset + 4);
    entries.push(
      tag === AclTag.user || tag === AclTag.group ? { tag, permissions, id } : { tag, permissions },
    );
  }
  return entries;
}

/** The minimal ACL a mode stands for: owner, group and other, no named entries. */
export function aclFromMode(mode: number): AclEntry[] {
  return [
    { tag: AclTag.userObject, permissions: (mode >> 6) & 7 },
    { tag: AclTag.groupObject, permissions: (mode >> 3) & 7 },
    { tag: AclTag.other, permissions: mode & 7 },
  ];
}

/**
 * `entries` with `uid` allowed to traverse (execute, nothing more is added) and the mask letting
 * that through; other entries are kept as they are. Undefined when `uid` can already traverse.
 */
export function withUserTraversal(entries: readonly AclEntry[], uid: number): AclEntry[] | undefined {
  const named = entries.find((entry) => entry.tag === AclTag.user && entry.id === uid);
  const mask = entries.find((entry) => entry.tag === AclTag.mask);
  const allowed = (entry: AclEntry | undefined) =>
    entry !== undefined && (entry.permissions & ACL_EXECUTE) !== 0;
  if (allowed(named) && allowed(mask)) return undefined;
  const kept = entries.filter((entry) => entry !== named && entry !== mask);
  const user = { tag: AclTag.user, id: uid, permissions: (named?.permissions ?? 0) | ACL_EXECUTE };
  // Without a mask (a minimal ACL) the mask becomes the union of the group class, as setfacl does.
  const groupClass = kept
    .filter((entry) => entry.tag === AclTag.groupObject || entry.tag === AclTag.group)
    .reduce((union, entry) => union | entry.permissions, 0);
  const maskPermissions = (mask?.permissions ?? groupClass) | ACL_EXECUTE;
  return [...kept, user, { tag: AclTag.mask, permissions: maskPermissions }];
}

/** Prints, for each path given, the ACL's value in hex or `!` and the errno's name, one per line. */
const READ_SCRIPT = [
  'import errno, os, sys',
  'for name in sys.argv[1:]:',
  '    try:',
  `        print(os.getxattr(name, "${ACCESS_ACL_ATTRIBUTE}").hex())`,
  '    except OSError as error:',
  '        print("!" + errno.errorcode.get(error.errno, str(error.errno)))',
].join('\n');

const WRITE_SCRIPT = [
  'import errno, os, sys',
  'try:',
  `    os.setxattr(sys.argv[1], "${ACCESS_ACL_ATTRIBUTE}", bytes.fromhex(sys.argv[2]))`,
  'except OSError as error:',
  '    sys.stderr.write(errno.errorcode.get(error.errno, str(error.errno)))',
  '    sys.exit(3)',
].join('\n');

/** Errors python3 reports (by errno name) when the file system keeps no ACL. */
const UNSUPPORTED_ERRORS = new Set(['EOPNOTSUPP', 'ENOTSUP', 'EINVAL']);

/** python3's xattr call failed; `errorName` is the errno's name (`ENODATA`, `EOPNOTSUPP`, …). */
class XattrCallError extends Error {
  override readonly name = 'XattrCallError';

  constructor(
    folder: string,
    readonly errorName: string,
  ) {
    super(`the extended attribute call on ${folder} failed: ${errorName}`);
  }
}

async function runPython(script: string, folder: string, ...rest: string[]): Promise<string> {
  try {
    // -I -S: no environment variables, user site or site packages have a say, and it starts faster.
    const { stdout } = await execFileAsync('python3', ['-I', '-S', '-c', script, folder, ...rest], {
      encoding: 'utf8',
    });
    return stdout;
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & { stderr?: string };
    if (failure.code === 'ENOENT') {
      throw new AclUnsupportedError(folder, `python3, which sets the POSIX ACL of ${folder}, is not on PATH`);
    }
    throw new XattrCallError(folder, (failure.stderr ?? '').trim() || failure.message);
  }
}

/** The access ACL stored on `folder`, or undefined when it has none beyond its mode. */
export async function readPosixAcl(folder: string): Promise<AclEntry[] | undefined> {
  const [acl] = await readPosixAcls([folder]);
  return acl;
}

/**
 * The access ACLs of several folders with one python3 start (which costs more than the calls):
 * for each, its entries or undefined when it has none beyond its mode.
 */
export async function readPosixAcls(folders: readonly string[]): Promise<Array<AclEntry[] | undefined>> {
  const [first, ...rest] = folders;
  if (first === undefined) return [];
  const lines = (await runPython(READ_SCRIPT, first, ...rest)).split('\n');
  return folders.map((folder, index) => {
    const line = lines[index] ?? '!EIO';
    if (!line.startsWith('!')) return decodePosixAcl(Buffer.from(line, 'hex'));
    const errorName = line.slice(1);
    if (errorName === 'ENODATA') return undefined;
    if (UNSUPPORTED_ERRORS.has(errorName)) throw unsupportedBy(folder, errorName);
    throw new XattrCallError(folder, errorName);
  });
}

/** Stores `entries` as the access ACL of `folder` (which also sets the group bits of its mode to the mask). */
export async function writePosixAcl(folder: string, entries: readonly AclEntry[]): Promise<void> {
  try {
    await runPython(WRITE_SCRIPT, folder, encodePosixAcl(entries).toString('hex'));
  } catch (error) {
    if (error instanceof XattrCallError && UNSUPPORTED_ERRORS.has(error.errorName)) {
      throw unsupportedBy(folder, error.errorName);
    }
    throw error;
  }
}
