import { open } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { AGENT_NAME_PATTERN } from '../common/constants';
import { chatText, cutWithNote, terminalSafeJson, visibleJson, visibleProse } from '../common/display-text';
import type { AgentNotification } from '../common/notification';
import { ensurePrivateFolder, PRIVATE_FILE_MODE, tightenOpenFile } from '../sandbox/private-files';

/** Where the notifier reports what it shows and what went wrong; fields are for structured loggers. */
export type NotifierLog = (level: 'info' | 'warn', message: string, fields?: Record<string, unknown>) => void;

/** Limits of webhook delivery; the defaults suit chat webhooks. */
export interface WebhookOptions {
  /** Attempts per notice, the first included; default 3. */
  attempts?: number;
  /** Deadline of one attempt, connection included; default 5000 ms. */
  timeoutMs?: number;
  /** Wait before the second attempt, doubling after each; default 500 ms. */
  backoffMs?: number;
  /** Notices waiting for their turn at most; beyond it the oldest waiting is dropped. Default 100. */
  maxPending?: number;
}

export interface NotifierOptions {
  /** `$AGENTS_HOME`: log files go to `<home>/logs/<agent>/log.jsonl`. */
  home: string;
  /** Default: `console.log` for info, `console.warn` for warnings, fields left out. */
  log?: NotifierLog;
  webhook?: WebhookOptions;
}

/** Counters of webhook delivery since the notifier was created. */
export interface NotifierStats {
  delivered: number;
  failed: number;
  dropped: number;
  /** Waiting plus being sent. */
  pending: number;
}

/** How far back a log file is searched for a notice already written: appends arrive in order. */
const LOG_TAIL_BYTES = 256 * 1024;
/** Longest wait a `Retry-After` header may impose. */
const MAX_RETRY_AFTER_MS = 10_000;
/** How long `close` waits for webhook deliveries still under way. */
const CLOSE_GRACE_MS = 5_000;
/** How much of a request's input a notice shows; past it, the notice says how much more there is. */
const NOTICE_INPUT_MAX_CHARS = 4_000;

interface WebhookDelivery {
  url: string;
  notification: AgentNotification;
}

