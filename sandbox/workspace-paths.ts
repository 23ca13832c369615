import { randomUUID } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import {
  lstat,
  mkdir,
  open,
  readdir,
  readlink,
  realpath,
  rename,
  rmdir,
  unlink,
  type FileHandle,
} from 'node:fs/promises';
import path from 'node:path';
import type { HostIdentity } from './bubblewrap';
import { SandboxError } from './tool-call';

/**
 * Paths given by the model, resolved inside a workspace without ever letting the kernel follow a
 * symlink the sandbox made. The server is root and the workspace belongs to the sandbox, whose
 * processes may swap a folder and a symlink at any moment (`renameat2(RENAME_EXCHANGE)` in a loop):
 * a check of a path followed by an open of the same path is a race the sandbox wins. So nothing
 * here opens a workspace path by its host name. The walk holds each folder it passes through as a
 * descriptor and opens the next component relative to it with `O_NOFOLLOW`, through the
 * `/proc/self/fd/<fd>/<name>` magic link (that is `openat(fd, name, O_NOFOLLOW)` with Node's path
 * APIs): a held folder cannot be redirected by a later swap, and a component that became a symlink
 * fails to open instead of being followed. Symlinks found on the way are resolved here, in the
 * sandbox's view (see {@link resolveInWorkspace}), never by the kernel. `..` pops a held folder.
 */

/** Where a workspace is mounted inside the sandbox: the absolute path commands and the model see. */
export const SANDBOX_WORKSPACE_PATH = '/workspace';

/** The refusal every path outside the workspace gets (SEED-BEHAVIOURS 41), reproduced exactly. */
export const ACCESS_DENIED_MESSAGE = 'Access denied: path outside workspace';

/** Symbolic links followed, or changes of an entry under the walk, in one resolution: the kernel's own limit. */
const MAX_SYMLINK_HOPS = 40;

/** Longest path and longest single name the kernel takes (PATH_MAX, NAME_MAX). */
const MAX_PATH_BYTES = 4096;
const MAX_NAME_BYTES = 255;

/** Times an open is retried from the root when its final entry changed kind under it. */
const MAX_OPEN_ATTEMPTS = 10;

/** Folders held open at once while removing a tree; deeper folders are moved up first (see {@link removeEntryBeneath}). */
const MAX_REMOVAL_DEPTH = 64;

/** Passes over a folder being removed before giving up on entries that keep appearing. */
const MAX_REMOVAL_PASSES = 100;

/** Opens a folder and never a symlink to one. */
const FOLDER_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** A path given by the model leads outside its workspace, directly, through `..` or through a symlink. */
export class PathOutsideWorkspaceError extends SandboxError {
  override readonly name = 'PathOutsideWorkspaceError';

  constructor(readonly requestedPath: string) {
    super(ACCESS_DENIED_MESSAGE);
  }
}

/** A path that no file system takes: a NUL byte, a name over 255 bytes, a path over 4096 bytes. */
export class InvalidWorkspacePathError extends SandboxError {
  override readonly name = 'InvalidWorkspacePathError';
}

/** Nothing is at the path (or a file stands where a folder should be). */
export class WorkspaceEntryMissingError extends SandboxError {
  override readonly name = 'WorkspaceEntryMissingError';

  constructor(readonly requestedPath: string) {
    super(`File not found: ${requestedPath}`);
  }
}

/** The path names a folder, a FIFO or another entry that is not a regular file. */
export class NotAFileError extends SandboxError {
  override readonly name = 'NotAFileError';

  constructor(readonly requestedPath: string) {
    super(`Not a file: ${requestedPath}`);
  }
}

/** The path names a file where a folder is needed. */
export class NotAFolderError extends SandboxError {
  override readonly name = 'NotAFolderError';

  constructor(readonly requestedPath: string) {
    super(`Not a folder: ${requestedPath}`);
  }
}

/** The final entry kept changing kind (file, symlink) while it was being opened. */
class EntryChangedError extends Error {}

/**
 * The path of entry `name` of a held folder, through the folder's `/proc/self/fd` magic link: the
 * kernel resolves the magic link to the held folder itself, then looks `name` up in it. With
 * `O_NOFOLLOW`, `lstat`, `readlink`, `unlink`, `rmdir` or `rename`, a symlink there is never followed.
 */
export function entryPath(folder: FileHandle, name: string): string {
  return `/proc/self/fd/${folder.fd}/${name}`;
}

