import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { JsonTraceSerializer, ProtobufTraceSerializer } from '@opentelemetry/otlp-transformer';
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace-base';
import { Agent, request } from 'undici';
import { z } from 'zod';

/**
 * OTLP/HTTP export of trace spans, configured by the OpenTelemetry environment variables and sent
 * with undici. Tracing is off unless an endpoint variable is set: with none, nothing here runs.
 */

/** Where and how spans are sent. */
export interface OtlpSettings {
  /** The traces URL spans are POSTed to. */
  url: string;
  /** Extra request headers (an API key of a hosted collector). */
  headers: Record<string, string>;
  protocol: 'http/protobuf' | 'http/json';
  /** How long one export may take before it is given up. */
  timeoutMs: number;
  /** The `service.name` resource attribute. */
  serviceName: string;
}

/** A tracing variable that does not parse; its message is the one line a user sees. */
export class OtlpSettingsError extends Error {
  override readonly name = 'OtlpSettingsError';
}

const urlSchema = z
  .url({ protocol: /^https?$/, error: 'an http:// or https:// URL is accepted, e.g. http://localhost:4318' })
  .optional();

/**
 * `key=value` pairs separated by commas, values percent-encoded, as the OTLP exporter
 * specification writes `OTEL_EXPORTER_OTLP_HEADERS`.
 */
const headersSchema = z
  .string()
  .optional()
  .transform((raw, context) => {
    const headers: Record<string, string> = {};
    for (const pair of (raw ?? '').split(',')) {
      if (pair.trim() === '') continue;
      const separator = pair.indexOf('=');
      const key = pair.slice(0, separator).trim();
      let value: string | undefined;
      try {
        value = separator > 0 ? decodeURIComponent(pair.slice(separator + 1).trim()) : undefined;
      } catch {
        value = undefined;
      }
      if (value === undefined || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(key)) {
        context.addIssue({
          code: 'custom',
          message: `'${pair.trim()}' is not a header; accepted: key=value pairs separated by commas, values percent-encoded`,
        });
        return z.NEVER;
      }
      headers[key.toLowerCase()] = value;
    }
    return headers;
  });

/** The empty string counts as unset, as the OpenTelemetry specification says. */
const unsetWhenEmpty = (value: unknown) => (value === '' ? undefined : value);

const environmentSchema = z.object({
  OTEL_EXPORTER_OTLP_ENDPOINT: z.preprocess(unsetWhenEmpty, urlSchema),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.preprocess(unsetWhenEmpty, urlSchema),
  OTEL_EXPORTER_OTLP_HEADERS: headersSchema,
  OTEL_EXPORTER_OTLP_TRACES_HEADERS: headersSchema,
  OTEL_EXPORTER_OTLP_PROTOCOL: z.preprocess(
    unsetWhenEmpty,
    z.enum(['http/protobuf', 'http/json'], { error: 'accepted: http/protobuf or http/json' }).optional(),
  ),
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: z.preprocess(
    unsetWhenEmpty,
    z.enum(['http/protobuf', 'http/json'], { error: 'accepted: http/protobuf or http/json' }).optional(),
  ),
  OTEL_EXPORTER_OTLP_TIMEOUT: z.preprocess(
    unsetWhenEmpty,
    z.coerce.number({ error: 'accepted: milliseconds' }).int().positive().optional(),
  ),
  OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: z.preprocess(
    unsetWhenEmpty,
    z.coerce.number({ error: 'accepted: milliseconds' }).int().positive().optional(),
  ),
  OTEL_SERVICE_NAME: z.preprocess(unsetWhenEmpty, z.string().optional()),
});

/**
 * The export settings from the environment, or undefined when no endpoint is set. The traces
 * endpoint is used as it is; the base endpoint gets `/v1/traces`; the signal's own headers,
 * protocol and timeout win over the general ones. Throws {@link OtlpSettingsError} naming the
 * variable that does not parse.
 */
