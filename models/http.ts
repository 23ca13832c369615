import { STATUS_CODES } from 'node:http';
import { ApplicationFailure } from '@temporalio/common';
import { Agent, request as sendRequest, type Dispatcher } from 'undici';
import type { z } from 'zod';
import type { AnthropicModelSpec, OpenAIModelSpec } from '../common/agent-input';
import {
  backoffMs,
  describeModel,
  modelRejected,
  modelUnavailable,
  redact,
  retryAfterMs,
} from './model-failures';
import type { ModelRequest } from './model-provider';
import { parseServerSentEvents, type ServerSentEvent } from './sse';

/** The providers that call a model API over HTTP. */
export type RemoteModelSpec = OpenAIModelSpec | AnthropicModelSpec;

/** How long an idle connection is kept for the next call. */
const KEEP_ALIVE_MS = 30_000;
const CONNECT_TIMEOUT_MS = 10_000;
/** How long an API may think before its response starts; a large prompt can take a while. */
const HEADERS_TIMEOUT_MS = 60_000;
/** Characters of an API's error text kept in a failure message. */
const MESSAGE_CHARS = 300;
/** Characters of a malformed stream line quoted in a failure message. */
const QUOTED_LINE_CHARS = 100;
/** Bytes of an error response read for its message; the rest is dropped with the connection. */
const ERROR_BODY_BYTES = 64 * 1024;

/** Errors raised by undici for a call it was given wrongly: a bug here, never the API's fault. */
const PROGRAMMING_ERROR_CODES = new Set([
  'UND_ERR_INVALID_ARG',
  'UND_ERR_INVALID_RETURN_VALUE',
  'UND_ERR_NOT_SUPPORTED',
]);

/**
 * The HTTP client of every remote model call in a worker: one connection pool per API origin,
 * shared by both providers, so consecutive turns reuse a warm TLS connection. The per-call body
 * timeout (the spec's `stallTimeoutS`) is set on each request.
 */
export function createModelDispatcher(): Agent {
  return new Agent({
    keepAliveTimeout: KEEP_ALIVE_MS,
    connect: { timeout: CONNECT_TIMEOUT_MS },
    headersTimeout: HEADERS_TIMEOUT_MS,
  });
}

const closing = new WeakMap<Dispatcher, Promise<void>>();

/** Closes a dispatcher once, however many providers share it and ask. */
export function closeDispatcher(dispatcher: Dispatcher): Promise<void> {
  let closed = closing.get(dispatcher);
  if (closed === undefined) {
    closed = dispatcher.close();
    closing.set(dispatcher, closed);
  }
  return closed;
}

/** What a remote provider is built with. */
export interface RemoteModelOptions {
  /** The worker's shared pool, from {@link createModelDispatcher}. */
  dispatcher: Dispatcher;
  /** Where API keys are read, at each call; default `process.env`. */
  env?: NodeJS.ProcessEnv;
}

/** What both remote providers share: the worker's connection pool, where keys are read, closing. */
export abstract class RemoteModel {
  protected readonly dispatcher: Dispatcher;
  protected readonly environment: NodeJS.ProcessEnv;

  constructor(options: RemoteModelOptions) {
    this.dispatcher = options.dispatcher;
    this.environment = options.env ?? process.env;
  }

  /** Closes the connection pool, once however many providers share it. */
  close(): Promise<void> {
    return closeDispatcher(this.dispatcher);
  }
}

/**
 * A failure a provider reads in the stream itself (an error event, a malformed line); the stream
 * helper turns it into a model failure with the model named and the key cut out.
 */