/** Why an attempt failed, and whether another attempt may do better. */
class WebhookAttemptError extends Error {
  override readonly name = 'WebhookAttemptError';
  constructor(
    message: string,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/**
 * Delivers the notices of agent runs to the sinks a run chose: the worker's log, a per-agent
 * `log.jsonl`, and a chat webhook. A notice arrives as the input of the `notify` activity, which
 * the workflow may run again after a crash, so the log file keeps one line per notice ID. A sink
 * that fails is logged and never fails the activity: the history already holds every notice, and a
 * retried activity would only repeat the sinks that worked. Webhooks are sent in the background,
 * one at a time per URL so a chat shows a run's notices in order, through a bounded queue, so a
 * slow or dead webhook neither delays a run nor grows the worker's memory.
 */
export class Notifier {
  private readonly home: string;
  private readonly log: NotifierLog;
  private readonly attempts: number;
  private readonly timeoutMs: number;
  private readonly backoffMs: number;
  private readonly maxPending: number;
  private readonly agent: Agent;
  /** Aborts attempts and backoff waits still under way when `close` gives up waiting. */
  private readonly closing = new AbortController();
  private closed = false;
  /** Appends in progress per log file; each waits for the one before, so lines never interleave. */
  private readonly appendQueues = new Map<string, Promise<void>>();
  /** Webhook notices not yet started, oldest first. */
  private readonly waiting: WebhookDelivery[] = [];
  /** URLs with a delivery under way. */
  private readonly sending = new Set<string>();
  private readonly idleListeners = new Set<() => void>();
  private counters = { delivered: 0, failed: 0, dropped: 0 };

  constructor(options: NotifierOptions) {
    this.home = options.home;
    const log: NotifierLog =
      options.log ??
      ((level, message) => {
        if (level === 'warn') console.warn(message);
        else console.log(message);
      });
    // A log that throws must not fail a delivery, nor reject a background send the worker cannot catch.
    this.log = (level, message, fields) => {
      try {
        log(level, message, fields);
      } catch {
        // Nowhere left to report to; the notice is in the history regardless.
      }
    };
    this.attempts = Math.max(1, options.webhook?.attempts ?? 3);
    this.timeoutMs = options.webhook?.timeoutMs ?? 5_000;
    this.backoffMs = options.webhook?.backoffMs ?? 500;
    this.maxPending = Math.max(1, options.webhook?.maxPending ?? 100);
    this.agent = new Agent({
      connect: { timeout: this.timeoutMs },
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      keepAliveTimeout: 10_000,
    });
  }

  /**
   * Sends a notice to the sinks it names. Resolves once the console line and the log file line are
   * written and the webhook delivery is queued; never rejects.
   */
  async deliver(notification: AgentNotification): Promise<void> {
    // The workflow always names the sinks; an input without them still reaches the worker's log.
    const sinks = notification.sinks ?? { console: true, logFile: false };
    if (sinks.webhookUrl !== undefined) this.guard('webhook', notification, () => this.enqueue(notification));
    if (sinks.console) this.guard('console', notification, () => this.writeConsole(notification));
    if (sinks.logFile && notification.record !== undefined) {
      try {
        await this.appendLogLine(notification);
      } catch (error) {
        this.warnSinkFailed('log file', notification, error);
      }
    }
  }

  /** Webhook counters, for the worker's log. */
  stats(): NotifierStats {
    return { ...this.counters, pending: this.waiting.length + this.sending.size };
  }

  /**
   * Waits up to 5 s for webhook deliveries still waiting or under way, abandons the rest, and closes
   * the connections. Notices delivered afterwards reach the console and the log file only.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.whenIdle(CLOSE_GRACE_MS);
    const abandoned = this.waiting.splice(0, this.waiting.length);
    this.counters.dropped += abandoned.length;
    this.closing.abort(new Error('the notifier closed'));
    if (abandoned.length > 0 || this.sending.size > 0)
      this.log('warn', `Webhook notices abandoned at shutdown: ${abandoned.length + this.sending.size}`);
    await this.agent.destroy();
  }

  private writeConsole(notification: AgentNotification): void {
    const text = visibleProse(noticeText(notification));
    this.log('info', `[${notification.agent}] iteration ${notification.iteration}: ${text}`, {
      agent: notification.agent,
      kind: notification.kind,
      iteration: notification.iteration,
      id: notification.id,
    });
  }

  /**
   * Appends the notice's iteration record as one JSON line, unless a line with its ID is already in
   * the file: the `notify` activity runs again when a worker crashed after writing.
   */
  private appendLogLine(notification: AgentNotification): Promise<void> {
    const { agent, id, runKey, record } = notification;
    // Names are validated at the edge; the pattern has no `/` nor `.`, so no name leaves the logs folder.
    if (!AGENT_NAME_PATTERN.test(agent))
      return Promise.reject(new Error(`invalid agent name '${agent.slice(0, 80)}'`));
    const folder = path.join(this.home, 'logs', agent);
    const file = path.join(folder, 'log.jsonl');
    // `id` first: the duplicate check looks for it at the start of a line. Exact data, with what a
    // terminal would obey written as JSON escapes, for whoever reads the file with `tail -f`.
    const line = terminalSafeJson({ id, agent, runKey, ...record });
    return this.serializeAppend(file, async () => {
      await ensurePrivateFolder(folder);
      const handle = await open(file, 'a+', PRIVATE_FILE_MODE);
      try {
        await tightenOpenFile(handle);
        const { size } = await handle.stat();
        const start = Math.max(0, size - LOG_TAIL_BYTES);
        const tail = Buffer.alloc(size - start);
        if (tail.length > 0) await handle.read(tail, 0, tail.length, start);
        const lines = tail.toString('utf8').split('\n');
        // A tail that begins inside the file begins inside a line: that piece is not a line.
        if (start > 0) lines.shift();
        const prefix = `{"id":${JSON.stringify(id)},`;
        if (lines.some((existing) => existing.startsWith(prefix))) return;
        // A line cut short by a crash mid-write is closed, so this one starts on its own line.
        const separator = tail.length > 0 && tail[tail.length - 1] !== 0x0a ? '\n' : '';
        await handle.appendFile(`${separator}${line}\n`, 'utf8');
      } finally {
        await handle.close();
      }
    });
  }

  private serializeAppend(file: string, task: () => Promise<void>): Promise<void> {
    const previous = this.appendQueues.get(file) ?? Promise.resolve();
    const run = previous.then(task);
    const settled = run.catch(() => undefined);
    this.appendQueues.set(file, settled);
    void settled.then(() => {
      if (this.appendQueues.get(file) === settled) this.appendQueues.delete(file);
    });
    return run;
  }

  private enqueue(notification: AgentNotification): void {
    const url = notification.sinks.webhookUrl!;
    if (!/^https?:$/.test(protocolOf(url))) throw new Error('the webhook URL is not an http(s) URL');
    if (this.closed) {
      this.counters.dropped += 1;
      return;
    }
    this.waiting.push({ url, notification });
    while (this.waiting.length > this.maxPending) {
      const dropped = this.waiting.shift()!;
      this.counters.dropped += 1;
      this.log(
        'warn',
        `Webhook notice ${dropped.notification.id} of ${dropped.notification.agent} dropped: more than ${this.maxPending} waiting`,
        { agent: dropped.notification.agent, id: dropped.notification.id, origin: originOf(dropped.url) },
      );
    }
    this.pump();
  }

  /** Starts the oldest waiting notice of every URL that has none under way. */
  private pump(): void {
    for (let index = 0; index < this.waiting.length;) {
      const delivery = this.waiting[index]!;
      if (this.sending.has(delivery.url)) {
        index += 1;
        continue;
      }
      this.waiting.splice(index, 1);
      this.sending.add(delivery.url);
      void this.send(delivery).finally(() => {
        this.sending.delete(delivery.url);
        this.pump();
        if (this.waiting.length === 0 && this.sending.size === 0) {
          for (const listener of this.idleListeners) listener();
        }
      });
    }
  }

  /** Sends one notice with its retries; reports the outcome and never rejects. */
  private async send({ url, notification }: WebhookDelivery): Promise<void> {
    const body = JSON.stringify({
      text: chatText(`${notification.agent}: ${noticeText(notification)}`),
      agent: notification.agent,
      kind: notification.kind,
      iteration: notification.iteration,
      at: notification.at,
      id: notification.id,
    });
    let lastError: unknown;
    let attempts = 0;
    for (let attempt = 1; attempt <= this.attempts; attempt += 1) {
      attempts = attempt;
      try {
        await this.attempt(url, body);
        this.counters.delivered += 1;
        return;
      } catch (error) {
        lastError = error;
        if (this.closing.signal.aborted) break;
        const retryable = !(error instanceof WebhookAttemptError) || error.retryable;
        if (!retryable || attempt === this.attempts) break;
        const waitMs =
          error instanceof WebhookAttemptError && error.retryAfterMs !== undefined
            ? error.retryAfterMs
            : this.backoffMs * 2 ** (attempt - 1);
        try {
          await sleep(waitMs, undefined, { signal: this.closing.signal });
        } catch {
          break;
        }
      }
    }
    this.counters.failed += 1;
    this.log(
      'warn',
      `Webhook ${originOf(url)} did not take notice ${notification.id} of ${notification.agent} after ${attempts} attempt${attempts === 1 ? '' : 's'}: ${this.describe(lastError, url)}`,
      { agent: notification.agent, id: notification.id, origin: originOf(url) },
    );
  }

  private async attempt(url: string, body: string): Promise<void> {
    const response = await request(url, {
      method: 'POST',
      dispatcher: this.agent,
      headers: { 'content-type': 'application/json' },
      body,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      signal: AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.closing.signal]),
    });
    // Read the answer away so the connection can serve the next notice.
    await response.body.dump();
    const status = response.statusCode;
    if (status >= 200 && status < 300) return;
    const retryable = status === 429 || status >= 500;
    throw new WebhookAttemptError(
      `HTTP ${status}`,
      retryable,
      retryable ? parseRetryAfter(response.headers['retry-after']) : undefined,
    );
  }

