import { createHash, randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, chown, mkdir, open, readdir, readFile, readlink, rename } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { unpackArchive, type UnpackLimits } from './archive-unpack';
import { openRegularFile, visitFolder } from './artifacts';
import type { HostIdentity } from './bubblewrap';
import { writePrivateFile } from './private-files';
import { readTarEntries } from './tar-archive';
import { SandboxError } from './tool-call';
import { UploadMissingError, uploadDigestSchema, type UploadStore } from './upload-store';
import { entryPath, errorCode, removeEntryBeneath } from './workspace-paths';

/**
 * Where a workspace came from: `POST /workspaces/prepare` unpacks an upload into a trajectory's
 * empty workspace exactly once (into a staging folder beside it, then renamed onto it, so a crash
 * never leaves half a workspace), and records the origin in `origin.json` in the trajectory's own
 * folder, private to the server and out of the sandbox's reach: the upload's digest, the commit it
 * was taken at, its size, and a manifest (path → type, size, sha256) that file-level diffs compare
 * the workspace against.
 */

/** Most entries walked when measuring or listing a workspace. */
export const MAX_WORKSPACE_ENTRIES = 100_000;

/** The origin record's name in the trajectory folder. */
const ORIGIN_FILE = 'origin.json';
/** Written before the staging folder is renamed onto the workspace, renamed to {@link ORIGIN_FILE} after. */
const PENDING_ORIGIN_FILE = 'origin.pending.json';
/** Prefix of staging folders in the trajectory folder. */
const STAGING_PREFIX = '.staging-';

/** A commit as `prepare` takes it: SHA-1 or SHA-256, hex. */
export const commitSchema = z
  .string()
  .regex(/^([0-9a-f]{40}|[0-9a-f]{64})$/, 'must be a commit: 40 or 64 lower-case hex digits');

/** One entry of a manifest: the digest of a file's bytes, or of a symlink's target text. */
const manifestEntrySchema = z.object({
  type: z.enum(['file', 'directory', 'symlink']),
  size: z.number().int().nonnegative(),
  sha256: z.string().optional(),
});
export type ManifestEntry = z.infer<typeof manifestEntrySchema>;

/** Path (relative, `/`-separated) → entry. */
export type Manifest = Record<string, ManifestEntry>;

const originSchema = z.object({
  digest: uploadDigestSchema,
  commit: commitSchema.optional(),
  files: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  preparedAt: z.string(),
  manifest: z.record(z.string(), manifestEntrySchema),
});

/** What `origin.json` holds. */
export type WorkspaceOrigin = z.infer<typeof originSchema>;

/** The workspace holds files that did not come from the upload asked for: 409. */
export class WorkspaceConflictError extends SandboxError {
  override readonly name = 'WorkspaceConflictError';
}

/**
 * What `POST /workspaces/prepare` answers, as a schema because the worker checks the answer with
 * it: `prepared` is `now` when this call unpacked the upload, `before` when an earlier one had.
 */
export const prepareResultSchema = z.object({
  trajectoryId: z.string(),
  digest: z.string(),
  commit: z.string().optional(),
  files: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  prepared: z.enum(['now', 'before']),
});
export type PrepareResult = z.infer<typeof prepareResultSchema>;

/** Where a trajectory keeps its workspace and its origin. */
export interface TrajectoryLocation {
  trajectoryId: string;
  /** The trajectory's own folder (the server's, 0711 or 0700). */
  folder: string;
  /** Its workspace below it. */
  workspace: string;
}

/** The origin of a trajectory's workspace, or undefined when it was not prepared from an upload. */
export async function readOrigin(trajectoryFolder: string): Promise<WorkspaceOrigin | undefined> {
  let text: string;
  try {
    text = await readFile(path.join(trajectoryFolder, ORIGIN_FILE), 'utf8');
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined;
    throw error;
  }
  const parsed = originSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new SandboxError(`The origin record of ${trajectoryFolder} is damaged`);
  return parsed.data;
}

