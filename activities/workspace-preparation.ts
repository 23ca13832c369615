import { Readable } from 'node:stream';
import { ApplicationFailure } from '@temporalio/common';
import { request } from 'undici';
import { z } from 'zod';
import { describeZodError } from '../common/agent-input';
import { WORKSPACE_PREPARATION_FAILURE } from '../common/constants';
import { prepareResultSchema, type PrepareResult } from '../sandbox/workspace-origin';
import type { SandboxEndpoint, ToolExecutor } from './tool-executor';

/**
 * Preparing a run's workspace on its sandbox server: `POST /workspaces/prepare` unpacks an upload
 * the CLI made into the workspace, once. The CLI uploads before the run exists, so it cannot know
 * which server the run's trajectory will hash to: when the upload is on another server, it is
 * streamed from there to the trajectory's server, then prepared.
 */

/** What the workflow asks for: the trajectory, the upload, and the commit a repository was at. */
export interface PrepareWorkspaceInput {
  trajectoryId: string;
  digest: string;
  commit?: string;
}

/** The server's answer to a prepare, and where the upload was copied from when it was. */
export type PreparedWorkspace = PrepareResult & {
  /** The server the upload was copied from, when the trajectory's server lacked it. */
  copiedFrom?: string;
};

const errorBodySchema = z.object({ error: z.string() });

/** What an activity gives the transfer: a heartbeat with progress, and its cancellation. */
export interface TransferContext {
  heartbeat(details?: unknown): void;
  signal: AbortSignal;
}

/** A prepare or an unpack of 1 GiB may take minutes; the activity heartbeats meanwhile. */
const PREPARE_TIMEOUT_MS = 20 * 60_000;
/** An upload stream that goes quiet for this long has failed; the retry starts again. */
const TRANSFER_IDLE_TIMEOUT_MS = 120_000;

/** A failure no retry can mend: the run ends failed with this message. */
function permanent(message: string): ApplicationFailure {
  return ApplicationFailure.create({ type: WORKSPACE_PREPARATION_FAILURE, message, nonRetryable: true });
}

function authorization(endpoint: SandboxEndpoint): Record<string, string> {
  return { authorization: `Bearer ${endpoint.token}` };
}

/** The one-line error of a server's answer, or its status when the body is not one. */
async function errorLine(body: { text(): Promise<string> }, statusCode: number): Promise<string> {
  const text = await body.text().catch(() => '');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const error = errorBodySchema.safeParse(parsed);
  return error.success ? error.data.error : `HTTP ${statusCode}`;
}

/** `POST /workspaces/prepare` on `endpoint`: the workspace, or that the server lacks the upload. */
async function askToPrepare(
  endpoint: SandboxEndpoint,
  input: PrepareWorkspaceInput,
  signal: AbortSignal,
): Promise<PreparedWorkspace | 'no upload'> {
  const response = await request(new URL('/workspaces/prepare', endpoint.url), {
    method: 'POST',
    headers: { ...authorization(endpoint), 'content-type': 'application/json' },
    body: JSON.stringify(input),
    signal,
    headersTimeout: PREPARE_TIMEOUT_MS,
    bodyTimeout: PREPARE_TIMEOUT_MS,
  });
  if (response.statusCode === 200) {
    const parsed = prepareResultSchema.safeParse(await response.body.json());
    if (!parsed.success) {
      throw new Error(
        `sandbox server ${endpoint.url} answered prepare with an unexpected body: ${describeZodError(parsed.error)}`,
      );
    }
    return parsed.data;
  }
  const line = await errorLine(response.body, response.statusCode);
  if (response.statusCode === 404 && line.startsWith('No upload')) return 'no upload';
  // The archive or the workspace is wrong, not the moment: another attempt would be refused again.
  if (response.statusCode === 400 || response.statusCode === 409 || response.statusCode === 413) {
    throw permanent(`sandbox server ${endpoint.url}: ${line}`);
  }
  throw new Error(`sandbox server ${endpoint.url} answered ${response.statusCode} to prepare: ${line}`);
}

/**
 * `source` passed on as it is read, `onProgress` told the bytes so far. A stream of its own, not a
 * listener on `source`, which would start it flowing before the request reads it.
 */
export function countedStream(source: AsyncIterable<Buffer>, onProgress: (bytes: number) => void): Readable {
  let bytes = 0;
  return Readable.from(
    (async function* () {
      for await (const chunk of source) {
        bytes += chunk.length;
        onProgress(bytes);
        yield chunk;
      }
    })(),
  );
}

/**
 * `PUT /uploads/<digest>` of an archive to `endpoint`, streamed from `body`. The server checks the
 * digest and the archive before it keeps it; its refusal is thrown with its own line.
 */