  /** One line, without the URL's path or query: chat webhook URLs carry their secret there. */
  private describe(error: unknown, url: string): string {
    const name = (error as { name?: unknown } | undefined)?.name;
    const code = (error as { code?: unknown } | undefined)?.code;
    let message: string;
    if (
      name === 'TimeoutError' ||
      code === 'UND_ERR_HEADERS_TIMEOUT' ||
      code === 'UND_ERR_BODY_TIMEOUT' ||
      code === 'UND_ERR_CONNECT_TIMEOUT'
    )
      message = `no answer within ${this.timeoutMs / 1000}s`;
    else message = error instanceof Error ? error.message : String(error);
    return redact(message.split('\n')[0] ?? '', url).slice(0, 300);
  }

  private guard(sink: string, notification: AgentNotification, action: () => void): void {
    try {
      action();
    } catch (error) {
      this.warnSinkFailed(sink, notification, error);
    }
  }

  private warnSinkFailed(sink: string, notification: AgentNotification, error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    const url = notification.sinks?.webhookUrl;
    const line = (message.split('\n')[0] ?? '').slice(0, 300);
    this.log(
      'warn',
      `Notice ${notification.id} of ${notification.agent} not written to the ${sink}: ${url === undefined ? line : redact(line, url)}`,
      { agent: notification.agent, id: notification.id, sink },
    );
  }

