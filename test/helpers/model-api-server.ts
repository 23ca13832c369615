import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { OpenAIModelSpec } from '../../common/agent-input';

/**
 * One step of a streamed reply, after `delayMs` if given: an event (`data` as it is when a string,
 * else as JSON, with an optional `event:` name), a `: comment` line as proxies send to keep a
 * connection alive, raw text for broken framing, or a wait until a promise settles, so a test
 * decides when a stream goes on.
 */
export type ReplyStep =
  | { data: unknown; event?: string; delayMs?: number }
  | { comment: string; delayMs?: number }
  | { raw: string; delayMs?: number }
  | { until: Promise<unknown>; delayMs?: number };

/** How the server answers one request. */
export interface ScriptedReply {
  /** Default 200. */
  status?: number;
  headers?: Record<string, string>;
  /** A whole body: strings as they are, anything else as JSON. Ignored when `events` is given. */
  body?: unknown;
  /** A streamed body, `text/event-stream` unless the headers say otherwise. */
  events?: ReplyStep[];
  /** After the events: end the reply (default), hold the connection open sending nothing, or cut it. */
  end?: 'finish' | 'stall' | 'cut';
}

/** How a reply ended so far. */
export type ReplyState = 'replying' | 'finished' | 'closed-by-client' | 'cut-by-server';

/** A request as the server received it. */
export interface RecordedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The body parsed as JSON, or its text when it is not JSON. */
  body: unknown;
  /** Which connection carried it: 1 for the first the server accepted. */
  connection: number;
  /** `closed-by-client` when the client hung up before the reply was complete. */
  state: ReplyState;
}

/** A scripted reply, or a function that picks one per request. */
export type ReplySource = ScriptedReply | ((request: RecordedRequest) => ScriptedReply);

/**
 * A local HTTP server that answers like a model API, one scripted reply per request: a status,
 * headers and a body, or a stream of server-sent events written one write at a time, each after an
 * optional delay. A stream may end normally, stall forever, or have its socket destroyed. Every
 * request is recorded with its headers, its JSON body, the connection that carried it, and how its
 * reply ended, so a test sees what a provider sent and whether it hung up early.
 */
export class ModelApiServer {
  /** Every request received, in order. */
  readonly requests: RecordedRequest[] = [];
  private readonly queue: ReplySource[] = [];
  private fallback: ReplySource | undefined;
  private readonly sockets = new Set<Socket>();
  private acceptedConnections = 0;
  /** Ends the waits of replies still playing when the server closes. */
  private readonly closing = new AbortController();

  private constructor(private readonly server: Server) {}

