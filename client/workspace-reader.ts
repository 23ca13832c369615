import { Pool } from 'undici';
import { z } from 'zod';
import type { SandboxEndpoint } from '../activities/tool-executor';
import {
  commitIdSchema,
  describeZodError,
  sha256DigestSchema,
  workspaceSourceSchema,
  type WorkspaceSource,
} from '../common/agent-input';
import { WORKFLOW_TYPE } from '../common/constants';
import type { AgentsClient } from './agents-client';
import { decodePayload } from './audit/history-reader';
import type { AgentsConfig } from './config';
import { AgentsError } from './errors';
import { withSandboxEndpoints } from './sandbox-endpoints';

/**
 * The CLI's reader of run workspaces: a small client of the workspace routes of one sandbox server
 * (listings, file reads, totals, archives, diffs), every answer checked with zod, and the lookup
 * that takes an agent's name to the server holding its workspace.
 */

/** How long a listing, a read or the totals may take to answer. */
const REQUEST_TIMEOUT_MS = 30_000;
/** A diff runs git inside the sandbox: it may take longer. */
const DIFF_TIMEOUT_MS = 120_000;
/** An archive streams: this is the longest pause between two of its chunks, not its whole time. */
const ARCHIVE_IDLE_TIMEOUT_MS = 60_000;

const entrySchema = z.object({
  path: z.string(),
  type: z.enum(['file', 'directory', 'symlink', 'other']),
  size: z.number().int().nonnegative(),
});
/** One entry of a workspace listing: its path from the workspace root, its kind and size. */
export type WorkspaceEntry = z.infer<typeof entrySchema>;

const listingSchema = z.object({ entries: z.array(entrySchema), truncated: z.boolean() });
/** A listing of a workspace folder, `truncated` when the server stopped at its entry limit. */
export type WorkspaceListing = z.infer<typeof listingSchema>;

const fileSchema = z.object({
  path: z.string(),
  encoding: z.enum(['text', 'base64']),
  content: z.string(),
  truncated: z.boolean(),
  bytes: z.number().int().nonnegative(),
  fileSize: z.number().int().nonnegative(),
  mime: z.string(),
});

/** A file of a workspace, its bytes exactly; `truncated` when it is larger than the server's read limit. */
export interface WorkspaceFile {
  path: string;
  data: Buffer;
  truncated: boolean;
  fileSize: number;
}

const originSchema = z.object({
  digest: sha256DigestSchema,
  commit: commitIdSchema.optional(),
  files: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  preparedAt: z.string(),
});

const infoSchema = z.object({
  trajectoryId: z.string(),
  bytes: z.number().int().nonnegative(),
  files: z.number().int().nonnegative(),
  origin: originSchema.nullable(),
});
/** What a sandbox server knows of a workspace: its size, its file count, and the upload it was prepared from. */
export type WorkspaceInfo = z.infer<typeof infoSchema>;

const diffSchema = z.object({
  kind: z.enum(['git', 'files']),
  base: z.string(),
  changes: z.array(z.object({ path: z.string(), change: z.enum(['added', 'modified', 'deleted']) })),
  text: z.string(),
  truncated: z.boolean(),
});
/** A workspace's changes since it was prepared: git's log, status and diff, or a file-level diff. */
export type WorkspaceDiff = z.infer<typeof diffSchema>;

/**
 * The client of the workspace routes of one sandbox server. Every failure is an {@link AgentsError}
 * on one line naming the server and what it answered; a missing workspace (404) is `not_found`.
 */
export class WorkspaceReader {
  private readonly pool: Pool;

  constructor(readonly endpoint: SandboxEndpoint) {
    this.pool = new Pool(endpoint.url, { connections: 4, keepAliveTimeout: 10_000 });
  }

  /** The entries below `folder` of the workspace, all the way down; symlinks listed, never followed. */
  async list(trajectoryId: string, folder = '.'): Promise<WorkspaceListing> {
    const query = { trajectoryId, path: folder, recursive: 'true' };
    return this.json('/artifacts/list', query, listingSchema, REQUEST_TIMEOUT_MS);
  }

