import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, type ReadStream } from 'node:fs';
import { open, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { inspectArchive, type UnpackLimits } from './archive-unpack';
import { ensurePrivateFolder, writePrivateFile } from './private-files';
import { DEFAULT_DISK_QUOTA_BYTES } from './sandbox-watchdog';
import { SandboxError } from './tool-call';

/**
 * The uploads of a sandbox server: tar.gz archives of the folders runs start from, kept under
 * `<root>/uploads/<sha256>.tar.gz` by the digest of their bytes, so the same folder is sent once
 * and any number of runs prepare their workspaces from it. An upload is checked whole before it
 * is kept (digest, then every entry through the unpacking rules and the workspace limit), so a
 * kept upload is one that unpacks.
 */

/** Largest compressed upload a server takes unless configured otherwise: 1 GiB. */
export const DEFAULT_UPLOAD_LIMIT_BYTES = 1024 ** 3;

/** Largest file data a workspace archive (`GET /workspaces/archive`) holds unless configured otherwise: 1 GiB. */
export const DEFAULT_PULL_LIMIT_BYTES = 1024 ** 3;

/** Unpacked bytes a workspace may start with unless configured otherwise: its disk quota. */
export const DEFAULT_UNPACKED_LIMIT_BYTES = DEFAULT_DISK_QUOTA_BYTES;

/** A SHA-256 digest as uploads are named: 64 lower-case hex digits. */
export const uploadDigestSchema = z
  .string()
  .regex(/^[0-9a-f]{64}$/, 'must be a SHA-256 digest: 64 lower-case hex digits');

/** What the server answers for a kept upload. */
export interface UploadSummary {
  digest: string;
  archiveBytes: number;
  files: number;
  folders: number;
  symlinks: number;
  unpackedBytes: number;
}

const uploadSummarySchema = z.object({
  digest: uploadDigestSchema,
  archiveBytes: z.number().int().nonnegative(),
  files: z.number().int().nonnegative(),
  folders: z.number().int().nonnegative(),
  symlinks: z.number().int().nonnegative(),
  unpackedBytes: z.number().int().nonnegative(),
});

/** The body of an upload is over the upload limit: 413. */
export class UploadTooLargeError extends SandboxError {
  override readonly name = 'UploadTooLargeError';
}

/** The body does not hash to the digest it was sent under: 400. */
export class UploadDigestMismatchError extends SandboxError {
  override readonly name = 'UploadDigestMismatchError';
}

/** No upload of that digest on this server: 404. */
export class UploadMissingError extends SandboxError {
  override readonly name = 'UploadMissingError';

  constructor(readonly digest: string) {
    super(`No upload ${digest} on this server`);
  }
}

/** The content-addressed uploads of one sandbox server, in a folder private to the server. */
export class UploadStore {
  constructor(
    readonly folder: string,
    private readonly limits: { uploadLimitBytes: number; unpack: UnpackLimits },
  ) {}

  /** Creates the private uploads folder. */
  async prepare(): Promise<void> {
    await ensurePrivateFolder(this.folder);
  }

  /** Where the upload of `digest` is kept. */
  archivePath(digest: string): string {
    return path.join(this.folder, `${uploadDigestSchema.parse(digest)}.tar.gz`);
  }

  private summaryPath(digest: string): string {
    return path.join(this.folder, `${uploadDigestSchema.parse(digest)}.json`);
  }

  /** Whether the upload of `digest` is kept here. */
  async has(digest: string): Promise<boolean> {
    try {
      return (await stat(this.archivePath(digest))).isFile();
    } catch {
      return false;
    }
  }

  /** The kept upload's bytes, streamed; {@link UploadMissingError} when it is not here. */
  async open(digest: string): Promise<ReadStream> {
    const file = this.archivePath(digest);
    const handle = await open(file, 'r').catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new UploadMissingError(digest);
      throw error;
    });
    return handle.createReadStream();
  }

  /**
   * Keeps `body` as the upload of `digest`: streamed to a temporary file while hashed and counted
   * (over the upload limit it stops there), its digest checked, its archive inspected, then
   * renamed into place. An upload already kept answers at once and `body` is not read.
   */
  async put(digest: string, body: AsyncIterable<Buffer>): Promise<UploadSummary> {
    const known = await this.summary(digest);
    if (known !== undefined) return known;
    const incoming = path.join(this.folder, `.incoming-${randomUUID()}`);
    const file = await open(incoming, 'wx', 0o600);
    try {
      const hash = createHash('sha256');
      let archiveBytes = 0;
      try {
        for await (const chunk of body) {
          archiveBytes += chunk.length;
          if (archiveBytes > this.limits.uploadLimitBytes)
            throw new UploadTooLargeError(`Upload over ${this.limits.uploadLimitBytes} bytes`);
          hash.update(chunk);
          await file.write(chunk);
        }
      } finally {
        await file.close();
      }
      const actual = hash.digest('hex');
      if (actual !== digest)
        throw new UploadDigestMismatchError(
          `Upload digest mismatch: the body hashes to ${actual}, not ${digest}`,
        );
      const inspected = await inspectArchive(createReadStream(incoming), this.limits.unpack);
      const summary: UploadSummary = {
        digest,
        archiveBytes,
        files: inspected.files,
        folders: inspected.folders,
        symlinks: inspected.symlinks,
        unpackedBytes: inspected.unpackedBytes,
      };
      // The summary first: an archive in place always has one, or is inspected again.
      await writePrivateFile(this.summaryPath(digest), JSON.stringify(summary));
      await rename(incoming, this.archivePath(digest));
      return summary;
    } finally {
      await unlink(incoming).catch(() => undefined);
    }
  }

  /** The summary of a kept upload, undefined when it is not here (inspected again when its summary was lost). */
  private async summary(digest: string): Promise<UploadSummary | undefined> {
    if (!(await this.has(digest))) return undefined;
    try {
      const parsed = uploadSummarySchema.safeParse(
        JSON.parse(await readFile(this.summaryPath(digest), 'utf8')),
      );
      if (parsed.success && parsed.data.digest === digest) return parsed.data;
    } catch {
      // Lost or damaged: inspected again below.
    }
    const file = this.archivePath(digest);
    const inspected = await inspectArchive(createReadStream(file), this.limits.unpack);
    const summary: UploadSummary = {
      digest,
      archiveBytes: (await stat(file)).size,
      files: inspected.files,
      folders: inspected.folders,
      symlinks: inspected.symlinks,
      unpackedBytes: inspected.unpackedBytes,
    };
    await writePrivateFile(this.summaryPath(digest), JSON.stringify(summary));
    return summary;
  }
}