export async function putUpload(
  endpoint: SandboxEndpoint,
  digest: string,
  body: Readable,
  bytes: number | undefined,
  signal?: AbortSignal,
): Promise<void> {
  const response = await request(new URL(`/uploads/${digest}`, endpoint.url), {
    method: 'PUT',
    headers: {
      ...authorization(endpoint),
      'content-type': 'application/gzip',
      // Unknown when the source server streams it chunked: then it goes chunked too.
      ...(bytes === undefined ? {} : { 'content-length': String(bytes) }),
    },
    body,
    ...(signal === undefined ? {} : { signal }),
    headersTimeout: PREPARE_TIMEOUT_MS,
    bodyTimeout: PREPARE_TIMEOUT_MS,
  });
  if (response.statusCode === 200) {
    await response.body.dump();
    return;
  }
  throw new UploadRefusedError(
    endpoint.url,
    response.statusCode,
    await errorLine(response.body, response.statusCode),
  );
}

/** A sandbox server's refusal of an upload, with its status and line. */
export class UploadRefusedError extends Error {
  override readonly name = 'UploadRefusedError';

  constructor(
    readonly serverUrl: string,
    readonly status: number,
    readonly reason: string,
  ) {
    super(`sandbox server ${serverUrl} refused the upload (${status}): ${reason}`);
  }
}

/**
 * Copies upload `digest` to `target` from the first other server that has it, streaming it through
 * this worker without holding it. Returns the source's URL; a permanent failure when none has it.
 */
async function copyUpload(
  tools: ToolExecutor,
  target: SandboxEndpoint,
  digest: string,
  context: TransferContext,
): Promise<string> {
  const problems: string[] = [];
  for (const source of tools.endpoints.filter((endpoint) => endpoint.url !== target.url)) {
    let response;
    try {
      response = await request(new URL(`/uploads/${digest}`, source.url), {
        headers: authorization(source),
        signal: context.signal,
        headersTimeout: TRANSFER_IDLE_TIMEOUT_MS,
        bodyTimeout: TRANSFER_IDLE_TIMEOUT_MS,
      });
    } catch (error) {
      if (context.signal.aborted) throw error;
      problems.push(`${source.url}: ${(error as Error).message}`);
      continue;
    }
    if (response.statusCode === 404) {
      await response.body.dump();
      continue;
    }
    if (response.statusCode !== 200) {
      problems.push(`${source.url}: ${await errorLine(response.body, response.statusCode)}`);
      continue;
    }
    const length = Number(response.headers['content-length']);
    const bytes = Number.isSafeInteger(length) && length >= 0 ? length : undefined;
    const counted = countedStream(response.body, (copiedBytes) =>
      context.heartbeat({ copiedBytes, from: source.url }),
    );
    try {
      await putUpload(target, digest, counted, bytes, context.signal);
    } catch (error) {
      response.body.destroy();
      // The server refused the archive itself: it would refuse it from anywhere.
      if (error instanceof UploadRefusedError && error.status >= 400 && error.status < 500) {
        throw permanent(error.message);
      }
      throw error;
    }
    return source.url;
  }
  if (problems.length > 0) {
    // Some server could not be asked: it may hold the upload once it answers again.
    throw new Error(
      `upload ${digest} is not on ${target.url}, and not all servers could be asked: ${problems.join('; ')}`,
    );
  }
  throw permanent(
    `No sandbox server has upload ${digest}: the servers that had it were reset or removed; start the run again to upload it anew`,
  );
}

/**
 * Prepares the workspace of `input.trajectoryId` on its sandbox server from upload `input.digest`,
 * copying the upload from another server first when need be. Retrying is safe: a server that
 * prepared the workspace before answers `prepared: "before"` and unpacks nothing.
 */
export async function prepareTrajectoryWorkspace(
  input: PrepareWorkspaceInput,
  tools: ToolExecutor | undefined,
  context: TransferContext,
): Promise<PreparedWorkspace> {
  if (tools === undefined) {
    throw permanent(
      'This worker has no sandbox server to prepare the workspace on: set AGENTS_SANDBOX_URLS for the worker',
    );
  }
  const target = tools.serverFor(input.trajectoryId);
  const first = await askToPrepare(target, input, context.signal);
  if (first !== 'no upload') return first;
  const copiedFrom = await copyUpload(tools, target, input.digest, context);
  const second = await askToPrepare(target, input, context.signal);
  if (second === 'no upload') {
    throw new Error(`sandbox server ${target.url} lost upload ${input.digest} right after it was copied`);
  }
  return { ...second, copiedFrom };
}
