import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { lstat, open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { SandboxError } from './tool-call';
import { resolveInWorkspace } from './workspace-paths';

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

function entryType(stats: Awaited<ReturnType<typeof lstat>>): ArtifactEntry['type'] {
  if (stats.isFile()) return 'file';
  if (stats.isDirectory()) return 'directory';
  if (stats.isSymbolicLink()) return 'symlink';
  return 'other';
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
  const start = await resolveInWorkspace(workspace, requestedPath);
  const root = await resolveInWorkspace(workspace, '.');
  const entries: ArtifactEntry[] = [];
  const folders = [start];
  while (folders.length > 0) {
    const folder = folders.shift()!;
    for (const name of (await readdir(folder)).sort()) {
      const full = path.join(folder, name);
      const stats = await lstat(full);
      if (entries.length >= MAX_ARTIFACT_ENTRIES) return { entries, truncated: true };
      entries.push({ path: path.relative(root, full), type: entryType(stats), size: stats.size });
      if (recursive && stats.isDirectory()) folders.push(full);
    }
  }
  return { entries, truncated: false };
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
  const file = await resolveInWorkspace(workspace, requestedPath);
  const stats = await lstat(file);
  if (!stats.isFile()) throw new SandboxError(`Not a file: ${requestedPath}`);
  const handle = await open(file, 'r');
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
      mime: mimeType(file),
      ...(sha256 === undefined ? {} : { sha256 }),
    };
  } finally {
    await handle.close();
  }
}

/**
 * A tar.gz of the regular files under a folder of the workspace (symlinks and special files left
 * out, so an archive never reaches outside), refused with {@link ArtifactTooLargeError} when their
 * total size is over {@link MAX_ARTIFACT_BYTES}.
 */
export async function archiveArtifacts(workspace: string, requestedPath: string): Promise<Buffer> {
  const root = await resolveInWorkspace(workspace, '.');
  const { entries, truncated } = await listArtifacts(workspace, requestedPath, true);
  const files = entries.filter((entry) => entry.type === 'file');
  const total = files.reduce((sum, entry) => sum + entry.size, 0);
  if (truncated || total > MAX_ARTIFACT_BYTES) {
    throw new ArtifactTooLargeError(
      `Archive over ${MAX_ARTIFACT_BYTES} bytes: ${total} bytes in ${files.length} files`,
    );
  }
  const tar = spawn('tar', ['--create', '--gzip', '--file=-', '--no-recursion', '--null', '--files-from=-'], {
    cwd: root,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const chunks: Buffer[] = [];
  let stderr = '';
  tar.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
  tar.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  tar.stdin.end(files.map((entry) => `${entry.path}\0`).join(''));
  const code = await new Promise<number | null>((resolve) => tar.on('close', resolve));
  if (code !== 0)
    throw new SandboxError(`Archive failed: ${stderr.trim().split('\n')[0] ?? `tar exited ${code}`}`);
  return Buffer.concat(chunks);
}
