import { once } from 'node:events';
import { readdir, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import { mcpStdioServerSchema } from '../common/mcp-servers';
import {
  ArchiveOverLimitError,
  DEFAULT_MAX_ARCHIVE_ENTRIES,
  UnsafeArchiveError,
  type UnpackLimits,
} from './archive-unpack';
import { archiveArtifacts, ArtifactTooLargeError, listArtifacts, readArtifact } from './artifacts';
import { sandboxHostIdentity } from './bubblewrap';
import { BearerToken, HttpError, parseBody, readJson } from './http';
import { InvalidArchiveError } from './tar-archive';
import {
  DEFAULT_PULL_LIMIT_BYTES,
  DEFAULT_UPLOAD_LIMIT_BYTES,
  DEFAULT_UNPACKED_LIMIT_BYTES,
  UploadDigestMismatchError,
  uploadDigestSchema,
  UploadMissingError,
  UploadStore,
  UploadTooLargeError,
} from './upload-store';
import { archiveWorkspace, WorkspaceArchiveTooLargeError } from './workspace-archive';
import { diffWorkspace, WorkspaceDiffError } from './workspace-diff';
import {
  commitSchema,
  prepareWorkspace,
  WorkspaceConflictError,
  workspaceInfo,
  type TrajectoryLocation,
} from './workspace-origin';
import { ExecutionLanes } from './lanes';
import { McpSandboxSessions, McpServerUnavailableError, type McpSessionsOptions } from './mcp-sessions';
import { ResultStore } from './result-store';
import { SandboxMetrics } from './sandbox-metrics';
import { createTrajectoryFolders, prepareSandboxRoot } from './sandbox-root';
import { closeStatefulSessions } from './stateful-sessions';
import { SandboxError, toolCallSchema, type ToolCall, type ToolResult } from './tool-call';
import {
  InvalidWorkspacePathError,
  PathOutsideWorkspaceError,
  removeEntryBeneath,
  WorkspaceEntryMissingError,
} from './workspace-paths';

/** Runs one tool call in a workspace: bubblewrap in production. */
export type ToolRunner = (call: ToolCall, workspace: string, signal: AbortSignal) => Promise<ToolResult>;

export interface SandboxServerOptions {
  /** Folder holding one folder per trajectory: its workspace and its stored results. */
  root: string;
  /** Bearer token every request must carry. */
  token: string;
  /**
   * A second bearer token that opens `GET /metrics` and nothing else. The metrics say what runs
   * and how much of the server it takes, so they are not public; but the server's own token runs
   * commands, and a scraper should not hold that: with this one, a Prometheus scrape config
   * (`authorization: { credentials_file: … }`, which sends `Authorization: Bearer …`) reads the
   * metrics and can do nothing else. The server's own token opens `/metrics` too.
   */
  metricsToken?: string;
  /** Calls that may run at once across all trajectories. */
  lanes: number;
  runTool: ToolRunner;
  /** Largest compressed upload (`PUT /uploads/<sha256>`); {@link DEFAULT_UPLOAD_LIMIT_BYTES} unless given. */
  uploadLimitBytes?: number;
  /** Largest file data of a workspace archive (`GET /workspaces/archive`); {@link DEFAULT_PULL_LIMIT_BYTES} unless given. */
  pullLimitBytes?: number;
  /**
   * Largest unpacked size of an upload, what a workspace may start with: the disk quota per
   * workspace of the server's totals; {@link DEFAULT_UNPACKED_LIMIT_BYTES} unless given.
   */
  workspaceLimitBytes?: number;
  /**
   * How stdio MCP servers run (`mcp-sessions.ts`): the isolation, totals and network egress the
   * server's `runTool` uses, and the read-only mounts of `--mcp-mount`. Bubblewrap, the default
   * totals and egress, and no mounts unless given.
   */
  mcp?: McpSessionsOptions;
}

/** Largest request body accepted: a batch of 200 calls with file contents fits comfortably. */
const MAX_BODY_BYTES = 32 * 1024 * 1024;

const batchSchema = z.object({ calls: z.array(toolCallSchema).max(1000) }).strict();
const mcpToolsSchema = z
  .object({
    trajectoryId: toolCallSchema.shape.trajectoryId,
    server: mcpStdioServerSchema,
    policy: toolCallSchema.shape.policy,
  })
  .strict();
const releaseSchema = z
  .object({ trajectoryId: toolCallSchema.shape.trajectoryId, reset: z.boolean().default(false) })
  .strict();

/**
 * The answer to a batch: one JSON result per line, each written as soon as its call ends, so a
 * quick call is not held back by a slow one in the same batch.
 */
class StreamedResults {
  constructor(private readonly results: Array<Promise<ToolResult>>) {}

  async writeTo(response: ServerResponse): Promise<void> {
    response.writeHead(200, { 'content-type': 'application/x-ndjson' });
    await Promise.all(
      this.results.map(async (pending) => {
        response.write(`${JSON.stringify(await pending)}\n`);
      }),
    );
    response.end();
  }
}

/** A response that is not JSON, such as an archive. */
class BinaryBody {
  constructor(
    readonly data: Buffer,
    readonly contentType: string,
  ) {}
}

/** A response streamed as it is made, such as a workspace's archive; an error midway cuts the connection. */
class StreamedBody {
  constructor(
    readonly stream: Readable,
    readonly contentType: string,
  ) {}
}

const prepareSchema = z
  .object({
    trajectoryId: toolCallSchema.shape.trajectoryId,
    digest: uploadDigestSchema,
    commit: commitSchema.optional(),
  })
  .strict();

const workspaceQuerySchema = z.object({ trajectoryId: toolCallSchema.shape.trajectoryId }).strict();

/** Runs a workspace operation, its failures turned into the HTTP answers the workspace contract names. */
async function workspaceCall<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (error instanceof UnsafeArchiveError || error instanceof InvalidArchiveError)
      throw new HttpError(400, error.message);
    if (error instanceof UploadDigestMismatchError) throw new HttpError(400, error.message);
    if (
      error instanceof ArchiveOverLimitError ||
      error instanceof UploadTooLargeError ||
      error instanceof WorkspaceArchiveTooLargeError
    )
      throw new HttpError(413, error.message);
    if (error instanceof UploadMissingError) throw new HttpError(404, error.message);
    if (error instanceof WorkspaceConflictError || error instanceof WorkspaceDiffError)
      throw new HttpError(409, error.message);
    return artifactCall(() => Promise.reject(error as Error));
  }
}