/**
 * Unpacks upload `digest` into the trajectory's workspace, once. A repeated prepare of the same
 * digest answers from the origin record; one of another digest, or into a workspace holding
 * files, is a {@link WorkspaceConflictError}; an unknown digest an {@link UploadMissingError}.
 * Files belong to `owner` (the sandbox's host user when the server is root).
 */
export async function prepareWorkspace(
  location: TrajectoryLocation,
  request: { digest: string; commit?: string },
  uploads: UploadStore,
  limits: UnpackLimits,
  owner: HostIdentity | undefined,
): Promise<PrepareResult> {
  const { trajectoryId, folder, workspace } = location;
  const answer = (origin: WorkspaceOrigin, prepared: PrepareResult['prepared']): PrepareResult => ({
    trajectoryId,
    digest: origin.digest,
    ...(origin.commit === undefined ? {} : { commit: origin.commit }),
    files: origin.files,
    bytes: origin.bytes,
    prepared,
  });
  const conflict = (): WorkspaceConflictError =>
    new WorkspaceConflictError(
      `The workspace of ${trajectoryId} already holds files not from upload ${request.digest}`,
    );
  const existing = await readOrigin(folder);
  if (existing !== undefined) {
    if (existing.digest !== request.digest) throw conflict();
    return answer(existing, 'before');
  }
  const pendingFile = path.join(folder, PENDING_ORIGIN_FILE);
  const pending = await readPending(pendingFile);
  const workspaceEmpty = await isEmptyFolder(workspace);
  if (!workspaceEmpty) {
    // A crash between the rename onto the workspace and the origin's own rename: finish it.
    if (pending?.digest === request.digest) {
      await rename(pendingFile, path.join(folder, ORIGIN_FILE));
      return answer(pending, 'now');
    }
    throw conflict();
  }
  if (!(await uploads.has(request.digest))) throw new UploadMissingError(request.digest);
  for (const name of await readdir(folder)) {
    if (name.startsWith(STAGING_PREFIX)) await removeEntryBeneath(folder, name);
  }
  const stagingName = `${STAGING_PREFIX}${randomUUID()}`;
  const staging = path.join(folder, stagingName);
  await mkdir(staging, 0o700);
  try {
    const summary = await unpackArchive(await uploads.open(request.digest), staging, limits, {
      ...(owner === undefined ? {} : { owner }),
    });
    const origin: WorkspaceOrigin = {
      digest: request.digest,
      ...(request.commit === undefined ? {} : { commit: request.commit }),
      files: summary.files,
      bytes: summary.unpackedBytes,
      preparedAt: new Date().toISOString(),
      manifest: await manifestOfArchive(await uploads.open(request.digest)),
    };
    if (owner !== undefined) await chown(staging, owner.uid, owner.gid);
    await chmod(staging, 0o700);
    await writePrivateFile(pendingFile, JSON.stringify(origin));
    try {
      // Onto the empty workspace: a workspace that got an entry meanwhile is not replaced.
      await rename(staging, workspace);
    } catch (error) {
      const code = errorCode(error);
      if (code === 'ENOTEMPTY' || code === 'EEXIST') throw conflict();
      throw error;
    }
    await rename(pendingFile, path.join(folder, ORIGIN_FILE));
    return answer(origin, 'now');
  } finally {
    await removeEntryBeneath(folder, stagingName).catch(() => undefined);
  }
}