  /** The bytes of one file, as many as the server's read limit allows (base64 on the wire, so exact). */
  async read(trajectoryId: string, file: string): Promise<WorkspaceFile> {
    const query = { trajectoryId, path: file, encoding: 'base64' };
    const answer = await this.json('/artifacts/read', query, fileSchema, REQUEST_TIMEOUT_MS);
    const data =
      answer.encoding === 'base64' ? Buffer.from(answer.content, 'base64') : Buffer.from(answer.content);
    return { path: file, data, truncated: answer.truncated, fileSize: answer.fileSize };
  }

  /** The workspace's size, file count and origin; undefined when this server holds no workspace of the trajectory. */
  async info(trajectoryId: string): Promise<WorkspaceInfo | undefined> {
    try {
      return await this.json('/workspaces/info', { trajectoryId }, infoSchema, REQUEST_TIMEOUT_MS);
    } catch (error) {
      if (error instanceof AgentsError && error.code === 'not_found') return undefined;
      throw error;
    }
  }

  /** The workspace's changes since it was prepared, as the server computes them. */
  async diff(trajectoryId: string): Promise<WorkspaceDiff> {
    return this.json('/workspaces/diff', { trajectoryId }, diffSchema, DIFF_TIMEOUT_MS);
  }

  /**
   * A tar.gz of `folder` of the workspace, streamed as the server writes it: its files, folders and
   * symlinks (as links). What is in it is the sandbox's making: unpack it with `unpackArchive`.
   */
  async archive(trajectoryId: string, folder = '.'): Promise<AsyncIterable<Buffer>> {
    const response = await this.send(
      '/workspaces/archive',
      { trajectoryId, path: folder },
      ARCHIVE_IDLE_TIMEOUT_MS,
    );
    if (response.statusCode !== 200) throw await this.refusal(response);
    const type = response.headers['content-type'];
    if (type !== 'application/gzip') {
      await response.body.dump();
      throw new AgentsError(
        'sandbox_unavailable',
        `Sandbox server ${this.endpoint.url} answered an archive as '${String(type)}', not application/gzip`,
      );
    }
    return this.guarded(response.body);
  }

  /** Closes the connections to the server. */
  async close(): Promise<void> {
    await this.pool.close();
  }