const artifactQuerySchema = z
  .object({
    trajectoryId: toolCallSchema.shape.trajectoryId,
    path: z
      .string()
      .min(1)
      .refine((value) => !value.includes('\0'), 'must not contain a NUL byte')
      .default('.'),
    recursive: z.enum(['true', 'false']).optional(),
    encoding: z.enum(['text', 'base64']).optional(),
    sha256: z.enum(['true', 'false']).optional(),
  })
  .strict();

/** `trajectoryId` and `path` (default `.`), as the workspace archive takes them. */
const workspaceArchiveQuerySchema = artifactQuerySchema.pick({ trajectoryId: true, path: true }).strict();

/** Runs an artifact operation, turning its failures into the HTTP answers they deserve. */
async function artifactCall<T>(operation: () => Promise<T>): Promise<T> {
  try {
    return await operation();
  } catch (error) {
    if (error instanceof PathOutsideWorkspaceError) throw new HttpError(403, error.message);
    if (error instanceof WorkspaceEntryMissingError) throw new HttpError(404, 'No such file or folder');
    if (error instanceof InvalidWorkspacePathError) throw new HttpError(400, error.message);
    if (error instanceof ArtifactTooLargeError) throw new HttpError(413, error.message);
    if (error instanceof SandboxError) throw new HttpError(400, error.message);
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      throw new HttpError(404, 'No such file or folder');
    if ((error as NodeJS.ErrnoException).code === 'ENOTDIR') throw new HttpError(400, 'Not a folder');
    // What Node throws for a path it cannot hand to the kernel (a NUL byte): the request's fault.
    if ((error as NodeJS.ErrnoException).code === 'ERR_INVALID_ARG_VALUE')
      throw new HttpError(400, 'Invalid path');
    throw error;
  }
}

interface Trajectory {
  workspace: string;
  results: ResultStore;
}

/**
 * The sandbox server: workspaces of trajectories on this machine, tool calls run in them through
 * bounded lanes, each callId run at most once. HTTP with JSON bodies validated by zod and a bearer
 * token; errors are one-line JSON messages, never stack traces.
 */
export class SandboxServer {
  private readonly lanes: ExecutionLanes;
  private readonly trajectories = new Map<string, Trajectory>();
  private readonly shutdown = new AbortController();
  private readonly token: BearerToken;
  private readonly metricsToken: BearerToken | undefined;
  private readonly metrics: SandboxMetrics;
  private readonly uploads: UploadStore;
  private readonly unpackLimits: UnpackLimits;
  private readonly mcp: McpSandboxSessions;
  private server: Server | undefined;
  private readonly requestsUnderWay = new Set<Promise<void>>();
  private draining = false;

