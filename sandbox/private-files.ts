import { chmod, lstat, mkdir, open, type FileHandle } from 'node:fs/promises';
import { readPosixAcl } from './posix-acl';

/**
 * Files and folders only their owner can use: everything under `$AGENTS_HOME` (the dev server's
 * database, tokens, transcripts, logs, caches, models) and a sandbox server's results. Run as root,
 * the sandbox's user (uid 65534) may traverse `$AGENTS_HOME` to reach the workspaces below it
 * (see `sandbox-root.ts`), so a file there is safe from it only by its own mode.
 */

/** Mode of a private file: read and write for its owner. */
export const PRIVATE_FILE_MODE = 0o600;

/** Mode of a private folder: everything for its owner. */
export const PRIVATE_FOLDER_MODE = 0o700;

/**
 * Group bits a private folder may keep: execute alone, which on a folder with an ACL is its mask
 * letting the sandbox's user traverse (`sandbox-root.ts`), never listing.
 */
const TRAVERSAL_MASK_BITS = 0o010;

/** Creates `folder` and any missing parent as private folders, and tightens `folder` if wider. */
export async function ensurePrivateFolder(folder: string): Promise<void> {
  await mkdir(folder, { recursive: true, mode: PRIVATE_FOLDER_MODE });
  await tightenPrivateFolder(folder);
}

/**
 * Takes group and other permissions off `folder` when it is ours and grants them (a home made by
 * an earlier version, 0755). A folder that does not exist or belongs to someone else is left
 * alone. An execute-only group bit stays when it is the mask of a traversal ACL.
 */
export async function tightenPrivateFolder(folder: string): Promise<void> {
  let mode: number;
  try {
    const status = await lstat(folder);
    if (!status.isDirectory() || status.uid !== process.getuid?.()) return;
    mode = status.mode & 0o777;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if ((mode & 0o077) === 0) return;
  if ((mode & 0o077) === TRAVERSAL_MASK_BITS && (await hasAccessAcl(folder))) return;
  // On a folder with an ACL this also empties its mask; the sandbox server restores the traversal
  // entry when it starts.
  await chmod(folder, mode & 0o700);
}

/** Whether `folder` has an access ACL; one that cannot be read counts as none, so the folder is closed. */
async function hasAccessAcl(folder: string): Promise<boolean> {
  try {
    return (await readPosixAcl(folder)) !== undefined;
  } catch {
    return false;
  }
}

/** Takes group and other permissions off an existing file of ours; a missing file is fine. */
export async function tightenPrivateFile(file: string): Promise<void> {
  try {
    const status = await lstat(file);
    if (!status.isFile() || status.uid !== process.getuid?.() || (status.mode & 0o077) === 0) return;
    await chmod(file, status.mode & 0o700);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
}

/**
 * Writes `data` to `file` readable by its owner only, whether the file is new (created 0600) or
 * was left wider by an earlier version (tightened before the data goes in).
 */
export async function writePrivateFile(file: string, data: string | Uint8Array): Promise<void> {
  const handle = await open(file, 'w', PRIVATE_FILE_MODE);
  try {
    await tightenOpenFile(handle);
    await handle.writeFile(data);
  } finally {
    await handle.close();
  }
}

/** Takes group and other permissions off an open file of ours. */
export async function tightenOpenFile(handle: FileHandle): Promise<void> {
  const status = await handle.stat();
  if ((status.mode & 0o077) !== 0 && status.uid === process.getuid?.())
    await handle.chmod(status.mode & 0o700);
}