/** The path that lists a held folder (`readdir` of its magic link). */
export function heldFolderPath(folder: FileHandle): string {
  return `/proc/self/fd/${folder.fd}`;
}

/**
 * Opens entry `name` of a held folder as a folder, or undefined when it is not one any more (it was
 * removed, or swapped for a symlink or a file since it was looked at).
 */
export async function openFolderEntry(folder: FileHandle, name: string): Promise<FileHandle | undefined> {
  try {
    return await open(entryPath(folder, name), FOLDER_FLAGS);
  } catch (error) {
    if (isChangedEntry(error)) return undefined;
    throw error;
  }
}

/** One folder held by a walk, and its name in the folder above (empty for the workspace root). */
interface HeldFolder {
  handle: FileHandle;
  name: string;
}

/**
 * Where a walk of a path ended: the folders held from the workspace root down (the last one is the
 * folder the path names, or the parent of its final entry), and what lies below that folder.
 * Close it in a `finally`.
 */
export class WorkspaceWalk {
  /** Components below the last held folder that do not exist (yet). */
  missing: string[] = [];
  /** The final entry when it exists and is not a folder, by its name in the last held folder. */
  entry: { name: string; stats: Stats } | undefined;

  constructor(
    readonly requestedPath: string,
    private readonly folders: HeldFolder[],
  ) {}

  /** The last held folder. */
  get folder(): FileHandle {
    return this.folders[this.folders.length - 1]!.handle;
  }

  /** The workspace root, held since the walk began. */
  get root(): FileHandle {
    return this.folders[0]!.handle;
  }

  /** The real path of the last held folder relative to the workspace root, '' for the root itself. */
  get folderPath(): string {
    return this.folders
      .slice(1)
      .map((folder) => folder.name)
      .join('/');
  }

  /** Whether the path names an existing folder (the last held one). */
  get namesFolder(): boolean {
    return this.missing.length === 0 && this.entry === undefined;
  }

  /** Holds `handle`, the folder `name` of the last held folder, as the new last one. */
  enter(handle: FileHandle, name: string): void {
    this.folders.push({ handle, name });
  }

  /** Leaves the last held folder for its parent; false at the root. */
  async leave(): Promise<boolean> {
    if (this.folders.length === 1) return false;
    await this.folders.pop()!.handle.close();
    return true;
  }

  /** Leaves every held folder but the root: where an absolute symlink target starts. */
  async backToRoot(): Promise<void> {
    while (await this.leave());
  }

  /** Closes every descriptor the walk holds. */
  async close(): Promise<void> {
    await Promise.all(this.folders.splice(0).map((folder) => folder.handle.close()));
  }
}

/**
 * Walks `requestedPath` in the workspace folder `workspaceRoot`, the way the kernel would inside the
 * sandbox but without letting it follow anything: symlinks are followed here with their targets
 * read in the sandbox's view (an absolute target must be under `/workspace`, a relative one
 * resolves from the link's folder), and `..` at the root is refused with
 * {@link PathOutsideWorkspaceError}. Components that do not exist (a file to write, folders to
 * create) end up in `missing`. `requestedPath` is relative to the workspace, or absolute as seen
 * inside the sandbox (`/workspace/...`).
 */
export async function walkWorkspace(workspaceRoot: string, requestedPath: string): Promise<WorkspaceWalk> {
  const denied = new PathOutsideWorkspaceError(requestedPath);
  const pending = requestedComponents(requestedPath);
  if (pending === undefined) throw denied;
  // The root is the server's own folder (its parent is root's), so opening it by name is safe.
  const walk = new WorkspaceWalk(requestedPath, [
    { handle: await open(workspaceRoot, constants.O_RDONLY | constants.O_DIRECTORY), name: '' },
  ]);
  try {
    let hops = 0;
    const hop = (): void => {
      hops += 1;
      if (hops > MAX_SYMLINK_HOPS)
        throw new SandboxError(`Too many levels of symbolic links: ${requestedPath}`);
    };
    for (let component = pending.shift(); component !== undefined; component = pending.shift()) {
      if (component === '' || component === '.') continue;
      if (component === '..') {
        if (walk.missing.length > 0) walk.missing.pop();
        else if (!(await walk.leave())) throw denied;
        continue;
      }
      if (walk.missing.length > 0) {
        walk.missing.push(component);
        continue;
      }
      const location = entryPath(walk.folder, component);
      const stats = await lstatIfPresent(location);
      if (stats === undefined) {
        walk.missing.push(component);
      } else if (stats.isSymbolicLink()) {
        hop();
        const target = await readlinkIfPresent(location);
        if (target === undefined) {
          // No longer a symlink: look at the component again.
          pending.unshift(component);
        } else if (path.posix.isAbsolute(target)) {
          const fromRoot = sandboxRelativeComponents(target);
          if (fromRoot === undefined) throw denied;
          await walk.backToRoot();
          pending.unshift(...fromRoot);
        } else {
          pending.unshift(...target.split('/'));
        }
      } else if (stats.isDirectory()) {
        const folder = await openFolderEntry(walk.folder, component);
        if (folder === undefined) {
          hop();
          pending.unshift(component);
        } else {
          walk.enter(folder, component);
        }
      } else if (pending.every((rest) => rest === '' || rest === '.')) {
        walk.entry = { name: component, stats };
        break;
      } else {
        // A file where a folder should be: nothing is below it.
        walk.missing.push(component);
      }
    }
    return walk;
  } catch (error) {
    await walk.close();
    throw error;
  }
}

