import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { describeZodError } from '../common/agent-input';
import { toolInputJsonSchema, validateTools, type ExternalTool } from './external-tool';
import { BearerToken, HttpError, parseBody, readJson } from './http';
import { ExecutionLanes } from './lanes';
import { clampTimeoutS, SandboxError, type ToolResult } from './tool-call';

/** Tool executions a tool server runs at once unless told otherwise (SEED-BEHAVIOURS 43). */
export const DEFAULT_TOOL_SERVER_CONCURRENCY = 16;

export interface ToolServerOptions {
  /** Bearer token every request must carry. */
  token: string;
  /** The tools it offers; checked like a loaded tool module. */
  tools: readonly ExternalTool[];
  /** Executions at once; more calls wait for a free slot. Default 16. */
  concurrency?: number;
}

/**
 * One call of an external tool, as `POST /execute` receives it. Strict: a misspelt field such as
 * `timeout` is an error rather than a silently ignored default.
 */
export const externalToolCallSchema = z
  .object({
    callId: z.string().min(1).max(200),
    tool: z.string().min(1).max(100),
    arguments: z.record(z.string(), z.unknown()).default({}),
    /** Clamped to 1..600 s; 30 s when absent. */
    timeoutS: z.number().positive().optional(),
  })
  .strict();
export type ExternalToolCall = z.infer<typeof externalToolCallSchema>;

/** A tool as `GET /tools` lists it: what a model needs to call it. */
export interface ToolDescription {
  name: string;
  description: string;
  /** JSON Schema of its arguments. */
  inputSchema: Record<string, unknown>;
}

/** Largest request body accepted: tool arguments are model output, a few kilobytes in practice. */
const MAX_BODY_BYTES = 8 * 1024 * 1024;

const toolOutputSchema = z.union([
  z.string(),
  z.object({ output: z.string(), metadata: z.record(z.string(), z.unknown()).optional() }),
]);

/** Why an execution was cut off. */
type AbortReason = 'timeout' | 'disconnected' | 'shutdown';

/**
 * The reason a tool's AbortSignal carries: an Error named like the platform's own (`TimeoutError`,
 * `AbortError`), since tools hand their signal to APIs that reject with its reason.
 */
class ExecutionCutOff extends Error {
  override readonly name: string;

  constructor(readonly why: AbortReason) {
    super(`Tool execution cut off: ${why}`);
    this.name = why === 'timeout' ? 'TimeoutError' : 'AbortError';
  }
}

/** How a tool's `execute` ended. */
type Settled = { ok: true; value: unknown } | { ok: false; error: unknown };

/**
 * The external tool server: runs the tools of a user's module for the workers, over HTTP with a
 * bearer token and JSON bodies validated by zod. Executions are capped (more calls queue) and each
 * has a timeout that aborts the tool's signal. Tool problems — an unknown tool, bad arguments, a
 * throw, a timeout — are `{ success: false }` results; HTTP errors are one-line JSON messages,
 * never stack traces.
 */
export class ToolServer {
  private readonly tools: Map<string, ExternalTool>;
  private readonly descriptions: ToolDescription[];
  private readonly lanes: ExecutionLanes;
  private readonly shutdown = new AbortController();
  private readonly token: BearerToken;
  private server: Server | undefined;
  /** Executions cut off whose tool ignored its signal and has not settled yet. */
  private abandoned = 0;

  constructor(options: ToolServerOptions) {
    const concurrency = options.concurrency ?? DEFAULT_TOOL_SERVER_CONCURRENCY;
    if (!Number.isInteger(concurrency) || concurrency < 1)
      throw new SandboxError(`Tool server concurrency must be a positive integer, got ${concurrency}`);
    const tools = validateTools(options.tools);
    this.tools = new Map(tools.map((tool) => [tool.name, tool]));
    this.descriptions = tools.map((tool) => ({
      name: tool.name,
      description: tool.description,
      inputSchema: toolInputJsonSchema(tool),
    }));
    this.lanes = new ExecutionLanes(concurrency);
    this.token = new BearerToken(options.token);
  }

  /** Starts listening; resolves to the bound port (pass 0 for any free one). */
  async listen(port: number, host = '127.0.0.1'): Promise<number> {
    const server = createServer((request, response) => {
      void this.handle(request, response);
    });
    server.listen(port, host);
    // Rejects on a listen error (port in use): `close` then has nothing to close.
    await once(server, 'listening');
    this.server = server;
    return (server.address() as AddressInfo).port;
  }

  /** Stops accepting requests and aborts the tools still running. */
  async close(): Promise<void> {
    this.shutdown.abort(new ExecutionCutOff('shutdown'));
    const server = this.server;
    if (server === undefined) return;
    server.closeAllConnections();
    server.close();
    await once(server, 'close');
  }