  constructor(private readonly options: SandboxServerOptions) {
    this.lanes = new ExecutionLanes(options.lanes);
    this.mcp = new McpSandboxSessions(options.mcp);
    this.token = new BearerToken(options.token);
    this.metricsToken =
      options.metricsToken === undefined ? undefined : new BearerToken(options.metricsToken);
    this.metrics = new SandboxMetrics({ lanes: this.lanes, trajectoriesDir: this.trajectoriesDir() });
    this.unpackLimits = {
      maxUnpackedBytes: options.workspaceLimitBytes ?? DEFAULT_UNPACKED_LIMIT_BYTES,
      maxEntries: DEFAULT_MAX_ARCHIVE_ENTRIES,
    };
    this.uploads = new UploadStore(path.join(options.root, 'uploads'), {
      uploadLimitBytes: options.uploadLimitBytes ?? DEFAULT_UPLOAD_LIMIT_BYTES,
      unpack: this.unpackLimits,
    });
  }

  /** Starts listening; resolves to the bound port (pass 0 for any free one). */
  async listen(port: number, host = '127.0.0.1'): Promise<number> {
    await prepareSandboxRoot(this.trajectoriesDir());
    await this.uploads.prepare();
    this.server = createServer((request, response) => {
      const handling = this.handle(request, response);
      this.requestsUnderWay.add(handling);
      void handling.finally(() => this.requestsUnderWay.delete(handling));
    });
    this.server.listen(port, host);
    await once(this.server, 'listening');
    return (this.server.address() as AddressInfo).port;
  }