/**
 * Opens an existing regular file of the workspace for reading (`O_NOFOLLOW`, and `O_NONBLOCK` so a
 * FIFO a command left behind cannot hang the server), with its stats from the open descriptor.
 * Throws {@link WorkspaceEntryMissingError}, {@link NotAFileError} or
 * {@link PathOutsideWorkspaceError}.
 */
export async function openWorkspaceFile(
  workspaceRoot: string,
  requestedPath: string,
): Promise<{ handle: FileHandle; stats: Stats; name: string }> {
  return retryWhileChanging(requestedPath, async () => {
    const walk = await walkWorkspace(workspaceRoot, requestedPath);
    try {
      if (walk.missing.length > 0) throw new WorkspaceEntryMissingError(requestedPath);
      if (walk.entry === undefined || !walk.entry.stats.isFile()) throw new NotAFileError(requestedPath);
      let handle: FileHandle;
      try {
        handle = await openEntry(
          walk.folder,
          walk.entry.name,
          constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
        );
      } catch (error) {
        // A socket put there since the walk looked.
        if (errorCode(error) === 'ENXIO') throw new NotAFileError(requestedPath);
        throw error;
      }
      return await checkedFile(handle, requestedPath, walk.entry.name);
    } finally {
      await walk.close();
    }
  });
}

/**
 * Opens a regular file of the workspace for writing, truncated, created 0644 with its missing
 * parent folders (0755) when absent. Every folder it creates is given to `owner` (the sandbox's
 * host user, see `handOverToSandbox`) with `fchown`, so commands can change or delete it; the
 * caller hands over the file once written. Throws {@link NotAFileError} or
 * {@link PathOutsideWorkspaceError}.
 */
export async function createWorkspaceFile(
  workspaceRoot: string,
  requestedPath: string,
  owner: HostIdentity | undefined,
): Promise<FileHandle> {
  return retryWhileChanging(requestedPath, async () => {
    const walk = await walkWorkspace(workspaceRoot, requestedPath);
    try {
      if (walk.namesFolder) throw new NotAFileError(requestedPath);
      const name = walk.entry?.name ?? walk.missing.pop()!;
      for (const folder of walk.missing)
        walk.enter(await makeFolder(walk.folder, folder, requestedPath, owner), folder);
      let handle: FileHandle;
      try {
        handle = await openEntry(
          walk.folder,
          name,
          constants.O_WRONLY |
            constants.O_CREAT |
            constants.O_TRUNC |
            constants.O_NOFOLLOW |
            constants.O_NONBLOCK,
          0o644,
        );
      } catch (error) {
        const code = errorCode(error);
        if (code === 'EISDIR' || code === 'ENXIO') throw new NotAFileError(requestedPath);
        throw error;
      }
      return (await checkedFile(handle, requestedPath, name)).handle;
    } finally {
      await walk.close();
    }
  });
}

/**
 * Walks to an existing folder of the workspace, held as the walk's last folder. Throws
 * {@link WorkspaceEntryMissingError}, {@link NotAFolderError} or {@link PathOutsideWorkspaceError}.
 */
export async function openWorkspaceFolder(
  workspaceRoot: string,
  requestedPath: string,
): Promise<WorkspaceWalk> {
  const walk = await walkWorkspace(workspaceRoot, requestedPath);
  if (walk.namesFolder) return walk;
  const missing = walk.missing.length > 0;
  await walk.close();
  throw missing ? new WorkspaceEntryMissingError(requestedPath) : new NotAFolderError(requestedPath);
}