export function otlpSettingsFromEnvironment(
  environment: NodeJS.ProcessEnv,
  defaultServiceName: string,
): OtlpSettings | undefined {
  const parsed = environmentSchema.safeParse(environment);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const variable = String(issue.path[0]);
    throw new OtlpSettingsError(`${variable} '${environment[variable] ?? ''}': ${issue.message}`);
  }
  const settings = parsed.data;
  const url =
    settings.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ??
    (settings.OTEL_EXPORTER_OTLP_ENDPOINT === undefined
      ? undefined
      : `${settings.OTEL_EXPORTER_OTLP_ENDPOINT.replace(/\/+$/, '')}/v1/traces`);
  if (url === undefined) return undefined;
  return {
    url,
    headers: { ...settings.OTEL_EXPORTER_OTLP_HEADERS, ...settings.OTEL_EXPORTER_OTLP_TRACES_HEADERS },
    protocol:
      settings.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? settings.OTEL_EXPORTER_OTLP_PROTOCOL ?? 'http/protobuf',
    timeoutMs: settings.OTEL_EXPORTER_OTLP_TRACES_TIMEOUT ?? settings.OTEL_EXPORTER_OTLP_TIMEOUT ?? 10_000,
    serviceName: settings.OTEL_SERVICE_NAME ?? defaultServiceName,
  };
}

/** Failures are told at most once in this window, with how many spans were dropped since. */
const FAILURE_REPORT_WINDOW_MS = 60_000;

/**
 * A span exporter that POSTs each batch to an OTLP/HTTP collector with undici. A batch that
 * cannot be delivered (no collector, a refusal, a timeout) is dropped, not retried: traces are
 * worth less than the runs they describe, which never wait for them. Failures reach `log` at most
 * once a minute.
 */
export class OtlpHttpSpanExporter implements SpanExporter {
  private readonly dispatcher: Agent;
  private readonly pending = new Set<Promise<void>>();
  private lastReportAt = Number.NEGATIVE_INFINITY;
  private droppedSinceReport = 0;
  private closed = false;

  constructor(
    private readonly settings: OtlpSettings,
    private readonly log: (message: string) => void,
  ) {
    this.dispatcher = new Agent({ connections: 2, connectTimeout: Math.min(settings.timeoutMs, 5_000) });
  }

  export(spans: ReadableSpan[], resultCallback: (result: ExportResult) => void): void {
    if (this.closed) {
      resultCallback({ code: ExportResultCode.FAILED, error: new Error('the exporter is shut down') });
      return;
    }
    const sent = this.send(spans).then(
      () => resultCallback({ code: ExportResultCode.SUCCESS }),
      (error: unknown) => {
        this.reportFailure(spans.length, error);
        resultCallback({ code: ExportResultCode.FAILED, error: error as Error });
      },
    );
    this.pending.add(sent);
    void sent.finally(() => this.pending.delete(sent));
  }

  /** Waits for the exports under way. */
  async forceFlush(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  async shutdown(): Promise<void> {
    this.closed = true;
    await this.forceFlush();
    await this.dispatcher.close();
  }

  private async send(spans: ReadableSpan[]): Promise<void> {
    const json = this.settings.protocol === 'http/json';
    const body = (json ? JsonTraceSerializer : ProtobufTraceSerializer).serializeRequest(spans);
    if (body === undefined) throw new Error('the spans could not be encoded');
    const response = await request(this.settings.url, {
      method: 'POST',
      dispatcher: this.dispatcher,
      headers: {
        ...this.settings.headers,
        'content-type': json ? 'application/json' : 'application/x-protobuf',
      },
      body,
      signal: AbortSignal.timeout(this.settings.timeoutMs),
    });
    await response.body.dump();
    if (response.statusCode < 200 || response.statusCode >= 300) {
      throw new Error(`the collector answered HTTP ${response.statusCode}`);
    }
  }

  private reportFailure(spanCount: number, error: unknown): void {
    this.droppedSinceReport += spanCount;
    const now = Date.now();
    if (now - this.lastReportAt < FAILURE_REPORT_WINDOW_MS) return;
    const reason = error instanceof Error ? error.message : String(error);
    this.log(
      `Trace export to ${this.settings.url} failed (${reason}); dropped ${this.droppedSinceReport} spans; failures in the next minute drop their spans unreported`,
    );
    this.lastReportAt = now;
    this.droppedSinceReport = 0;
  }
}