  private whenIdle(timeoutMs: number): Promise<void> {
    if (this.waiting.length === 0 && this.sending.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.idleListeners.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.idleListeners.add(done);
    });
  }
}

/**
 * What a person reads of a notice: its text, and for a request waiting for approval the tool call's
 * whole input, since the text's description of the call is cut short. Neutralizing is left to each
 * sink, which knows what its reader's screen obeys.
 */
function noticeText(notification: AgentNotification): string {
  const { request } = notification;
  if (notification.kind !== 'approval_needed' || request === undefined) return notification.text;
  const input = cutWithNote(
    visibleJson(request.input),
    NOTICE_INPUT_MAX_CHARS,
    `agents pending ${notification.agent} shows them all`,
  );
  return `${notification.text}\nInput of ${request.tool}: ${input}`;
}

/** The scheme, host and port of a URL: what may be logged of a webhook. */
function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '(invalid URL)';
  }
}

/** The scheme of a URL, such as `https:`; empty when it does not parse. */
function protocolOf(url: string): string {
  try {
    return new URL(url).protocol;
  } catch {
    return '';
  }
}

/** Replaces any mention of the URL beyond its origin with the origin alone. */
function redact(message: string, url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return message.split(url).join('(webhook URL)');
  }
  let redacted = message.split(url).join(parsed.origin).split(parsed.href).join(parsed.origin);
  for (const secret of [`${parsed.pathname}${parsed.search}`, parsed.pathname, parsed.search]) {
    if (secret.length > 1) redacted = redacted.split(secret).join('…');
  }
  return redacted;
}

/** A numeric `Retry-After` in milliseconds, at most 10 s; a date or nonsense gives undefined. */
function parseRetryAfter(header: string | string[] | undefined): number | undefined {
  const value = Array.isArray(header) ? header[0] : header;
  if (value === undefined || !/^\s*\d+(\.\d+)?\s*$/.test(value)) return undefined;
  return Math.min(Number(value) * 1000, MAX_RETRY_AFTER_MS);
}
