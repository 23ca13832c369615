import { createHash } from 'node:crypto';
import { Pool } from 'undici';
import { z } from 'zod';
import { describeZodError } from '../common/agent-input';
import type { McpStdioServer } from '../common/mcp-servers';
import { MCP_LIST_TIMEOUT_MS, type McpToolDescription } from '../common/mcp-tool-session';
import type { SandboxPolicy, ToolCall, ToolResult } from '../sandbox/tool-call';

/** A sandbox server the worker may send tool calls to. */
export interface SandboxEndpoint {
  url: string;
  token: string;
}

export interface ToolExecutorOptions {
  endpoints: SandboxEndpoint[];
  /** A batch opens with its first call and is sent this long after (SEED-BEHAVIOURS 28). */
  windowMs?: number;
  /** A batch is sent at once when it holds this many calls. */
  maxBatch?: number;
}

/** Figures of the executor, for logs and benchmarks. */
export interface ToolExecutorStats {
  calls: number;
  batches: number;
  /** Results that were not a success, plus batches lost in transport (whose calls the activity retries). */
  errors: number;
  /** Milliseconds from a call's arrival to its result, over the most recent calls. */
  latencyMs: { count: number; p50: number; p99: number };
  /** Calls by latency since the start: upper bound in ms ("+Inf" last) → count. */
  histogram: Record<string, number>;
}

/** Upper bounds (ms) of the latency histogram's buckets. */
const HISTOGRAM_BOUNDS_MS = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000];

interface Pending {
  call: ToolCall;
  arrivedAt: number;
  resolve: (result: ToolResult) => void;
  reject: (error: Error) => void;
}

/** Slack added to the longest call timeout of a batch before the HTTP request gives up. */
const HTTP_SLACK_MS = 30_000;
/**
 * Starting a stdio MCP server and listing its tools: the sandbox server's wait for its start
 * (30 s) and for its list, and slack.
 */
const MCP_LIST_HTTP_TIMEOUT_MS = 30_000 + MCP_LIST_TIMEOUT_MS + 10_000;

const mcpToolListSchema = z.object({
  tools: z.array(
    z.object({
      name: z.string(),
      description: z.string(),
      inputSchema: z.record(z.string(), z.unknown()),
    }),
  ),
});

/** Latencies kept for the percentiles: the most recent ones. */
const LATENCY_SAMPLES = 10_000;

/**
 * Batches the tool calls of every run on this worker per sandbox server: a batch opens with its
 * first call and goes out after `windowMs` or at `maxBatch` calls, as one `POST /batch` over a
 * keep-alive connection pool. Batches do not wait for each other and the server runs the calls of
 * a batch concurrently, so a slow call delays neither a later batch nor its neighbours.
 */
export class ToolExecutor {
  private readonly windowMs: number;
  private readonly maxBatch: number;
  private readonly servers: Array<{
    endpoint: SandboxEndpoint;
    pool: Pool;
    pending: Pending[];
    timer?: NodeJS.Timeout;
  }>;
  private readonly latencies: number[] = [];
  private readonly buckets = new Array<number>(HISTOGRAM_BOUNDS_MS.length + 1).fill(0);
  private counters = { calls: 0, batches: 0, errors: 0 };

  constructor(options: ToolExecutorOptions) {
    if (options.endpoints.length === 0) throw new Error('a tool executor needs at least one sandbox server');
    this.windowMs = options.windowMs ?? 20;
    this.maxBatch = options.maxBatch ?? 200;
    this.servers = options.endpoints.map((endpoint) => ({
      endpoint,
      pool: new Pool(endpoint.url, { connections: 16, keepAliveTimeout: 30_000 }),
      pending: [],
    }));
  }

  /**
   * The server of a trajectory: rendezvous hashing over the configured servers, so every worker,
   * before and after a crash, picks the same one, new trajectories spread evenly, and adding a
   * server moves only the trajectories that now hash to it.
   */
  serverFor(trajectoryId: string): SandboxEndpoint {
    return this.serverIndexed(trajectoryId).endpoint;
  }

  /** Every configured sandbox server, for finding an upload that went to another one than a run's. */
  get endpoints(): SandboxEndpoint[] {
    return this.servers.map((server) => server.endpoint);
  }

  private serverIndexed(trajectoryId: string) {
    let best = this.servers[0]!;
    let bestScore = '';
    for (const server of this.servers) {
      const score = createHash('sha256').update(`${server.endpoint.url}\n${trajectoryId}`).digest('hex');
      if (score > bestScore) {
        best = server;
        bestScore = score;
      }
    }
    return best;
  }

  /** Queues a call into its server's next batch; resolves with its result. */
  execute(call: ToolCall): Promise<ToolResult> {
    const server = this.serverIndexed(call.trajectoryId);
    this.counters.calls += 1;
    return new Promise<ToolResult>((resolve, reject) => {
      server.pending.push({ call, arrivedAt: performance.now(), resolve, reject });
      if (server.pending.length >= this.maxBatch) this.flush(server);
      else server.timer ??= setTimeout(() => this.flush(server), this.windowMs);
    });
  }