  /**
   * Stops taking requests and gives those under way up to `graceMs` (none by default) to finish, so
   * a restart loses no call that can end in time: its result is stored and answered, and a retry
   * of it is answered from the store instead of running it again. A request arriving meanwhile is
   * refused with 503, which the worker retries. Then it aborts the commands still running and
   * closes the stateful sessions, the stdio MCP servers and the connections.
   */
  async close(options: { graceMs?: number } = {}): Promise<void> {
    this.draining = true;
    const server = this.server;
    const closed = server === undefined ? undefined : once(server, 'close');
    server?.close();
    server?.closeIdleConnections();
    const graceMs = options.graceMs ?? 0;
    if (graceMs > 0 && this.requestsUnderWay.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.requestsUnderWay]),
        new Promise((resolve) => (timer = setTimeout(resolve, graceMs))),
      ]);
      clearTimeout(timer);
    }
    this.shutdown.abort();
    await Promise.all([
      ...[...this.trajectories.keys()].map((trajectoryId) => closeStatefulSessions(trajectoryId)),
      this.mcp.close(undefined, 'the sandbox server is shutting down'),
    ]);
    server?.closeAllConnections();
    await closed;
  }

  /** Requests being handled, which {@link close} lets finish within its grace. */
  get requestsInFlight(): number {
    return this.requestsUnderWay.size;
  }

  private trajectoriesDir(): string {
    return path.join(this.options.root, 'trajectories');
  }

  /**
   * The trajectory's workspace and results, created on first use. They live on disk under the
   * server's root, so the affinity of a trajectory to this server survives a worker crash and a
   * server restart.
   */
  private async trajectory(trajectoryId: string): Promise<Trajectory> {
    const known = this.trajectories.get(trajectoryId);
    if (known !== undefined) return known;
    const { workspace, resultsFile } = await createTrajectoryFolders(this.trajectoriesDir(), trajectoryId);
    const created = { workspace, results: new ResultStore(resultsFile) };
    this.trajectories.set(trajectoryId, created);
    return created;
  }

  /**
   * Runs a call after the earlier calls of its trajectory. Its place in that order is taken at once,
   * before anything is awaited, so the calls of one batch run in the order the model gave them; a
   * repeated callId then finds the stored result of the first.
   */
  private execute(call: ToolCall): Promise<ToolResult> {
    const result = this.lanes.run(call.trajectoryId, async () => {
      const { workspace, results } = await this.trajectory(call.trajectoryId);
      return results.runOnce(call.callId, () =>
        call.mcpServer === undefined
          ? this.options.runTool(call, workspace, this.shutdown.signal)
          : this.mcp.callTool(call, workspace, this.shutdown.signal),
      );
    });
    return this.metrics.measureCall(call.tool, result);
  }

  /** The routes by `METHOD /path`; `/uploads/<sha256>` is matched apart, its digest being part of the path. */
  private readonly routes: Record<string, (request: IncomingMessage, url: URL) => Promise<unknown>> = {
    'GET /health': async () => ({
      status: 'ok',
      trajectories: (await readdir(this.trajectoriesDir())).length,
      lanes: this.lanes.size,
      executing: this.lanes.executing,
      available: this.lanes.size - this.lanes.executing,
    }),
    /** Prometheus' text format; see {@link SandboxServerOptions.metricsToken} for who may read it. */
    'GET /metrics': async () => {
      const { contentType, text } = await this.metrics.render();
      return new BinaryBody(Buffer.from(text), contentType);
    },
    'GET /slots': async () => ({ trajectories: (await readdir(this.trajectoriesDir())).sort() }),
    'POST /execute': async (request) =>
      this.execute(parseBody(toolCallSchema, await readJson(request, MAX_BODY_BYTES))),
    'POST /batch': async (request) => {
      const { calls } = parseBody(batchSchema, await readJson(request, MAX_BODY_BYTES));
      return new StreamedResults(calls.map((call) => this.execute(call)));
    },
    /** The tools of a stdio MCP server in the trajectory's sandbox (started there when needed), unprefixed. */
    'POST /mcp/tools': async (request) => {
      const body = parseBody(mcpToolsSchema, await readJson(request, MAX_BODY_BYTES));
      // In the trajectory's order and in a lane, as a call: listing may start the server.
      return this.lanes.run(body.trajectoryId, async () => {
        const { workspace } = await this.trajectory(body.trajectoryId);
        try {
          const tools = await this.mcp.listTools(
            body.trajectoryId,
            body.server,
            workspace,
            body.policy,
            this.shutdown.signal,
          );
          return { tools };
        } catch (error) {
          if (error instanceof McpServerUnavailableError) throw new HttpError(502, error.message);
          throw error;
        }
      });
    },
    'POST /release': async (request) => {
      const { trajectoryId, reset } = parseBody(releaseSchema, await readJson(request, MAX_BODY_BYTES));
      this.trajectories.delete(trajectoryId);
      await Promise.all([
        closeStatefulSessions(trajectoryId),
        this.mcp.close(trajectoryId, 'its trajectory was released'),
      ]);
      // Only this trajectory's own folder, removed without following any link the sandbox made.
      if (reset) await removeEntryBeneath(this.trajectoriesDir(), trajectoryId);
      return { released: trajectoryId, reset };
    },
    'GET /artifacts/list': async (_request, url) => {
      const query = parseBody(artifactQuerySchema, Object.fromEntries(url.searchParams));
      const workspace = await this.existingWorkspace(query.trajectoryId);
      return artifactCall(() => listArtifacts(workspace, query.path, query.recursive === 'true'));
    },
    'GET /artifacts/read': async (_request, url) => {
      const query = parseBody(artifactQuerySchema, Object.fromEntries(url.searchParams));
      const workspace = await this.existingWorkspace(query.trajectoryId);
      const options = {
        sha256: query.sha256 === 'true',
        ...(query.encoding ? { encoding: query.encoding } : {}),
      };
      return artifactCall(() => readArtifact(workspace, query.path, options));
    },
    'GET /artifacts/archive': async (_request, url) => {
      const query = parseBody(artifactQuerySchema, Object.fromEntries(url.searchParams));
      const workspace = await this.existingWorkspace(query.trajectoryId);
      return new BinaryBody(
        await artifactCall(() => archiveArtifacts(workspace, query.path)),
        'application/gzip',
      );
    },
    'POST /workspaces/prepare': async (request) => {
      const body = parseBody(prepareSchema, await readJson(request, MAX_BODY_BYTES));
      const { workspace } = await this.trajectory(body.trajectoryId);
      const location = this.location(body.trajectoryId, workspace);
      // In the trajectory's order, so two prepares of one workspace never unpack at once.
      return this.lanes.run(body.trajectoryId, () =>
        workspaceCall(() =>
          prepareWorkspace(
            location,
            { digest: body.digest, ...(body.commit === undefined ? {} : { commit: body.commit }) },
            this.uploads,
            this.unpackLimits,
            sandboxHostIdentity(),
          ),
        ),
      );
    },
    'GET /workspaces/info': async (_request, url) => {
      const { trajectoryId } = parseBody(workspaceQuerySchema, Object.fromEntries(url.searchParams));
      const location = this.location(trajectoryId, await this.existingWorkspace(trajectoryId));
      return workspaceCall(() => workspaceInfo(location));
    },
    'GET /workspaces/archive': async (_request, url) => {
      const query = parseBody(workspaceArchiveQuerySchema, Object.fromEntries(url.searchParams));
      const workspace = await this.existingWorkspace(query.trajectoryId);
      const limit = this.options.pullLimitBytes ?? DEFAULT_PULL_LIMIT_BYTES;
      return new StreamedBody(
        await workspaceCall(() => archiveWorkspace(workspace, query.path, limit)),
        'application/gzip',
      );
    },
    'GET /workspaces/diff': async (_request, url) => {
      const { trajectoryId } = parseBody(workspaceQuerySchema, Object.fromEntries(url.searchParams));
      const workspace = await this.existingWorkspace(trajectoryId);
      const location = this.location(trajectoryId, workspace);
      // A fresh run every time (never a stored result), in the trajectory's lane like its own calls.
      const runInSandbox = (call: ToolCall): Promise<ToolResult> =>
        this.lanes.run(trajectoryId, () => this.options.runTool(call, workspace, this.shutdown.signal));
      return workspaceCall(() => diffWorkspace(location, this.uploads, runInSandbox));
    },
  };

  private async route(request: IncomingMessage): Promise<unknown> {
    const url = new URL(request.url ?? '/', 'http://sandbox');
    const method = request.method ?? 'GET';
    const route = `${method} ${url.pathname}`;
    const upload = /^\/uploads\/([^/]*)$/.exec(url.pathname);
    if (upload !== null && (method === 'PUT' || method === 'GET')) {
      const digest = parseBody(uploadDigestSchema, upload[1]);
      if (method === 'GET') {
        return new StreamedBody(await workspaceCall(() => this.uploads.open(digest)), 'application/gzip');
      }
      const limit = this.options.uploadLimitBytes ?? DEFAULT_UPLOAD_LIMIT_BYTES;
      const declared = Number(request.headers['content-length'] ?? NaN);
      if (declared > limit) throw new HttpError(413, `Upload over ${limit} bytes`);
      return workspaceCall(() => this.uploads.put(digest, request as AsyncIterable<Buffer>));
    }
    const handler = this.routes[route];
    if (handler === undefined) throw new HttpError(404, `No route ${route}`);
    return handler(request, url);
  }

  /** Where a trajectory's folder and workspace are. */
  private location(trajectoryId: string, workspace: string): TrajectoryLocation {
    return { trajectoryId, folder: path.join(this.trajectoriesDir(), trajectoryId), workspace };
  }

  /** The workspace of a trajectory this server holds; artifacts are never read from a new one. */
  private async existingWorkspace(trajectoryId: string): Promise<string> {
    const workspace = path.join(this.trajectoriesDir(), trajectoryId, 'workspace');
    try {
      await stat(workspace);
    } catch {
      throw new HttpError(404, `No active slot for trajectory ${trajectoryId}`);
    }
    return workspace;
  }

  /** The server's token opens every route; the metrics token, when there is one, `GET /metrics` too. */
  private authorize(request: IncomingMessage): void {
    if (this.metricsToken !== undefined && request.method === 'GET' && request.url === '/metrics') {
      try {
        this.metricsToken.authorize(request);
        return;
      } catch {
        // Not the metrics token: the server's own may still open it.
      }
    }
    this.token.authorize(request);
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    let status = 200;
    let body: unknown;
    try {
      this.authorize(request);
      if (this.draining)
        throw new HttpError(503, 'The sandbox server is shutting down; retry once it is back');
      body = await this.route(request);
    } catch (error) {
      status = error instanceof HttpError ? error.status : 500;
      body = { error: error instanceof HttpError ? error.message : 'Internal error' };
      if (status === 500) console.error('sandbox server: internal error', error);
    }
    if (body instanceof StreamedResults) return body.writeTo(response);
    if (body instanceof StreamedBody) {
      response.writeHead(200, { 'content-type': body.contentType });
      // Cut short (the client went away, or a read failed midway): the connection ends without the gzip trailer.
      await pipeline(body.stream, response).catch(() => undefined);
      return;
    }
    if (body instanceof BinaryBody) {
      response.writeHead(200, { 'content-type': body.contentType, 'content-length': body.data.length });
      response.end(body.data);
      return;
    }
    // An answer before the whole request body was read (an upload over its limit): the rest is not read.
    const unread = !request.complete && status >= 400;
    response.writeHead(status, {
      'content-type': 'application/json',
      ...(unread ? { connection: 'close' } : {}),
    });
    response.end(JSON.stringify(body));
  }
}