async function readPending(file: string): Promise<WorkspaceOrigin | undefined> {
  try {
    const parsed = originSchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** What `GET /workspaces/info` answers. */
export interface WorkspaceInfo {
  trajectoryId: string;
  bytes: number;
  files: number;
  origin: Omit<WorkspaceOrigin, 'manifest'> | null;
}

/** The workspace's file count and bytes now, walked by descriptor, and where it came from. */
export async function workspaceInfo(location: TrajectoryLocation): Promise<WorkspaceInfo> {
  let files = 0;
  let bytes = 0;
  await visitFolder(
    location.workspace,
    '.',
    true,
    (entry) => {
      if (entry.stats.isFile()) {
        files += 1;
        bytes += entry.stats.size;
      }
      return Promise.resolve();
    },
    MAX_WORKSPACE_ENTRIES,
  );
  const origin = await readOrigin(location.folder);
  const described: WorkspaceInfo['origin'] =
    origin === undefined
      ? null
      : {
          digest: origin.digest,
          ...(origin.commit === undefined ? {} : { commit: origin.commit }),
          files: origin.files,
          bytes: origin.bytes,
          preparedAt: origin.preparedAt,
        };
  return { trajectoryId: location.trajectoryId, bytes, files, origin: described };
}

/** The normalized path of an archive entry ('' for the archive's root). */
export function archiveEntryPath(name: string): string {
  return name
    .split('/')
    .filter((component) => component !== '' && component !== '.')
    .join('/');
}

/** The manifest of an archive already checked (an upload): every file hashed as it is read. */
export async function manifestOfArchive(archive: AsyncIterable<Buffer>): Promise<Manifest> {
  const manifest: Manifest = {};
  for await (const entry of readTarEntries(archive)) {
    const name = archiveEntryPath(entry.path);
    if (name === '') continue;
    if (entry.type === 'file') {
      const hash = createHash('sha256');
      let size = 0;
      for await (const chunk of entry.data()) {
        hash.update(chunk);
        size += chunk.length;
      }
      manifest[name] = { type: 'file', size, sha256: hash.digest('hex') };
    } else if (entry.type === 'directory') {
      manifest[name] = { type: 'directory', size: 0 };
    } else if (entry.type === 'symlink') {
      manifest[name] = {
        type: 'symlink',
        size: Buffer.byteLength(entry.linkTarget),
        sha256: sha256Text(entry.linkTarget),
      };
    }
  }
  // Folders the archive only implied.
  for (const name of Object.keys(manifest)) {
    const components = name.split('/');
    for (let depth = 1; depth < components.length; depth += 1) {
      const above = components.slice(0, depth).join('/');
      manifest[above] ??= { type: 'directory', size: 0 };
    }
  }
  return manifest;
}

/**
 * The manifest of the workspace now, walked and read by descriptor (a file swapped for a symlink
 * mid-walk is seen as what it is, never followed). Special files (FIFOs, sockets) are left out.
 */
export async function manifestOfWorkspace(
  workspace: string,
): Promise<{ manifest: Manifest; truncated: boolean }> {
  const manifest: Manifest = {};
  const truncated = await visitFolder(
    workspace,
    '.',
    true,
    async (entry) => {
      if (entry.stats.isDirectory()) {
        manifest[entry.path] = { type: 'directory', size: 0 };
      } else if (entry.stats.isSymbolicLink()) {
        const target = await readlink(entryPath(entry.folder, entry.name)).catch(() => undefined);
        if (target !== undefined)
          manifest[entry.path] = {
            type: 'symlink',
            size: Buffer.byteLength(target),
            sha256: sha256Text(target),
          };
      } else if (entry.stats.isFile()) {
        const file = await openRegularFile(entry.folder, entry.name);
        if (file === undefined) return;
        try {
          const stats = await file.stat();
          if (!stats.isFile()) return;
          const hash = createHash('sha256');
          let size = 0;
          for await (const chunk of file.createReadStream({ start: 0, autoClose: false })) {
            hash.update(chunk as Buffer);
            size += (chunk as Buffer).length;
          }
          manifest[entry.path] = { type: 'file', size, sha256: hash.digest('hex') };
        } finally {
          await file.close();
        }
      }
    },
    MAX_WORKSPACE_ENTRIES,
  );
  return { manifest, truncated };
}

function sha256Text(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Whether a folder is empty, read through a descriptor opened without following a link. */
export async function isEmptyFolder(folder: string): Promise<boolean> {
  const handle = await open(folder, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  try {
    return (await readdir(`/proc/self/fd/${handle.fd}`)).length === 0;
  } finally {
    await handle.close();
  }
}
