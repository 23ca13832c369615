import { constants } from 'node:fs';
import { lstat, mkdir, open, symlink, lchown, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { HostIdentity } from './bubblewrap';
import { readTarEntries, TAR_BLOCK_BYTES, type TarReadEntry } from './tar-archive';
import { SandboxError } from './tool-call';
import { entryPath, errorCode, openFolderEntry } from './workspace-paths';

/**
 * Unpacking a hostile tar.gz (an upload, a workspace's archive) into a folder so that nothing lands
 * outside it. Every entry is checked against the tree the archive has built so far (no `..`, no
 * absolute name, nothing through a symlink, no duplicate, no hard link, device, FIFO or sparse
 * file, no symlink leaving the folder, sizes and counts within the limits, a declared size refused
 * on its header before any of its bytes is read), then created by descriptor walk: each folder on
 * the way is held open and the next entry made relative to it with `O_NOFOLLOW` / `O_EXCL`, never
 * through a host path built from a name. So even a folder another process swaps for a symlink
 * mid-unpack is not followed.
 */

/** Most entries an archive may hold unless a caller says otherwise. */
export const DEFAULT_MAX_ARCHIVE_ENTRIES = 100_000;

/** Longest path and longest single name an entry may have (PATH_MAX, NAME_MAX). */
const MAX_PATH_BYTES = 4096;
const MAX_NAME_BYTES = 255;

/** Decompressed bytes of tar structure allowed per entry beyond its data: headers, PAX, long names, padding. */
const OVERHEAD_BYTES_PER_ENTRY = 8 * TAR_BLOCK_BYTES;

/** An entry of an archive that would reach outside its folder or is of a refused kind. */
export class UnsafeArchiveError extends SandboxError {
  override readonly name = 'UnsafeArchiveError';

  constructor(
    readonly entry: string,
    readonly reason: string,
  ) {
    super(`Unsafe archive: ${entry}: ${reason}`);
  }
}

/** The archive unpacks to more than its limits: too many bytes or too many entries. */
export class ArchiveOverLimitError extends SandboxError {
  override readonly name = 'ArchiveOverLimitError';
}

/** What an unpack may take. */
export interface UnpackLimits {
  /** Bytes of file data, all files together. */
  maxUnpackedBytes: number;
  /** Entries of the archive (files, folders, symlinks). */
  maxEntries: number;
}

/** What an unpack made (or an inspection found). */
export interface UnpackSummary {
  files: number;
  folders: number;
  symlinks: number;
  unpackedBytes: number;
  /** Entries left out with `skipUnsafe`, with the reason of each. */
  skipped: Array<{ path: string; reason: string }>;
}

/** The kinds the tree built so far holds, by normalized path; `implicit` is a folder made for an entry below it. */
type TreeKind = 'file' | 'directory' | 'implicit' | 'symlink';

/** An entry that passed the checks: its path's components and what it is. */
interface CheckedEntry {
  components: string[];
  path: string;
  kind: 'file' | 'directory' | 'symlink';
  /** The folders above it the archive never named, which must be made. */
  implicitFolders: number;
}

/**
 * Checks entries one by one against the tree they build, the same way for unpacking and for
 * inspecting, so `inspectArchive` accepts exactly what `unpackArchive` would.
 */
class ArchiveChecker {
  private readonly tree = new Map<string, TreeKind>();
  readonly summary: UnpackSummary = { files: 0, folders: 0, symlinks: 0, unpackedBytes: 0, skipped: [] };
  private entries = 0;

  constructor(private readonly limits: UnpackLimits) {}

  /** The checked entry, or undefined for the archive's own root (`./`). Throws what is refused. */
  check(entry: TarReadEntry): CheckedEntry | undefined {
    this.entries += 1;
    if (this.entries > this.limits.maxEntries)
      throw new ArchiveOverLimitError(`Archive over ${this.limits.maxEntries} entries`);
    const name = entry.path;
    const unsafe = (reason: string): UnsafeArchiveError => new UnsafeArchiveError(entryLabel(name), reason);
    if (name.includes('\0')) throw unsafe('a NUL byte in the name');
    if (Buffer.byteLength(name) > MAX_PATH_BYTES) throw unsafe(`a name over ${MAX_PATH_BYTES} bytes`);
    if (name.startsWith('/')) throw unsafe('an absolute name');
    const components = name.split('/').filter((component) => component !== '' && component !== '.');
    if (components.includes('..')) throw unsafe('a ".." in the name');
    if (components.some((component) => Buffer.byteLength(component) > MAX_NAME_BYTES))
      throw unsafe(`a name over ${MAX_NAME_BYTES} bytes`);
    const kind = this.kindOf(entry, unsafe);
    if (components.length === 0) {
      if (kind === 'directory') return undefined;
      throw unsafe('an entry that is the archive itself');
    }
    const entryPathText = components.join('/');
    let implicitFolders = 0;
    for (let depth = 1; depth < components.length; depth += 1) {
      const above = components.slice(0, depth).join('/');
      const existing = this.tree.get(above);
      if (existing === 'symlink') throw unsafe(`an entry through the symlink ${JSON.stringify(above)}`);
      if (existing === 'file') throw unsafe(`an entry below the file ${JSON.stringify(above)}`);
      if (existing === undefined) implicitFolders += 1;
    }
    const existing = this.tree.get(entryPathText);
    if (existing !== undefined && !(existing === 'implicit' && kind === 'directory'))
      throw unsafe('a duplicate entry');
    if (kind === 'symlink') {
      const problem = symlinkTargetProblem(components, entry.linkTarget);
      if (problem !== undefined) throw unsafe(problem);
    }
    if (kind === 'file') {
      const total = this.summary.unpackedBytes + entry.size;
      // Refused on the header: not one byte of an entry over the budget is read or written.
      if (total > this.limits.maxUnpackedBytes) {
        throw new ArchiveOverLimitError(
          `Unpacked size ${total} bytes over the workspace limit of ${this.limits.maxUnpackedBytes} bytes`,
        );
      }
    }
    return { components, path: entryPathText, kind, implicitFolders };
  }

  /** Records an entry as made (or, inspecting, as it would be). */
  record(checked: CheckedEntry, size: number): void {
    for (let depth = 1; depth < checked.components.length; depth += 1) {
      const above = checked.components.slice(0, depth).join('/');
      if (!this.tree.has(above)) this.tree.set(above, 'implicit');
    }
    this.summary.folders += checked.implicitFolders;
    if (checked.kind === 'directory') {
      if (this.tree.get(checked.path) !== 'implicit') this.summary.folders += 1;
      this.tree.set(checked.path, 'directory');
    } else {
      this.tree.set(checked.path, checked.kind);
      if (checked.kind === 'file') {
        this.summary.files += 1;
        this.summary.unpackedBytes += size;
      } else this.summary.symlinks += 1;
    }
  }

  /** The bound on decompressed tar bytes these limits allow: data plus structure per entry. */
  static maxTarBytes(limits: UnpackLimits): number {
    return limits.maxUnpackedBytes + (limits.maxEntries + 2) * OVERHEAD_BYTES_PER_ENTRY;
  }

  private kindOf(entry: TarReadEntry, unsafe: (reason: string) => UnsafeArchiveError): CheckedEntry['kind'] {
    if (entry.paxSparse) throw unsafe('a sparse file');
    switch (entry.type) {
      case 'file':
      case 'directory':
      case 'symlink':
        return entry.type;
      case 'hardlink':
        throw unsafe('a hard link');
      case 'character-device':
        throw unsafe('a character device');
      case 'block-device':
        throw unsafe('a block device');
      case 'fifo':
        throw unsafe('a FIFO');
      case 'sparse':
        throw unsafe('a sparse file');
      case 'unsupported':
        throw unsafe(`an unsupported entry type ${JSON.stringify(entry.typeFlag)}`);
    }
  }
}

/**
 * Why a symlink at `linkComponents` (relative to the unpack folder) pointing at `target` could lead
 * out of the folder, or undefined when it cannot. Absolute targets are refused. A relative target
 * may climb with leading `..` no higher than the folder, and may not climb after naming something:
 * with `a/..` the kernel climbs from wherever the link `a` points, which no reading of the text
 * alone can bound. With every link so checked and no entry made through a link, no chain of links
 * resolves outside.
 */
export function symlinkTargetProblem(linkComponents: readonly string[], target: string): string | undefined {
  if (target === '') return 'a symlink with an empty target';
  if (target.includes('\0')) return 'a NUL byte in the symlink target';
  if (Buffer.byteLength(target) > MAX_PATH_BYTES) return `a symlink target over ${MAX_PATH_BYTES} bytes`;
  if (path.posix.isAbsolute(target)) return `a symlink to the absolute path ${JSON.stringify(target)}`;
  let depth = linkComponents.length - 1;
  let named = false;
  for (const component of target.split('/')) {
    if (component === '' || component === '.') continue;
    if (component === '..') {
      if (named) return `a symlink target with ".." after a name: ${JSON.stringify(target)}`;
      depth -= 1;
      if (depth < 0) return `a symlink leaving the folder: ${JSON.stringify(target)}`;
    } else named = true;
  }
  return undefined;
}

/**
 * Unpacks a tar.gz into `destination`, an existing empty folder, within `limits`. What it creates
 * belongs to `owner` when given (the sandbox's host user: the server is root), with permission
 * bits masked to 0o777 (no setuid, setgid or sticky bit) and the owner's read and write kept.
 * Throws {@link UnsafeArchiveError}, {@link ArchiveOverLimitError} or `InvalidArchiveError`; with
 * `skipUnsafe`, an unsafe entry is left out and listed in `skipped` instead of refusing the
 * archive (what `agents pull` does with a workspace that is the sandbox's making). A refused
 * archive may leave entries behind in `destination`: callers unpack into a staging folder.
 */
export async function unpackArchive(
  archive: AsyncIterable<Buffer>,
  destination: string,
  limits: UnpackLimits,
  options: { owner?: HostIdentity; skipUnsafe?: boolean } = {},
): Promise<UnpackSummary> {
  const root = await open(destination, constants.O_RDONLY | constants.O_DIRECTORY);
  const parents = new ParentCache(root, options.owner);
  try {
    return await readChecked(archive, limits, options.skipUnsafe === true, async (entry, checked) => {
      const parent = await parents.folderOf(checked.components.slice(0, -1), checked.path);
      const name = checked.components.at(-1)!;
      switch (checked.kind) {
        case 'directory':
          await makeDirectory(parent, name, entry.mode, options.owner, checked.path);
          return 0;
        case 'symlink':
          await symlink(entry.linkTarget, entryPath(parent, name)).catch((error: unknown) => {
            throw existsAsUnsafe(error, checked.path);
          });
          if (options.owner !== undefined)
            await lchown(entryPath(parent, name), options.owner.uid, options.owner.gid);
          return 0;
        case 'file':
          return writeFile(parent, name, entry, options.owner, checked.path);
      }
    });
  } finally {
    await parents.close();
    await root.close();
  }
}

/**
 * Reads a tar.gz through the same checks as {@link unpackArchive} and writes nothing: what an upload
 * is judged by before it is kept.
 */
export async function inspectArchive(
  archive: AsyncIterable<Buffer>,
  limits: UnpackLimits,
): Promise<UnpackSummary> {
  return readChecked(archive, limits, false, async (entry) => {
    let size = 0;
    for await (const chunk of entry.data()) size += chunk.length;
    return size;
  });
}

/** Reads every entry, checks it, and hands the safe ones to `apply`, which returns the bytes it wrote. */
async function readChecked(
  archive: AsyncIterable<Buffer>,
  limits: UnpackLimits,
  skipUnsafe: boolean,
  apply: (entry: TarReadEntry, checked: CheckedEntry) => Promise<number>,
): Promise<UnpackSummary> {
  const checker = new ArchiveChecker(limits);
  for await (const entry of readTarEntries(archive, { maxTarBytes: ArchiveChecker.maxTarBytes(limits) })) {
    let checked: CheckedEntry | undefined;
    try {
      checked = checker.check(entry);
    } catch (error) {
      if (!(skipUnsafe && error instanceof UnsafeArchiveError)) throw error;
      checker.summary.skipped.push({ path: entry.path, reason: error.reason });
      continue;
    }
    if (checked === undefined) continue;
    checker.record(checked, await apply(entry, checked));
  }
  return checker.summary;
}

/**
 * The folder an entry goes in, opened component by component from the unpack root with
 * `O_NOFOLLOW`, folders the archive never named made on the way. The last one is kept open, since
 * archives list the entries of a folder together.
 */
class ParentCache {
  private cached: { key: string; handle: FileHandle } | undefined;

  constructor(
    private readonly root: FileHandle,
    private readonly owner: HostIdentity | undefined,
  ) {}

  async folderOf(components: readonly string[], entry: string): Promise<FileHandle> {
    if (components.length === 0) return this.root;
    const key = components.join('/');
    if (this.cached?.key === key) return this.cached.handle;
    await this.close();
    let current = this.root;
    for (const component of components) {
      let next = await openFolderEntry(current, component);
      if (next === undefined) {
        // Missing (made now), or something that is not a folder: a symlink swapped in is refused.
        await makeDirectory(current, component, 0o755, this.owner, entry, true);
        next = await openFolderEntry(current, component);
        if (next === undefined)
          throw new UnsafeArchiveError(entryLabel(entry), 'a folder on its way is not a folder');
      }
      if (current !== this.root) await current.close();
      current = next;
    }
    this.cached = { key, handle: current };
    return current;
  }

  async close(): Promise<void> {
    const cached = this.cached;
    this.cached = undefined;
    if (cached !== undefined) await cached.handle.close();
  }
}

/** Makes folder `name` of `parent` (taking an existing one when `implicit` or it was made implicitly). */
async function makeDirectory(
  parent: FileHandle,
  name: string,
  mode: number,
  owner: HostIdentity | undefined,
  entry: string,
  implicit = false,
): Promise<void> {
  const location = entryPath(parent, name);
  try {
    await mkdir(location, 0o700);
  } catch (error) {
    if (errorCode(error) !== 'EEXIST') throw error;
    const stats = await lstat(location);
    if (!stats.isDirectory())
      throw new UnsafeArchiveError(entryLabel(entry), 'a folder on its way is not a folder');
    if (implicit) return;
  }
  const folder = await openFolderEntry(parent, name);
  if (folder === undefined)
    throw new UnsafeArchiveError(entryLabel(entry), 'a folder on its way is not a folder');
  try {
    if (owner !== undefined) await folder.chown(owner.uid, owner.gid);
    await folder.chmod((mode & 0o777) | 0o700);
  } finally {
    await folder.close();
  }
}

/** Creates the file `name` (never one that exists, never through a symlink) and writes the entry's data to it. */
async function writeFile(
  parent: FileHandle,
  name: string,
  entry: TarReadEntry,
  owner: HostIdentity | undefined,
  entryName: string,
): Promise<number> {
  let file: FileHandle;
  try {
    file = await open(
      entryPath(parent, name),
      constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
      0o600,
    );
  } catch (error) {
    throw existsAsUnsafe(error, entryName);
  }
  let written = 0;
  try {
    if (owner !== undefined) await file.chown(owner.uid, owner.gid);
    for await (const chunk of entry.data()) {
      await file.write(chunk, 0, chunk.length, written);
      written += chunk.length;
    }
    await file.chmod((entry.mode & 0o777) | 0o600);
    const seconds = entry.mtimeMs / 1000;
    await file.utimes(seconds, seconds);
  } finally {
    await file.close();
  }
  return written;
}

/** An entry that exists already on disk (a race, or a case the checks missed) is refused as a duplicate. */
function existsAsUnsafe(error: unknown, entry: string): unknown {
  const code = errorCode(error);
  if (code === 'EEXIST' || code === 'ELOOP')
    return new UnsafeArchiveError(entryLabel(entry), 'a duplicate entry');
  return error;
}

/** An entry's name as messages show it: as is when plainly printable, JSON-quoted otherwise (one line, visible). */
function entryLabel(name: string): string {
  return /^[\x21-\x7e][\x20-\x7e]*$/.test(name) ? name : JSON.stringify(name);
}