  private flush(server: (typeof this.servers)[number]): void {
    clearTimeout(server.timer);
    server.timer = undefined;
    const batch = server.pending.splice(0, server.pending.length);
    if (batch.length === 0) return;
    this.counters.batches += 1;
    void this.send(server, batch);
  }

  private async send(server: (typeof this.servers)[number], batch: Pending[]): Promise<void> {
    const longestMs = Math.max(...batch.map(({ call }) => (call.timeoutS ?? 30) * 1000));
    try {
      const response = await server.pool.request({
        path: '/batch',
        method: 'POST',
        headers: { authorization: `Bearer ${server.endpoint.token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ calls: batch.map(({ call }) => call) }),
        headersTimeout: longestMs + HTTP_SLACK_MS,
        bodyTimeout: longestMs + HTTP_SLACK_MS,
      });
      if (response.statusCode !== 200) {
        const body = (await response.body.json().catch(() => ({}))) as { error?: string };
        // Retryable: the activity fails and its retry gets the stored results of calls that ran.
        throw new Error(
          `sandbox server ${server.endpoint.url} answered ${response.statusCode}: ${body.error ?? ''}`,
        );
      }
      const waiting = new Map(batch.map((pending) => [pending.call.callId, pending]));
      let buffered = '';
      for await (const chunk of response.body) {
        buffered += (chunk as Buffer).toString('utf8');
        let newline;
        while ((newline = buffered.indexOf('\n')) >= 0) {
          const result = JSON.parse(buffered.slice(0, newline)) as ToolResult;
          buffered = buffered.slice(newline + 1);
          const pending = waiting.get(result.callId);
          waiting.delete(result.callId);
          if (pending !== undefined) this.settle(pending, result);
        }
      }
      if (waiting.size > 0) throw new Error(`sandbox server ${server.endpoint.url} ended a batch early`);
    } catch (error) {
      // Calls already settled ignore the rejection.
      this.counters.errors += 1;
      for (const pending of batch) pending.reject(error as Error);
    }
  }

  private settle(pending: Pending, result: ToolResult): void {
    if (!result.success) this.counters.errors += 1;
    const latency = performance.now() - pending.arrivedAt;
    this.latencies.push(latency);
    const bucket = HISTOGRAM_BOUNDS_MS.findIndex((bound) => latency <= bound);
    this.buckets[bucket === -1 ? HISTOGRAM_BOUNDS_MS.length : bucket]! += 1;
    if (this.latencies.length > LATENCY_SAMPLES) this.latencies.shift();
    pending.resolve(result);
  }

  /**
   * Releases a trajectory on its server when its run ends: its stateful shells close, and with
   * `reset` its workspace and stored results are deleted.
   */
  async release(trajectoryId: string, reset: boolean): Promise<void> {
    const server = this.serverIndexed(trajectoryId);
    const response = await server.pool.request({
      path: '/release',
      method: 'POST',
      headers: { authorization: `Bearer ${server.endpoint.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ trajectoryId, reset }),
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    });
    const body = await response.body.text();
    if (response.statusCode !== 200) {
      throw new Error(
        `sandbox server ${server.endpoint.url} answered ${response.statusCode} to release: ${body}`,
      );
    }
  }

  /**
   * The tools of a stdio MCP server, which the trajectory's sandbox server runs in the trajectory's
   * sandbox (starting it on first use). Throws one line naming the server when it cannot list them.
   */
  async listMcpTools(
    trajectoryId: string,
    server: McpStdioServer,
    policy: SandboxPolicy,
    signal?: AbortSignal,
  ): Promise<McpToolDescription[]> {
    const sandbox = this.serverIndexed(trajectoryId);
    const response = await sandbox.pool.request({
      path: '/mcp/tools',
      method: 'POST',
      headers: { authorization: `Bearer ${sandbox.endpoint.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ trajectoryId, server, policy }),
      headersTimeout: MCP_LIST_HTTP_TIMEOUT_MS,
      bodyTimeout: MCP_LIST_HTTP_TIMEOUT_MS,
      signal,
    });
    const text = await response.body.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new Error(
        `sandbox server ${sandbox.endpoint.url} answered ${response.statusCode} with invalid JSON`,
      );
    }
    if (response.statusCode !== 200) {
      const error = (body as { error?: unknown }).error;
      throw new Error(typeof error === 'string' ? error : `sandbox server answered ${response.statusCode}`);
    }
    const parsed = mcpToolListSchema.safeParse(body);
    if (!parsed.success) throw new Error(`unexpected MCP tool list: ${describeZodError(parsed.error)}`);
    return parsed.data.tools;
  }

  /** Counters and latency percentiles so far. */
  stats(): ToolExecutorStats {
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const at = (fraction: number) => sorted[Math.max(0, Math.ceil(fraction * sorted.length) - 1)] ?? 0;
    const histogram = Object.fromEntries(
      this.buckets.map((count, index) => [String(HISTOGRAM_BOUNDS_MS[index] ?? '+Inf'), count]),
    );
    return { ...this.counters, latencyMs: { count: sorted.length, p50: at(0.5), p99: at(0.99) }, histogram };
  }

  /** Closes the connection pools. */
  async close(): Promise<void> {
    await Promise.all(this.servers.map((server) => server.pool.close()));
  }
}