  /** The chunks of a streamed body, a transport failure in the middle told as one line naming the server. */
  private async *guarded(body: AsyncIterable<unknown>): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of body) yield chunk as Buffer;
    } catch (error) {
      throw this.transportError(error, ARCHIVE_IDLE_TIMEOUT_MS);
    }
  }

  private async json<T>(
    route: string,
    query: Record<string, string>,
    schema: z.ZodType<T>,
    timeoutMs: number,
  ): Promise<T> {
    const response = await this.send(route, query, timeoutMs);
    if (response.statusCode !== 200) throw await this.refusal(response);
    let body: unknown;
    try {
      body = JSON.parse(await response.body.text());
    } catch (error) {
      throw new AgentsError(
        'sandbox_unavailable',
        `Sandbox server ${this.endpoint.url} answered ${route} with invalid JSON`,
        { cause: error },
      );
    }
    const parsed = schema.safeParse(body);
    if (!parsed.success) {
      throw new AgentsError(
        'sandbox_unavailable',
        `Sandbox server ${this.endpoint.url} answered ${route} unexpectedly: ${describeZodError(parsed.error)}`,
      );
    }
    return parsed.data;
  }

  private async send(route: string, query: Record<string, string>, timeoutMs: number) {
    try {
      return await this.pool.request({
        path: `${route}?${new URLSearchParams(query).toString()}`,
        method: 'GET',
        headers: { authorization: `Bearer ${this.endpoint.token}` },
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (error) {
      throw this.transportError(error, timeoutMs);
    }
  }

  /** The server's one-line refusal (`{"error": "…"}`), with its HTTP status, as an error naming the server. */
  private async refusal(response: {
    statusCode: number;
    body: { text(): Promise<string> };
  }): Promise<AgentsError> {
    const text = await response.body.text().catch(() => '');
    let message = text.slice(0, 300).split('\n')[0] ?? '';
    try {
      const { error } = JSON.parse(text) as { error?: unknown };
      if (typeof error === 'string') message = error;
    } catch {
      // Not JSON: the start of the text says enough.
    }
    const code =
      response.statusCode === 404
        ? 'not_found'
        : response.statusCode >= 400 && response.statusCode < 500
          ? 'invalid_argument'
          : 'sandbox_unavailable';
    return new AgentsError(
      code,
      `Sandbox server ${this.endpoint.url} answered HTTP ${response.statusCode}: ${message}`,
    );
  }

  private transportError(error: unknown, timeoutMs: number): AgentsError {
    const code = (error as { code?: unknown }).code;
    const reason =
      code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT'
        ? `did not answer within ${timeoutMs / 1000} s`
        : `cannot be reached (${((error as Error).message || String(code)).split('\n')[0]})`;
    return new AgentsError('sandbox_unavailable', `Sandbox server ${this.endpoint.url} ${reason}`, {
      cause: error,
    });
  }
}

/** What a run's first input says about its workspace; read leniently, so an older input is simply "empty". */
const runInputSchema = z.object({
  workspace: workspaceSourceSchema.optional().catch(undefined),
  sandbox: z.object({ resetOnEnd: z.boolean().optional() }).optional().catch(undefined),
});

/** The run of an agent as its workspace is found: its trajectory, whether it is open, and its input's workspace. */
export interface AgentRun {
  name: string;
  workflowId: string;
  /** The first run of its continue-as-new chain: the trajectory is named for it. */
  firstExecutionRunId: string;
  /** `${workflowId}-${firstExecutionRunId}`: the folder of the run's workspace on its sandbox server. */
  trajectoryId: string;
  /** Temporal's status of the latest execution: RUNNING, COMPLETED, TERMINATED, … */
  executionStatus: string;
  /** What the run was started with; undefined when its input says nothing (or its first history is gone). */
  startedFrom: WorkspaceSource | undefined;
  /** The run deletes its workspace when it ends (`--reset-on-end`). */
  resetOnEnd: boolean;
}

/**
 * The latest run of agent `name`, from the server alone (no worker needed): its first execution's
 * run ID, which names the trajectory, and from that execution's first history event, the run input.
 */
export async function resolveAgentRun(agents: AgentsClient, name: string): Promise<AgentRun> {
  const handle = await agents.handleFor(name);
  const description = await handle.describe();
  if (description.type !== WORKFLOW_TYPE) {
    throw new AgentsError(
      'not_found',
      `Workflow ${handle.workflowId} is a '${description.type}', not an agent run`,
    );
  }
  const firstExecutionRunId = description.raw.workflowExecutionInfo?.firstRunId || description.runId;
  let input: z.infer<typeof runInputSchema> = {};
  try {
    const response = await agents.client.workflowService.getWorkflowExecutionHistory({
      namespace: agents.client.options.namespace,
      execution: { workflowId: handle.workflowId, runId: firstExecutionRunId },
      maximumPageSize: 1,
    });
    const started = response.history?.events?.[0]?.workflowExecutionStartedEventAttributes;
    const parsed = runInputSchema.safeParse(decodePayload(started?.input?.payloads?.[0]));
    if (parsed.success) input = parsed.data;
  } catch {
    // The first execution's history is gone (retention): its input is unknown, its workspace may still be there.
  }
  return {
    name,
    workflowId: handle.workflowId,
    firstExecutionRunId,
    trajectoryId: `${handle.workflowId}-${firstExecutionRunId}`,
    executionStatus: description.status.name,
    startedFrom: input.workspace,
    resetOnEnd: input.sandbox?.resetOnEnd === true,
  };
}

/** An agent's workspace as found: its run, the server holding it, a reader of that server, and its totals. */
export interface LocatedWorkspace {
  run: AgentRun;
  server: SandboxEndpoint;
  reader: WorkspaceReader;
  info: WorkspaceInfo;
}

/**
 * Finds the workspace of a run among `endpoints`: the one server whose `/workspaces/info` answers
 * for its trajectory. Undefined when none does; a server that cannot be reached is only an error
 * when no other server holds the workspace, and then the error says so.
 */
export async function findWorkspaceServer(
  endpoints: readonly SandboxEndpoint[],
  trajectoryId: string,
): Promise<{ reader: WorkspaceReader; info: WorkspaceInfo } | undefined> {
  const readers = endpoints.map((endpoint) => new WorkspaceReader(endpoint));
  const answers = await Promise.allSettled(readers.map((reader) => reader.info(trajectoryId)));
  const found = answers.findIndex((answer) => answer.status === 'fulfilled' && answer.value !== undefined);
  await Promise.all(readers.filter((_, index) => index !== found).map((reader) => reader.close()));
  if (found >= 0) {
    return { reader: readers[found]!, info: (answers[found] as PromiseFulfilledResult<WorkspaceInfo>).value };
  }
  const failed = answers.find((answer): answer is PromiseRejectedResult => answer.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return undefined;
}

/** Why run `run` has no workspace on any server: it was deleted at the end, or no tool ever ran. */
function noWorkspaceReason(run: AgentRun): string {
  const open = run.executionStatus === 'RUNNING';
  if (!open && run.resetOnEnd) return 'it was deleted when the run ended (--reset-on-end)';
  return open ? 'the run has not run a tool yet' : 'the run never ran a tool';
}

function noWorkspace(run: AgentRun): AgentsError {
  return new AgentsError(
    'not_found',
    `Agent ${run.name} has no workspace (trajectory ${run.trajectoryId}): ${noWorkspaceReason(run)}`,
  );
}

/**
 * Runs `use` with the workspace of agent `name`: its run resolved through Temporal, the sandbox
 * servers of the configuration (or this machine's own, see `withSandboxEndpoints`) asked which one
 * holds it. Fails with one line when the agent does not exist or has no workspace, and why.
 */
export async function locateWorkspace<T>(
  config: AgentsConfig,
  agents: AgentsClient,
  name: string,
  use: (workspace: LocatedWorkspace) => Promise<T>,
): Promise<T> {
  const run = await resolveAgentRun(agents, name);
  return withSandboxEndpoints(config, async (endpoints) => {
    const found = await findWorkspaceServer(endpoints, run.trajectoryId);
    if (found === undefined) throw noWorkspace(run);
    try {
      return await use({ run, server: found.reader.endpoint, reader: found.reader, info: found.info });
    } finally {
      await found.reader.close();
    }
  });
}

/**
 * How a command names the server of a workspace: its URL, or on the embedded default (no sandbox
 * servers configured) this machine's sandbox root, since the server the command started to read
 * it lives only as long as the command.
 */
export function describeWorkspaceServer(config: AgentsConfig, server: SandboxEndpoint): string {
  return config.sandbox.urls.length === 0 ? `this machine (${config.sandbox.root})` : server.url;
}

/** The workspace part of `agents status`: where it is, how big, what it started from, or why it cannot be shown. */
export interface RunWorkspaceStatus {
  trajectoryId: string;
  /** The server holding it, as {@link describeWorkspaceServer} names it; null when it was not found. */
  server: string | null;
  files: number | null;
  bytes: number | null;
  /** The upload the server prepared it from, as the server recorded it. */
  origin: WorkspaceInfo['origin'];
  /** What the run's input says it started from (`--workspace`, `--repo`); null: an empty workspace. */
  startedFrom: WorkspaceSource | null;
  /** Why the workspace cannot be shown (none yet, deleted, server unreachable); null when it is shown. */
  unavailable: string | null;
}

/**
 * The workspace of agent `name` for `agents status`. Never fails for the sandbox's sake: a server
 * that cannot be reached or holds nothing is told in `unavailable`, so the run's status still shows.
 */
export async function runWorkspaceStatus(
  config: AgentsConfig,
  agents: AgentsClient,
  name: string,
): Promise<RunWorkspaceStatus> {
  const run = await resolveAgentRun(agents, name);
  const base = {
    trajectoryId: run.trajectoryId,
    server: null,
    files: null,
    bytes: null,
    origin: null,
    startedFrom: run.startedFrom ?? null,
  };
  try {
    return await withSandboxEndpoints(config, async (endpoints) => {
      const found = await findWorkspaceServer(endpoints, run.trajectoryId);
      if (found === undefined) return { ...base, unavailable: `none: ${noWorkspaceReason(run)}` };
      await found.reader.close();
      const { info } = found;
      const server = describeWorkspaceServer(config, found.reader.endpoint);
      return {
        ...base,
        server,
        files: info.files,
        bytes: info.bytes,
        origin: info.origin,
        unavailable: null,
      };
    });
  } catch (error) {
    const message = (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
    return { ...base, unavailable: `cannot be read: ${message}` };
  }
}