  /**
   * Runs one call to its result. The timeout counts from arrival, queueing included, so the answer
   * comes within the call's timeout and a client waiting that long plus some slack always gets it.
   */
  private async execute(call: ExternalToolCall, disconnected: AbortSignal): Promise<ToolResult> {
    const tool = this.tools.get(call.tool);
    if (tool === undefined) return failure(call.callId, `Unknown tool: ${call.tool}`);
    const parsed = tool.input.safeParse(call.arguments);
    if (!parsed.success) {
      return failure(
        call.callId,
        `Invalid arguments for tool ${tool.name}: ${describeZodError(parsed.error)}`,
      );
    }
    const timeoutS = clampTimeoutS(call.timeoutS);
    const controller = new AbortController();
    const aborted = new Promise<AbortReason>((resolve) =>
      controller.signal.addEventListener(
        'abort',
        () => resolve((controller.signal.reason as ExecutionCutOff).why),
        { once: true },
      ),
    );
    const timer = setTimeout(() => controller.abort(new ExecutionCutOff('timeout')), timeoutS * 1000);
    const sources = [disconnected, this.shutdown.signal];
    const forward = (event: Event) => controller.abort((event.target as AbortSignal).reason);
    for (const source of sources) {
      if (source.aborted) controller.abort(source.reason);
      else source.addEventListener('abort', forward, { once: true });
    }
    try {
      const outcome = await Promise.race([
        // Keyed by callId: copies of one call run one after another, distinct calls in parallel.
        this.lanes.run(call.callId, () => this.runInLane(tool, parsed.data, controller.signal, aborted)),
        aborted,
      ]);
      return toResult(call.callId, tool.name, outcome, timeoutS);
    } finally {
      clearTimeout(timer);
      for (const source of sources) source.removeEventListener('abort', forward);
    }
  }

  /**
   * Runs the tool while it holds a lane. The lane is given back when the call is cut off even if
   * the tool ignores its signal: such a tool goes on in the background (counted in `/health` as
   * `abandoned`), but it cannot wedge the server by never settling.
   */
  private async runInLane(
    tool: ExternalTool,
    input: unknown,
    signal: AbortSignal,
    aborted: Promise<AbortReason>,
  ): Promise<Settled | AbortReason> {
    // Cut off while it waited for the lane: never started.
    if (signal.aborted) return (signal.reason as ExecutionCutOff).why;
    const running = Promise.resolve()
      .then(() => tool.execute(input, { signal }))
      .then(
        (value): Settled => ({ ok: true, value }),
        (error: unknown): Settled => ({ ok: false, error }),
      );
    const first = await Promise.race([running, aborted]);
    if (typeof first === 'string') {
      this.abandoned += 1;
      void running.then(() => {
        this.abandoned -= 1;
      });
    }
    return first;
  }

  private async route(request: IncomingMessage, disconnected: AbortSignal): Promise<unknown> {
    const url = new URL(request.url ?? '/', 'http://tool-server');
    const route = `${request.method ?? 'GET'} ${url.pathname}`;
    switch (route) {
      case 'GET /health':
        return {
          status: 'ok',
          tools: this.tools.size,
          executing: this.lanes.executing,
          concurrency: this.lanes.size,
          abandoned: this.abandoned,
        };
      case 'GET /tools':
        return this.descriptions;
      case 'POST /execute':
        return this.execute(
          parseBody(externalToolCallSchema, await readJson(request, MAX_BODY_BYTES)),
          disconnected,
        );
      default:
        throw new HttpError(404, `No route ${route}`);
    }
  }

  private async handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    // A client that goes away (its own timeout, a cancelled activity) aborts its tool.
    const disconnected = new AbortController();
    response.once('close', () => {
      if (!response.writableFinished) disconnected.abort(new ExecutionCutOff('disconnected'));
    });
    let status = 200;
    let body: unknown;
    try {
      this.token.authorize(request);
      body = await this.route(request, disconnected.signal);
    } catch (error) {
      status = error instanceof HttpError ? error.status : 500;
      body = { error: error instanceof HttpError ? error.message : 'Internal error' };
      if (status === 500) console.error('tool server: internal error', error);
    }
    if (response.destroyed) return;
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(JSON.stringify(body));
  }
}

function failure(callId: string, error: string, metadata: Record<string, unknown> = {}): ToolResult {
  return { callId, success: false, output: '', error, metadata };
}

/** The result of an execution that was cut off or that settled. */
function toResult(
  callId: string,
  toolName: string,
  outcome: Settled | AbortReason,
  timeoutS: number,
): ToolResult {
  switch (outcome) {
    case 'timeout':
      return failure(callId, `Tool ${toolName} timed out after ${timeoutS}s`, { timedOut: true, timeoutS });
    case 'disconnected':
      return failure(callId, `Tool ${toolName} aborted: the client went away`);
    case 'shutdown':
      return failure(callId, `Tool ${toolName} aborted: the tool server is shutting down`);
  }
  if (!outcome.ok) {
    const { error } = outcome;
    // The message only: a stack trace is for the server's operator, not for the model.
    const message = error instanceof Error ? error.message || error.name : String(error);
    return failure(callId, message === '' ? `Tool ${toolName} failed` : message);
  }
  const output = toolOutputSchema.safeParse(outcome.value);
  if (!output.success) {
    return failure(
      callId,
      `Tool ${toolName} returned neither a string nor { output: string, metadata?: object }`,
    );
  }
  return typeof output.data === 'string'
    ? { callId, success: true, output: output.data, metadata: {} }
    : { callId, success: true, output: output.data.output, metadata: output.data.metadata ?? {} };
}