/**
 * The host path `requestedPath` leads to in the workspace, resolved with {@link walkWorkspace}, or
 * {@link PathOutsideWorkspaceError}. For messages and checks only: opening the answer by its name
 * would bring back the race the walk avoids, so file work goes through {@link openWorkspaceFile},
 * {@link createWorkspaceFile} and {@link openWorkspaceFolder}.
 */
export async function resolveInWorkspace(workspaceRoot: string, requestedPath: string): Promise<string> {
  const walk = await walkWorkspace(workspaceRoot, requestedPath);
  try {
    const below = [walk.folderPath, ...(walk.entry === undefined ? [] : [walk.entry.name]), ...walk.missing];
    return path.join(await realpath(workspaceRoot), ...below);
  } finally {
    await walk.close();
  }
}

/**
 * Removes the entry `name` of `folder` and everything below it without following any symlink: each
 * folder is held as a descriptor while it is emptied, entries go with `unlink`/`rmdir` relative to
 * it, and a symlink is removed, never entered. So a sandbox that swaps folders and links while the
 * tree is removed cannot point the removal anywhere else. Folders deeper than
 * {@link MAX_REMOVAL_DEPTH} are first moved up into the entry itself, so a very deep tree costs no
 * more descriptors. `name` must be a plain name (no `/`, not `.` nor `..`).
 */
export async function removeEntryBeneath(folder: string, name: string): Promise<void> {
  if (!isPlainName(name)) throw new SandboxError(`Not a plain name: ${JSON.stringify(name)}`);
  const parent = await open(folder, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    const location = entryPath(parent, name);
    const stats = await lstatIfPresent(location);
    if (stats === undefined) return;
    const top = stats.isDirectory() ? await openFolderEntry(parent, name) : undefined;
    if (top === undefined) {
      await unlinkIfPresent(location);
      return;
    }
    try {
      await emptyFolder(top, top, 0);
    } finally {
      await top.close();
    }
    await rmdir(location);
  } finally {
    await parent.close();
  }
}

/** A name that stays one entry of its folder: not empty, not `.` nor `..`, no `/` and no NUL. */
function isPlainName(name: string): boolean {
  return name !== '' && name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0');
}

async function emptyFolder(top: FileHandle, folder: FileHandle, depth: number): Promise<void> {
  for (let pass = 0; pass < MAX_REMOVAL_PASSES; pass += 1) {
    const names = await readdir(heldFolderPath(folder));
    if (names.length === 0) return;
    for (const name of names) {
      const location = entryPath(folder, name);
      const stats = await lstatIfPresent(location);
      if (stats === undefined) continue;
      if (!stats.isDirectory()) {
        await unlinkIfPresent(location);
        continue;
      }
      if (depth >= MAX_REMOVAL_DEPTH) {
        // `top` is emptied pass after pass, so what lands in it is removed there.
        await rename(location, entryPath(top, `.removing-${randomUUID()}`));
        continue;
      }
      const child = await openFolderEntry(folder, name);
      if (child === undefined) {
        await unlinkIfPresent(location);
        continue;
      }
      try {
        await emptyFolder(top, child, depth + 1);
      } finally {
        await child.close();
      }
      try {
        await rmdir(location);
      } catch (error) {
        // Something new in it, or gone already: the next pass looks again.
        if (!['ENOENT', 'ENOTEMPTY', 'EEXIST', 'ENOTDIR'].includes(errorCode(error) ?? '')) throw error;
      }
    }
  }
  throw new SandboxError('Cannot remove the folder: entries keep appearing in it');
}

/**
 * Creates folder `name` in `parent` (or takes the one there) and opens it; a folder it created is
 * given to `owner`.
 */
async function makeFolder(
  parent: FileHandle,
  name: string,
  requestedPath: string,
  owner: HostIdentity | undefined,
): Promise<FileHandle> {
  let created = true;
  try {
    await mkdir(entryPath(parent, name), 0o755);
  } catch (error) {
    if (errorCode(error) !== 'EEXIST') throw error;
    created = false;
  }
  let folder: FileHandle;
  try {
    folder = await open(entryPath(parent, name), FOLDER_FLAGS);
  } catch (error) {
    if (errorCode(error) === 'ELOOP') throw new EntryChangedError();
    if (errorCode(error) === 'ENOTDIR') throw new NotAFolderError(requestedPath);
    throw error;
  }
  if (created && owner !== undefined) {
    try {
      await folder.chown(owner.uid, owner.gid);
    } catch (error) {
      await folder.close();
      throw error;
    }
  }
  return folder;
}