  /** Starts a server on a free port of 127.0.0.1. */
  static async start(): Promise<ModelApiServer> {
    const server = createServer();
    const api = new ModelApiServer(server);
    server.on('connection', (socket) => api.accept(socket));
    server.on('request', (request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        void api.answer(request.method ?? '', request.url ?? '', request.headers, chunks, response);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return api;
  }

  /** `http://127.0.0.1:<port>`. */
  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** Connections accepted since the start: keep-alive shows as fewer connections than requests. */
  get connections(): number {
    return this.acceptedConnections;
  }

  /** Queues replies for the next requests, in order. */
  reply(...replies: ReplySource[]): this {
    this.queue.push(...replies);
    return this;
  }

  /** The reply for requests once the queue is empty; without one they get a 500 saying so. */
  replyAlways(reply: ReplySource): this {
    this.fallback = reply;
    return this;
  }

  /** Destroys every open connection, as a server that crashes would. */
  dropConnections(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  async close(): Promise<void> {
    this.closing.abort();
    this.dropConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: Socket): void {
    this.acceptedConnections += 1;
    connectionNumbers.set(socket, this.acceptedConnections);
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
  }

  private async answer(
    method: string,
    path: string,
    headers: IncomingHttpHeaders,
    chunks: Buffer[],
    response: ServerResponse,
  ): Promise<void> {
    const text = Buffer.concat(chunks).toString('utf8');
    const recorded: RecordedRequest = {
      method,
      path,
      headers,
      body: parseJson(text),
      connection: connectionNumbers.get(response.socket as Socket) ?? 0,
      state: 'replying',
    };
    this.requests.push(recorded);
    response.on('close', () => {
      if (recorded.state === 'replying' && !response.writableFinished) recorded.state = 'closed-by-client';
    });
    const source = this.queue.shift() ?? this.fallback ?? NO_REPLY;
    const reply = typeof source === 'function' ? source(recorded) : source;
    await play(reply, response, recorded, this.closing.signal).catch(() => {
      // The server closed while the reply waited.
    });
  }
}

/** Which connection a socket is, for the requests it carries. */
const connectionNumbers = new WeakMap<Socket, number>();

const NO_REPLY: ScriptedReply = {
  status: 500,
  body: { error: { message: 'the test scripted no reply for this request', type: 'server_error' } },
};

async function play(
  reply: ScriptedReply,
  response: ServerResponse,
  recorded: RecordedRequest,
  closing: AbortSignal,
): Promise<void> {
  const status = reply.status ?? 200;
  if (reply.events === undefined) {
    const body =
      reply.body === undefined
        ? ''
        : typeof reply.body === 'string'
          ? reply.body
          : JSON.stringify(reply.body);
    const type = typeof reply.body === 'string' ? 'text/plain' : 'application/json';
    response.writeHead(status, { 'content-type': type, ...reply.headers });
    response.end(body, () => finish(recorded));
    return;
  }
  response.writeHead(status, {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache',
    ...reply.headers,
  });
  response.flushHeaders();
  for (const step of reply.events) {
    if (step.delayMs !== undefined && step.delayMs > 0)
      await sleep(step.delayMs, undefined, { signal: closing });
    if ('until' in step) await untilClosed(step.until, closing);
    if (recorded.state !== 'replying') return;
    if (!('until' in step)) response.write(serialize(step));
  }
  switch (reply.end ?? 'finish') {
    case 'finish':
      response.end(() => finish(recorded));
      return;
    case 'stall':
      return;
    case 'cut':
      recorded.state = 'cut-by-server';
      response.socket?.destroy();
      return;
  }
}

/** Waits for `promise`, or rejects when the server closes first. */
function untilClosed(promise: Promise<unknown>, closing: AbortSignal): Promise<unknown> {
  return Promise.race([
    promise,
    new Promise((_resolve, reject) => {
      if (closing.aborted) reject(new Error('server closed'));
      closing.addEventListener('abort', () => reject(new Error('server closed')), { once: true });
    }),
  ]);
}

function finish(recorded: RecordedRequest): void {
  if (recorded.state === 'replying') recorded.state = 'finished';
}

/** Steps as the text of an event stream, for a test that hands a body to undici's MockAgent. */
export function eventStreamText(steps: ReplyStep[]): string {
  return steps.map(serialize).join('');
}

function serialize(step: ReplyStep): string {
  if ('until' in step) return '';
  if ('raw' in step) return step.raw;
  if ('comment' in step) return `: ${step.comment}\n\n`;
  const data = typeof step.data === 'string' ? step.data : JSON.stringify(step.data);
  const lines = data.split('\n').map((line) => `data: ${line}`);
  return `${step.event === undefined ? '' : `event: ${step.event}\n`}${lines.join('\n')}\n\n`;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** A tool call of a scripted answer, its arguments JSON in the pieces it is streamed in. */
export interface ScriptedToolCall {
  id: string;
  name: string;
  argumentPieces: string[];
}

/** What a scripted answer says, in the pieces it streams. */
export interface ScriptedAnswer {
  textPieces?: string[];
  toolCalls?: ScriptedToolCall[];
  usage?: { inputTokens: number; outputTokens: number };
}

/**
 * An answer as OpenAI's Chat Completions streams it: a role chunk, content chunks, each tool call's
 * first fragment with its ID and name and then its arguments in pieces, a chunk with the finish
 * reason, a usage chunk with no choices (when usage is given), and `[DONE]`.
 */
export function openaiStream(answer: ScriptedAnswer): ReplyStep[] {
  const chunk = (delta: Record<string, unknown>, finishReason: string | null = null) => ({
    data: {
      id: 'chatcmpl-test',
      object: 'chat.completion.chunk',
      created: 1_700_000_000,
      model: 'test-model',
      choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
      usage: null,
    },
  });
  const calls = answer.toolCalls ?? [];
  const steps: ReplyStep[] = [chunk({ role: 'assistant', content: '', refusal: null })];
  for (const piece of answer.textPieces ?? []) steps.push(chunk({ content: piece }));
  for (const [index, call] of calls.entries()) {
    steps.push(
      chunk({
        tool_calls: [{ index, id: call.id, type: 'function', function: { name: call.name, arguments: '' } }],
      }),
    );
    for (const piece of call.argumentPieces) {
      steps.push(chunk({ tool_calls: [{ index, function: { arguments: piece } }] }));
    }
  }
  steps.push(chunk({}, calls.length > 0 ? 'tool_calls' : 'stop'));
  if (answer.usage !== undefined) {
    const { inputTokens, outputTokens } = answer.usage;
    steps.push({
      data: {
        id: 'chatcmpl-test',
        object: 'chat.completion.chunk',
        created: 1_700_000_000,
        model: 'test-model',
        choices: [],
        usage: {
          prompt_tokens: inputTokens,
          completion_tokens: outputTokens,
          total_tokens: inputTokens + outputTokens,
        },
      },
    });
  }
  steps.push({ data: '[DONE]' });
  return steps;
}

/**
 * An answer as Anthropic's Messages API streams it: `message_start` with the input usage, a
 * `ping`, a text block and one `tool_use` block per call (input as `input_json_delta` pieces),
 * `message_delta` with the stop reason and output usage, and `message_stop`.
 */
export function anthropicStream(answer: ScriptedAnswer): ReplyStep[] {
  const event = (data: { type: string } & Record<string, unknown>): ReplyStep => ({ event: data.type, data });
  const usage = answer.usage ?? { inputTokens: 0, outputTokens: 0 };
  const calls = answer.toolCalls ?? [];
  const steps: ReplyStep[] = [
    event({
      type: 'message_start',
      message: {
        id: 'msg_test',
        type: 'message',
        role: 'assistant',
        content: [],
        model: 'test-model',
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: usage.inputTokens, output_tokens: 1 },
      },
    }),
    event({ type: 'ping' }),
  ];
  let index = 0;
  if (answer.textPieces !== undefined) {
    steps.push(event({ type: 'content_block_start', index, content_block: { type: 'text', text: '' } }));
    for (const text of answer.textPieces) {
      steps.push(event({ type: 'content_block_delta', index, delta: { type: 'text_delta', text } }));
    }
    steps.push(event({ type: 'content_block_stop', index }));
    index += 1;
  }
  for (const call of calls) {
    steps.push(
      event({
        type: 'content_block_start',
        index,
        content_block: { type: 'tool_use', id: call.id, name: call.name, input: {} },
      }),
    );
    for (const partial_json of call.argumentPieces) {
      steps.push(
        event({ type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json } }),
      );
    }
    steps.push(event({ type: 'content_block_stop', index }));
    index += 1;
  }
  steps.push(
    event({
      type: 'message_delta',
      delta: { stop_reason: calls.length > 0 ? 'tool_use' : 'end_turn', stop_sequence: null },
      usage: { output_tokens: usage.outputTokens },
    }),
    event({ type: 'message_stop' }),
  );
  return steps;
}

/** The spec of an OpenAI-compatible model served by `server`, its key read from `apiKeyEnv`. */
export function openaiModelOf(
  server: ModelApiServer,
  apiKeyEnv: string,
  overrides: Partial<OpenAIModelSpec> = {},
): OpenAIModelSpec {
  return {
    provider: 'openai',
    model: 'gpt-test',
    baseUrl: `${server.url}/v1`,
    apiKeyEnv,
    maxOutputTokens: 256,
    stallTimeoutS: 30,
    ...overrides,
  };
}