export class ModelStreamError extends Error {
  override readonly name = 'ModelStreamError';
  constructor(
    message: string,
    /** Whether another attempt may succeed: a server error or a garbled stream, not a refused request. */
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/**
 * The API key for a call, read from the worker's environment at call time so a rotated key is
 * picked up. Unset is fine for a local server (vLLM, Ollama, LM Studio), which gets no auth header;
 * for the vendor's own host it is a rejection naming the variable to set.
 */
export function readApiKey(
  spec: RemoteModelSpec,
  environment: NodeJS.ProcessEnv,
  officialHost: string,
): string | undefined {
  const key = environment[spec.apiKeyEnv];
  if (key !== undefined && key !== '') return key;
  if (isOfficialHost(spec.baseUrl, officialHost)) {
    throw modelRejected(
      `${describeModel(spec)}: no API key: set ${spec.apiKeyEnv} in the worker's environment`,
    );
  }
  return undefined;
}

/** Whether a URL points at the vendor's own API, whose dialect may differ from compatible servers'. */
export function isOfficialHost(baseUrl: string, officialHost: string): boolean {
  return new URL(baseUrl).hostname === officialHost;
}

/** The URL of an endpoint under an API's base URL, whether or not the base ends in "/". */
export function endpointUrl(baseUrl: string, path: string): string {
  return `${baseUrl.replace(/\/+$/, '')}${path}`;
}

/** One streaming call of a model API. */
export interface ModelStreamCall {
  dispatcher: Dispatcher;
  request: ModelRequest<RemoteModelSpec>;
  url: string;
  /** The provider's headers, auth included; JSON content type and event-stream accept are added. */
  headers: Record<string, string>;
  body: unknown;
  /** Cut out of every message, wherever an API or proxy echoes it. */
  apiKey: string | undefined;
}

/**
 * Posts a streaming call and hands each event to `onEvent`, which returns `'final'` at the event
 * that completes the answer (`[DONE]`, `message_stop`). Every event and keep-alive comment counts
 * as progress (the activity's heartbeat). Everything that goes wrong ends as a model failure:
 * `ModelUnavailable` (retried) for 408, 409, 429, 5xx, network errors, a stall longer than
 * `stallTimeoutS` and a stream that ends before its final event, with the API's `Retry-After` or
 * backoff as the retry delay; `ModelRequestRejected` for other 4xx. A cancellation through the
 * request's signal is rethrown as it is, so the activity ends as cancelled.
 */
export async function streamModelEvents(
  call: ModelStreamCall,
  onEvent: (event: ServerSentEvent) => 'final' | void,
): Promise<void> {
  const { request } = call;
  const fail = failures(call);
  let complete = false;
  try {
    const response = await sendRequest(call.url, {
      dispatcher: call.dispatcher,
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...call.headers },
      body: JSON.stringify(call.body),
      signal: request.signal,
      bodyTimeout: request.spec.stallTimeoutS * 1000,
    });
    if (response.statusCode >= 300) {
      const text = await readLimitedText(response.body);
      const detail = `HTTP ${response.statusCode}: ${apiErrorText(text) ?? STATUS_CODES[response.statusCode] ?? 'no details'}`;
      if (!isRetryableStatus(response.statusCode)) throw fail.rejected(detail);
      throw fail.unavailable(detail, retryAfterMs(response.headers));
    }
    if (String(response.headers['content-type'] ?? '').startsWith('application/json')) {
      throw notAStream(await readLimitedText(response.body));
    }
    const events = parseServerSentEvents(response.body, { onComment: () => request.onProgress() });
    for await (const event of events) {
      request.onProgress();
      // Events after the final one (none are expected) are read only to leave the connection reusable.
      if (!complete) complete = onEvent(event) === 'final';
    }
    if (!complete) throw new ModelStreamError('stream ended early, before its final event', true);
  } catch (error) {
    if (request.signal.aborted) throw request.signal.reason instanceof Error ? request.signal.reason : error;
    if (error instanceof ApplicationFailure) throw error;
    if (error instanceof ModelStreamError) {
      throw error.retryable ? fail.unavailable(error.message) : fail.rejected(error.message);
    }
    // The answer was whole when the connection dropped: nothing is lost.
    if (complete) return;
    const network = describeNetworkError(error, request.spec);
    if (network === undefined) throw error;
    throw fail.unavailable(network, undefined, error as Error);
  }
}

/**
 * Parses a stream event's data as JSON of the given shape. A line that does not parse is blamed
 * on the stream, not the request: a proxy that garbles a stream usually does not do it twice.
 */
export function parseEventData<Schema extends z.ZodType>(
  event: ServerSentEvent,
  schema: Schema,
): z.output<Schema> {
  let json: unknown;
  try {
    json = JSON.parse(event.data);
  } catch {
    throw new ModelStreamError(`malformed stream data: ${quoteLine(event.data)}`, true);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new ModelStreamError(`unexpected stream data: ${quoteLine(event.data)}`, true);
  return parsed.data;
}

/** 408, 409, 429 and 5xx (Anthropic's 529 "overloaded" included) pass; other statuses will not. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 409 || status === 429 || status >= 500;
}

/**
 * The error message in an API's error body: `{"error": {"message": …}}` (OpenAI, Anthropic, vLLM),
 * `{"error": "…"}` (Ollama) or `{"message": …}`; the text itself when it is not JSON.
 */
function apiErrorText(body: string): string | undefined {
  const text = body.trim();
  if (text === '') return undefined;
  try {
    const json: unknown = JSON.parse(text);
    const message = errorMessageOf(json);
    if (message !== undefined) return message;
  } catch {
    // Not JSON: an HTML page from a proxy, or plain text.
  }
  return text;
}

function errorMessageOf(json: unknown): string | undefined {
  if (typeof json !== 'object' || json === null) return undefined;
  const { error, message } = json as { error?: unknown; message?: unknown };
  if (typeof error === 'string') return error;
  if (typeof error === 'object' && error !== null) {
    const inner = (error as { message?: unknown }).message;
    if (typeof inner === 'string') return inner;
  }
  return typeof message === 'string' ? message : undefined;
}

/** A JSON answer where a stream was asked for: an in-band error, or a server that cannot stream. */
function notAStream(body: string): ModelStreamError {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  const message = errorMessageOf(json);
  if (message !== undefined) return new ModelStreamError(message, true);
  return new ModelStreamError(
    'the API answered with JSON, not an event stream: does it support streaming?',
    false,
  );
}

/** Builds a call's failures: one line, cut short, the model named, the key redacted. */
function failures(call: ModelStreamCall) {
  const { spec, attempt } = call.request;
  const message = (detail: string) => {
    const line = detail.replace(/\s+/g, ' ').trim();
    const short = line.length <= MESSAGE_CHARS ? line : `${line.slice(0, MESSAGE_CHARS)}…`;
    return redact(`${describeModel(spec)}: ${short}`, [call.apiKey]);
  };
  return {
    unavailable: (detail: string, delayMs?: number, cause?: Error) =>
      modelUnavailable(message(detail), delayMs ?? backoffMs(attempt), cause),
    rejected: (detail: string) => modelRejected(message(detail)),
  };
}

/** What a transport error means, in words; undefined when it is not a transport error at all. */
function describeNetworkError(error: unknown, spec: RemoteModelSpec): string | undefined {
  if (!(error instanceof Error)) return undefined;
  const code = (error as { code?: unknown }).code;
  if (typeof code !== 'string' || PROGRAMMING_ERROR_CODES.has(code)) return undefined;
  switch (code) {
    case 'UND_ERR_BODY_TIMEOUT':
      return `stream stalled: no data for ${spec.stallTimeoutS} s`;
    case 'UND_ERR_HEADERS_TIMEOUT':
      return `no response within ${HEADERS_TIMEOUT_MS / 1000} s`;
    case 'UND_ERR_CONNECT_TIMEOUT':
      return `could not connect to ${new URL(spec.baseUrl).host} within ${CONNECT_TIMEOUT_MS / 1000} s`;
    case 'UND_ERR_SOCKET':
      return `connection closed by the server: ${error.message}`;
    case 'ECONNREFUSED':
      return `connection refused by ${new URL(spec.baseUrl).host}`;
    default:
      return `network error: ${error.message.includes(code) ? error.message : `${code}: ${error.message}`}`;
  }
}

/** The start of a body as text; a longer body is cut off, which costs its connection. */
async function readLimitedText(body: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of body) {
    chunks.push(chunk);
    length += chunk.length;
    if (length >= ERROR_BODY_BYTES) break;
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A stream line as quoted in a message; a multi-line one becomes one line with the message. */
function quoteLine(text: string): string {
  return `"${text.length <= QUOTED_LINE_CHARS ? text : `${text.slice(0, QUOTED_LINE_CHARS)}…`}"`;
}