/** Opens the final entry; one that became a symlink (ELOOP) or vanished since the walk saw it calls for a new walk. */
async function openEntry(
  folder: FileHandle,
  name: string,
  flags: number,
  mode?: number,
): Promise<FileHandle> {
  try {
    return await open(entryPath(folder, name), flags, mode);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ELOOP' || (code === 'ENOENT' && (flags & constants.O_CREAT) === 0))
      throw new EntryChangedError();
    throw error;
  }
}

/** The opened handle when it is a regular file; closed and refused otherwise. */
async function checkedFile(
  handle: FileHandle,
  requestedPath: string,
  name: string,
): Promise<{ handle: FileHandle; stats: Stats; name: string }> {
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) throw new NotAFileError(requestedPath);
    return { handle, stats, name };
  } catch (error) {
    await handle.close();
    throw error;
  }
}

async function retryWhileChanging<T>(requestedPath: string, attempt: () => Promise<T>): Promise<T> {
  for (let attempts = 1; ; attempts += 1) {
    try {
      return await attempt();
    } catch (error) {
      if (!(error instanceof EntryChangedError)) throw error;
      if (attempts >= MAX_OPEN_ATTEMPTS) {
        throw new SandboxError(`Too many levels of symbolic links: ${requestedPath}`);
      }
    }
  }
}

/**
 * The components of a requested path relative to the workspace root, or undefined when an absolute
 * path points elsewhere in the sandbox. A path no file system takes is an {@link InvalidWorkspacePathError}.
 */
function requestedComponents(requestedPath: string): string[] | undefined {
  if (requestedPath.includes('\0'))
    throw new InvalidWorkspacePathError('Invalid path: it contains a NUL byte');
  if (Buffer.byteLength(requestedPath) > MAX_PATH_BYTES) {
    throw new InvalidWorkspacePathError(`Invalid path: over ${MAX_PATH_BYTES} bytes`);
  }
  if (requestedPath.split('/').some((component) => Buffer.byteLength(component) > MAX_NAME_BYTES)) {
    throw new InvalidWorkspacePathError(`Invalid path: a name over ${MAX_NAME_BYTES} bytes`);
  }
  return sandboxRelativeComponents(requestedPath);
}

/**
 * The components of a sandbox path relative to `/workspace`, or undefined when an absolute path
 * points elsewhere in the sandbox (`/etc/passwd`, `/tmp/x`).
 */
function sandboxRelativeComponents(sandboxPath: string): string[] | undefined {
  if (!path.posix.isAbsolute(sandboxPath)) return sandboxPath.split('/');
  const normalized = path.posix.normalize(sandboxPath);
  if (normalized === SANDBOX_WORKSPACE_PATH || normalized === `${SANDBOX_WORKSPACE_PATH}/`) return [];
  if (!normalized.startsWith(`${SANDBOX_WORKSPACE_PATH}/`)) return undefined;
  return normalized.slice(SANDBOX_WORKSPACE_PATH.length + 1).split('/');
}

/** The entry's own stats, or undefined when nothing is there (or a file stands where a folder should). */
async function lstatIfPresent(location: string): Promise<Stats | undefined> {
  try {
    return await lstat(location);
  } catch (error) {
    const code = errorCode(error);
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    if (code === 'ENAMETOOLONG')
      throw new InvalidWorkspacePathError(`Invalid path: a name over ${MAX_NAME_BYTES} bytes`);
    throw error;
  }
}

/** A symlink's target, or undefined when the entry is no longer a symlink. */
async function readlinkIfPresent(location: string): Promise<string | undefined> {
  try {
    return await readlink(location);
  } catch (error) {
    if (isChangedEntry(error) || errorCode(error) === 'EINVAL') return undefined;
    throw error;
  }
}

/** Unlinks a non-folder; one that is gone, or a folder again, is left for the next pass to look at. */
async function unlinkIfPresent(location: string): Promise<void> {
  try {
    await unlink(location);
  } catch (error) {
    const code = errorCode(error);
    if (code !== 'ENOENT' && code !== 'EISDIR') throw error;
  }
}

/** The error of an entry that is not what it was a moment ago: gone, a symlink now, a file now. */
function isChangedEntry(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR';
}

/** The system error code (`ENOENT`, `ELOOP`, …) of a failure, or undefined when it has none. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}
