import { createHash } from 'node:crypto';
import { constants, type Stats } from 'node:fs';
import { lstat, open, readdir, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { createTarGzip, type TarFile } from './tar-archive';
import { SandboxError } from './tool-call';
import {
  entryPath,
  errorCode,
  heldFolderPath,
  openFolderEntry,
  openWorkspaceFile,
  openWorkspaceFolder,
} from './workspace-paths';

/**
 * The artifact API's file work: listings, reads and archives of a workspace, all through the
 * descriptor walk of `workspace-paths.ts`, so the sandbox cannot redirect them with a symlink it
 * swaps in while they run.
 */

/** Largest file read, and largest archive built, for an artifact request (SEED-BEHAVIOURS 36). */
export const MAX_ARTIFACT_BYTES = 5 * 1024 * 1024;

/** Most entries one listing returns. */
export const MAX_ARTIFACT_ENTRIES = 5000;

/** An archive would be over {@link MAX_ARTIFACT_BYTES}: the server answers 413. */
export class ArtifactTooLargeError extends SandboxError {
  override readonly name = 'ArtifactTooLargeError';
}

/** One entry of a listing, its path relative to the workspace. */
export interface ArtifactEntry {
  path: string;
  type: 'file' | 'directory' | 'symlink' | 'other';
  size: number;
}

const MIME_TYPES: Record<string, string> = {
  '.txt': 'text/plain',
  '.md': 'text/markdown',
  '.json': 'application/json',
  '.jsonl': 'application/x-ndjson',
  '.csv': 'text/csv',
  '.html': 'text/html',
  '.css': 'text/css',
  '.js': 'text/javascript',
  '.ts': 'text/x-typescript',
  '.py': 'text/x-python',
  '.sh': 'text/x-shellscript',
  '.yml': 'application/yaml',
  '.yaml': 'application/yaml',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.pdf': 'application/pdf',
  '.gz': 'application/gzip',
  '.tar': 'application/x-tar',
  '.zip': 'application/zip',
};

function mimeType(file: string): string {
  return MIME_TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream';
}

function entryType(stats: Stats): ArtifactEntry['type'] {
  if (stats.isFile()) return 'file';
  if (stats.isDirectory()) return 'directory';
  if (stats.isSymbolicLink()) return 'symlink';
  return 'other';
}

/** One entry met by {@link visitFolder}: its folder held, its own stats, its path from the workspace root. */
export interface VisitedEntry {
  folder: FileHandle;
  name: string;
  stats: Stats;
  path: string;
  /** Its path from the folder the visit started at. */
  relativePath: string;
}

/**
 * Visits the entries of a folder of the workspace in sorted order, then (when `recursive`) those of
 * its folders, breadth first, at most `maxEntries` ({@link MAX_ARTIFACT_ENTRIES} unless given);
 * true when it stopped there.
 * Symlinks are visited, never entered. A queued folder is reopened from the start folder one
 * component at a time with `O_NOFOLLOW`, so only a few descriptors are open at once however wide
 * the tree, and one swapped for a symlink since it was listed is skipped.
 */
export async function visitFolder(
  workspace: string,
  requestedPath: string,
  recursive: boolean,
  visit: (entry: VisitedEntry) => Promise<void>,
  maxEntries = MAX_ARTIFACT_ENTRIES,
): Promise<boolean> {
  const walk = await openWorkspaceFolder(workspace, requestedPath);
  try {
    const start = walk.folder;
    const startPath = walk.folderPath;
    const queue: string[][] = [[]];
    let visited = 0;
    for (let components = queue.shift(); components !== undefined; components = queue.shift()) {
      const folder = await reopenFolder(start, components);
      if (folder === undefined) continue;
      try {
        const folderPath = [startPath, ...components].filter((part) => part !== '').join('/');
        for (const name of (await readdir(heldFolderPath(folder))).sort()) {
          let stats: Stats;
          try {
            stats = await lstat(entryPath(folder, name));
          } catch (error) {
            if (errorCode(error) === 'ENOENT') continue;
            throw error;
          }
          if (visited >= maxEntries) return true;
          visited += 1;
          await visit({
            folder,
            name,
            stats,
            path: folderPath === '' ? name : `${folderPath}/${name}`,
            relativePath: [...components, name].join('/'),
          });
          if (recursive && stats.isDirectory()) queue.push([...components, name]);
        }
      } finally {
        if (folder !== start) await folder.close();
      }
    }
    return false;
  } finally {
    await walk.close();
  }
}

/** Opens the folder `components` below `start`, each a real folder (never a symlink), or undefined when one is not. */
export async function reopenFolder(
  start: FileHandle,
  components: readonly string[],
): Promise<FileHandle | undefined> {
  let current = start;
  for (const component of components) {
    const next = await openFolderEntry(current, component);
    if (current !== start) await current.close();
    if (next === undefined) return undefined;
    current = next;
  }
  return current;
}

/**
 * Lists a folder of the workspace (recursively when asked), symlinks reported but never followed,
 * at most {@link MAX_ARTIFACT_ENTRIES} entries.
 */
export async function listArtifacts(
  workspace: string,
  requestedPath: string,
  recursive: boolean,
): Promise<{ entries: ArtifactEntry[]; truncated: boolean }> {
  const entries: ArtifactEntry[] = [];
  const truncated = await visitFolder(workspace, requestedPath, recursive, (entry) => {
    entries.push({ path: entry.path, type: entryType(entry.stats), size: entry.stats.size });
    return Promise.resolve();
  });
  return { entries, truncated };
}

/** A file of the workspace as the artifact API returns it. */
export interface ArtifactContent {
  path: string;
  encoding: 'text' | 'base64';
  content: string;
  truncated: boolean;
  /** Bytes returned. */
  bytes: number;
  fileSize: number;
  mime: string;
  sha256?: string;
}

/**
 * Reads a file of the workspace, at most {@link MAX_ARTIFACT_BYTES}: as text when it is valid UTF-8
 * without NUL bytes, as base64 otherwise (or as asked). The hash, when asked, covers the whole file.
 */
export async function readArtifact(
  workspace: string,
  requestedPath: string,
  options: { encoding?: 'text' | 'base64'; sha256?: boolean } = {},
): Promise<ArtifactContent> {
  const { handle, stats, name } = await openWorkspaceFile(workspace, requestedPath);
  try {
    const buffer = Buffer.alloc(Math.min(stats.size, MAX_ARTIFACT_BYTES));
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    const data = buffer.subarray(0, bytesRead);
    let sha256: string | undefined;
    if (options.sha256 === true) {
      const hash = createHash('sha256');
      for await (const chunk of handle.createReadStream({ start: 0, autoClose: false }))
        hash.update(chunk as Buffer);
      sha256 = hash.digest('hex');
    }
    const looksLikeText = !data.includes(0) && Buffer.from(data.toString('utf8'), 'utf8').equals(data);
    const encoding = options.encoding ?? (looksLikeText ? 'text' : 'base64');
    return {
      path: requestedPath,
      encoding,
      content: data.toString(encoding === 'text' ? 'utf8' : 'base64'),
      truncated: stats.size > bytesRead,
      bytes: bytesRead,
      fileSize: stats.size,
      mime: mimeType(name),
      ...(sha256 === undefined ? {} : { sha256 }),
    };
  } finally {
    await handle.close();
  }
}

/**
 * A tar.gz of the regular files under a folder of the workspace (symlinks and special files left
 * out, so an archive never reaches outside), refused with {@link ArtifactTooLargeError} when their
 * total size is over {@link MAX_ARTIFACT_BYTES}. Each file is opened relative to its held folder
 * with `O_NOFOLLOW` and read through that descriptor, its size taken from it, so what is archived
 * is what was opened: a file swapped for a symlink meanwhile is left out.
 */
export async function archiveArtifacts(workspace: string, requestedPath: string): Promise<Buffer> {
  const files: TarFile[] = [];
  let total = 0;
  const tooLarge = (): ArtifactTooLargeError =>
    new ArtifactTooLargeError(
      `Archive over ${MAX_ARTIFACT_BYTES} bytes: ${total} bytes in ${files.length} files`,
    );
  const truncated = await visitFolder(workspace, requestedPath, true, async (entry) => {
    if (!entry.stats.isFile()) return;
    const file = await openRegularFile(entry.folder, entry.name);
    if (file === undefined) return;
    try {
      const stats = await file.stat();
      if (!stats.isFile()) return;
      total += stats.size;
      if (total > MAX_ARTIFACT_BYTES) throw tooLarge();
      const data = Buffer.alloc(stats.size);
      const { bytesRead } = await file.read(data, 0, data.length, 0);
      files.push({
        name: entry.path,
        // A file that shrank since its size was taken is archived as it was read, padded with zeros.
        data:
          bytesRead === data.length
            ? data
            : Buffer.concat([data.subarray(0, bytesRead), Buffer.alloc(data.length - bytesRead)]),
        mode: stats.mode,
        uid: stats.uid,
        gid: stats.gid,
        mtimeMs: stats.mtimeMs,
      });
    } finally {
      await file.close();
    }
  });
  if (truncated) throw tooLarge();
  return createTarGzip(files);
}

/** Opens a file of a held folder for reading, never through a symlink, or undefined when it is gone or a symlink now. */
export async function openRegularFile(folder: FileHandle, name: string): Promise<FileHandle | undefined> {
  try {
    return await open(
      entryPath(folder, name),
      constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
    );
  } catch (error) {
    const code = errorCode(error);
    // Gone, a symlink now, or a socket now.
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENXIO') return undefined;
    throw error;
  }
}
