import { readlink, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { createGzip } from 'node:zlib';
import { symlinkTargetProblem } from './archive-unpack';
import { openRegularFile, reopenFolder, visitFolder } from './artifacts';
import { tarEndBlocks, tarEntryHeader, tarPadding, type TarEntry } from './tar-archive';
import { SandboxError } from './tool-call';
import { entryPath, openWorkspaceFolder } from './workspace-paths';
import { MAX_WORKSPACE_ENTRIES } from './workspace-origin';

/**
 * A whole folder of a workspace as a streamed tar.gz (`GET /workspaces/archive`, what `agents pull`
 * unpacks): files, folders and symlinks, the links stored as links and never followed, those that
 * would lead out of the folder left out. A walk first lists the entries and totals their sizes,
 * so an archive over the limit is refused before a byte is sent; then each file is reopened by
 * descriptor walk with `O_NOFOLLOW` and streamed in the size the walk saw (cut if it grew since,
 * padded with zeros if it shrank), so the archive always matches its headers.
 */

/** The archive's files are over the limit, or it has too many entries: 413. */
export class WorkspaceArchiveTooLargeError extends SandboxError {
  override readonly name = 'WorkspaceArchiveTooLargeError';
}

/** Bytes read from a file at a time while streaming it. */
const READ_CHUNK_BYTES = 256 * 1024;

interface ListedEntry {
  /** Path relative to the archived folder. */
  relativePath: string;
  entry: TarEntry;
  size: number;
}

/**
 * A tar.gz stream of `requestedPath` of the workspace with names relative to that folder, at most
 * `limitBytes` of file data; throws {@link WorkspaceArchiveTooLargeError} before streaming when over.
 */
export async function archiveWorkspace(
  workspace: string,
  requestedPath: string,
  limitBytes: number,
): Promise<Readable> {
  const listed: ListedEntry[] = [];
  let total = 0;
  let files = 0;
  const truncated = await visitFolder(
    workspace,
    requestedPath,
    true,
    async (visited) => {
      const { stats } = visited;
      const base = { name: visited.relativePath, uid: stats.uid, gid: stats.gid, mtimeMs: stats.mtimeMs };
      if (stats.isDirectory()) {
        listed.push({
          relativePath: visited.relativePath,
          entry: { type: 'directory', ...base, mode: stats.mode & 0o777 },
          size: 0,
        });
      } else if (stats.isSymbolicLink()) {
        const target = await readlink(entryPath(visited.folder, visited.name)).catch(() => undefined);
        if (target === undefined) return;
        if (symlinkTargetProblem(visited.relativePath.split('/'), target) !== undefined) return;
        listed.push({
          relativePath: visited.relativePath,
          entry: { type: 'symlink', ...base, linkTarget: target },
          size: 0,
        });
      } else if (stats.isFile()) {
        total += stats.size;
        files += 1;
        listed.push({
          relativePath: visited.relativePath,
          entry: { ...base, data: Buffer.alloc(0), mode: stats.mode & 0o777 },
          size: stats.size,
        });
      }
    },
    MAX_WORKSPACE_ENTRIES,
  );
  if (total > limitBytes)
    throw new WorkspaceArchiveTooLargeError(
      `Archive over ${limitBytes} bytes: ${total} bytes in ${files} files`,
    );
  if (truncated) throw new WorkspaceArchiveTooLargeError(`Archive over ${MAX_WORKSPACE_ENTRIES} entries`);
  return Readable.from(tarBlocks(workspace, requestedPath, listed)).pipe(createGzip());
}

/** The tar stream of the listed entries, each file read through a descriptor opened now. */
async function* tarBlocks(
  workspace: string,
  requestedPath: string,
  listed: readonly ListedEntry[],
): AsyncGenerator<Buffer> {
  const walk = await openWorkspaceFolder(workspace, requestedPath);
  let cached: { key: string; folder: FileHandle | undefined } | undefined;
  try {
    for (const item of listed) {
      if (item.entry.type !== 'directory' && item.entry.type !== 'symlink') {
        const components = item.relativePath.split('/');
        const name = components.pop()!;
        const key = components.join('/');
        if (cached?.key !== key) {
          if (cached?.folder !== undefined && cached.folder !== walk.folder) await cached.folder.close();
          cached = { key, folder: await reopenFolder(walk.folder, components) };
        }
        const file = cached.folder === undefined ? undefined : await openRegularFile(cached.folder, name);
        yield tarEntryHeader(item.entry, item.size);
        yield* fileData(file, item.size);
        yield tarPadding(item.size);
      } else {
        yield tarEntryHeader(item.entry, 0);
      }
    }
    yield tarEndBlocks();
  } finally {
    if (cached?.folder !== undefined && cached.folder !== walk.folder) await cached.folder.close();
    await walk.close();
  }
}

/**
 * Exactly `size` bytes of an open file (zeros for what it no longer has, or for a file gone or
 * replaced since the walk), then closes it.
 */
async function* fileData(file: FileHandle | undefined, size: number): AsyncGenerator<Buffer> {
  let sent = 0;
  try {
    if (file !== undefined && (await file.stat()).isFile()) {
      while (sent < size) {
        const buffer = Buffer.alloc(Math.min(READ_CHUNK_BYTES, size - sent));
        const { bytesRead } = await file.read(buffer, 0, buffer.length, sent);
        if (bytesRead === 0) break;
        sent += bytesRead;
        yield buffer.subarray(0, bytesRead);
      }
    }
  } finally {
    await file?.close();
  }
  for (; sent < size; sent += READ_CHUNK_BYTES) yield Buffer.alloc(Math.min(READ_CHUNK_BYTES, size - sent));
}
