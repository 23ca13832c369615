import { Pool } from 'undici';
import { z } from 'zod';
import { describeZodError } from '../common/agent-input';
import { clampTimeoutS, SandboxError, toolResultSchema, type ToolResult } from '../sandbox/tool-call';
import type { ExternalToolCall, ToolDescription } from '../sandbox/tool-server';

export interface ToolServerClientOptions {
  /** Base URL of the tool server, such as `http://127.0.0.1:7400`. */
  url: string;
  /** Its bearer token. */
  token: string;
  /** Keep-alive connections at most; default 16, the server's default concurrency. */
  connections?: number;
  /**
   * Added to a call's timeout for the HTTP wait. The server answers a call that runs out of time
   * itself; this slack is for the answer to travel, and the limit catches a server that never does.
   * Default 10 s.
   */
  timeoutSlackMs?: number;
}

/** How long listing the tools may take. */
const LIST_TIMEOUT_MS = 10_000;
const DEFAULT_TIMEOUT_SLACK_MS = 10_000;

const toolListSchema = z.array(
  z.object({
    name: z.string(),
    description: z.string(),
    inputSchema: z.record(z.string(), z.unknown()),
  }),
);

/**
 * The worker's client of one external tool server, over a keep-alive connection pool. Every request
 * has a deadline, the call's own timeout plus slack, so a server that hangs cannot hold an activity
 * forever (the seed's HTTP call had none when no timeout was given). A failed call is a result, not
 * an exception, unless the caller's signal cancelled it.
 */
export class ToolServerClient {
  private readonly pool: Pool;
  private readonly timeoutSlackMs: number;

  constructor(private readonly options: ToolServerClientOptions) {
    this.pool = new Pool(options.url, { connections: options.connections ?? 16, keepAliveTimeout: 30_000 });
    this.timeoutSlackMs = options.timeoutSlackMs ?? DEFAULT_TIMEOUT_SLACK_MS;
  }

  /** The server's tools with the JSON Schema of their arguments; throws a SandboxError on failure. */
  async listTools(signal?: AbortSignal): Promise<ToolDescription[]> {
    try {
      const body = await this.request('GET', '/tools', undefined, LIST_TIMEOUT_MS, signal);
      const parsed = toolListSchema.safeParse(body);
      if (!parsed.success) throw new Error(`unexpected tool list: ${describeZodError(parsed.error)}`);
      return parsed.data;
    } catch (error) {
      if (signal?.aborted) throw error;
      throw new SandboxError(`External tool server failed: ${this.describe(error, LIST_TIMEOUT_MS)}`, {
        cause: error,
      });
    }
  }

  /**
   * Runs one call on the server. Transport and protocol failures come back as
   * `{ success: false, error: 'External tool server failed: …' }`; a cancellation through `signal`
   * (a cancelled activity) rejects instead, so the activity ends as cancelled.
   */
  async execute(call: ExternalToolCall, signal?: AbortSignal): Promise<ToolResult> {
    const timeoutMs = clampTimeoutS(call.timeoutS) * 1000 + this.timeoutSlackMs;
    try {
      const body = await this.request('POST', '/execute', call, timeoutMs, signal);
      const parsed = toolResultSchema.safeParse(body);
      if (!parsed.success) throw new Error(`unexpected result: ${describeZodError(parsed.error)}`);
      return parsed.data;
    } catch (error) {
      if (signal?.aborted) throw error;
      return {
        callId: call.callId,
        success: false,
        output: '',
        error: `External tool server failed: ${this.describe(error, timeoutMs)}`,
        metadata: {},
      };
    }
  }

  /** Closes the connection pool. */
  async close(): Promise<void> {
    await this.pool.close();
  }

  private async request(
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    const response = await this.pool.request({
      path,
      method,
      headers: { authorization: `Bearer ${this.options.token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal,
    });
    const text = await response.body.text();
    if (response.statusCode !== 200) {
      let message = text.slice(0, 300);
      try {
        const { error } = JSON.parse(text) as { error?: unknown };
        if (typeof error === 'string') message = error;
      } catch {
        // Not JSON: the start of the text says enough.
      }
      throw new Error(`${this.options.url} answered HTTP ${response.statusCode}: ${message}`);
    }
    try {
      return JSON.parse(text) as unknown;
    } catch {
      throw new Error(`${this.options.url} answered with invalid JSON`);
    }
  }

  /** One line saying what went wrong, naming the server. */
  private describe(error: unknown, timeoutMs: number): string {
    const code = (error as { code?: unknown }).code;
    if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT')
      return `${this.options.url} did not answer within ${timeoutMs / 1000}s`;
    const message = error instanceof Error ? error.message : String(error);
    const line = message.split('\n')[0] ?? '';
    return line.startsWith(this.options.url) ? line : `${this.options.url}: ${line}`;
  }
}
