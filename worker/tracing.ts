import { AsyncLocalStorage } from 'node:async_hooks';
import { ROOT_CONTEXT, trace, type Context, type ContextManager, type Tracer } from '@opentelemetry/api';
import type { Resource } from '@opentelemetry/resources';
import type { SpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { ClientInterceptors } from '@temporalio/client';
import type { OpenTelemetryWorkflowExporter } from '@temporalio/interceptors-opentelemetry/lib/workflow/definitions';
import type { InjectedSink, WorkerOptions } from '@temporalio/worker';
import { tracingRequested } from '../common/tracing-environment';

/**
 * OpenTelemetry tracing of a worker or CLI process: one tracer provider per process, exporting by
 * OTLP/HTTP (see `otlp-exporter.ts`), registered only when an OTLP endpoint variable is set. Without
 * one nothing of OpenTelemetry's SDK loads, no provider exists, and the spans our activities open
 * are the API's no-op spans.
 */

/** The process's tracer provider and what a worker hands to Temporal's interceptors. */
export interface Tracing {
  /** The traces URL spans go to. */
  url: string;
  serviceName: string;
  /** The batching processor the workflow spans are handed to, from the workflow sandbox. */
  spanProcessor: SpanProcessor;
  resource: Resource;
  /**
   * Sends the spans still queued, giving up after `limitMs` (default {@link FLUSH_LIMIT_MS}): a
   * worker or command ends on time even when its collector does not answer.
   */
  flush(limitMs?: number): Promise<void>;
}

/** How long the end of a worker or command waits for its last spans at most. */
const FLUSH_LIMIT_MS = 5_000;

let processTracing: Tracing | undefined;

/** This process's tracing, once started. */
export function currentTracing(): Tracing | undefined {
  return processTracing;
}

/** Throws `OtlpSettingsError` when a tracing variable does not parse: a check made before starting. */
export function checkTracingSettings(environment: NodeJS.ProcessEnv): void {
  /* eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only when tracing is on */
  const { otlpSettingsFromEnvironment } = require('./otlp-exporter') as typeof import('./otlp-exporter');
  otlpSettingsFromEnvironment(environment, '');
}

/**
 * Starts this process's tracing when the environment asks for it, once per process (the global
 * tracer provider is the process's): later calls get the same one. `defaultServiceName` applies
 * when `OTEL_SERVICE_NAME` is unset. Throws `OtlpSettingsError` naming the variable that does not
 * parse.
 */
export function startTracing(
  environment: NodeJS.ProcessEnv,
  defaultServiceName: string,
  log: (message: string) => void,
): Tracing | undefined {
  if (!tracingRequested(environment)) return undefined;
  if (processTracing !== undefined) return processTracing;
  /* eslint-disable @typescript-eslint/no-require-imports -- loaded only when tracing is on; see above */
  const { OtlpHttpSpanExporter, otlpSettingsFromEnvironment } =
    require('./otlp-exporter') as typeof import('./otlp-exporter');
  const { BasicTracerProvider, BatchSpanProcessor } =
    require('@opentelemetry/sdk-trace-base') as typeof import('@opentelemetry/sdk-trace-base');
  const { Resource } = require('@opentelemetry/resources') as typeof import('@opentelemetry/resources');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const settings = otlpSettingsFromEnvironment(environment, defaultServiceName)!;
  const resource = new Resource({ ...Resource.default().attributes, 'service.name': settings.serviceName });
  const spanProcessor = new BatchSpanProcessor(new OtlpHttpSpanExporter(settings, log));
  const provider = new BasicTracerProvider({ resource, spanProcessors: [spanProcessor] });
  // The propagator is W3C trace context (and baggage) unless OTEL_PROPAGATORS says otherwise.
  provider.register({ contextManager: new AsyncLocalStorageContextManager() });
  processTracing = {
    url: settings.url,
    serviceName: settings.serviceName,
    spanProcessor,
    resource,
    async flush(limitMs = FLUSH_LIMIT_MS) {
      let timer: NodeJS.Timeout | undefined;
      const limit = new Promise<void>((resolve) => (timer = setTimeout(resolve, limitMs).unref()));
      await Promise.race([provider.forceFlush(), limit]);
      clearTimeout(timer);
    },
  };
  return processTracing;
}

/**
 * What a traced worker adds to its options: the activities' spans, continuing the trace the
 * workflow passes in the activity's headers (and trace IDs in the activities' log lines), and the
 * sink through which the workflow sandbox hands its spans out. The workflow's own interceptors are
 * in the traced workflow bundle (`workflows/tracing-interceptors.ts`).
 */
export function workerTracingOptions(tracing: Tracing): Pick<WorkerOptions, 'interceptors' | 'sinks'> {
  /* eslint-disable @typescript-eslint/no-require-imports -- loaded only when tracing is on */
  const {
    OpenTelemetryActivityInboundInterceptor,
    OpenTelemetryActivityOutboundInterceptor,
    makeWorkflowExporter,
  } =
    require('@temporalio/interceptors-opentelemetry/lib/worker') as typeof import('@temporalio/interceptors-opentelemetry/lib/worker');
  /* eslint-enable @typescript-eslint/no-require-imports */
  return {
    interceptors: {
      activity: [
        (context) => ({
          inbound: new OpenTelemetryActivityInboundInterceptor(context),
          outbound: new OpenTelemetryActivityOutboundInterceptor(context),
        }),
      ],
    },
    sinks: {
      exporter: {
        export: workflowSpansExport(makeWorkflowExporter(tracing.spanProcessor, tracing.resource)),
      },
    },
  };
}

/**
 * The SDK's export of workflow spans, given only the run's names: the SDK copies the whole
 * workflow info into every workflow span's attributes, the run's memo and its last result and
 * failure among them, which are the run's own data and may be large.
 */
function workflowSpansExport(
  sink: InjectedSink<OpenTelemetryWorkflowExporter>,
): InjectedSink<OpenTelemetryWorkflowExporter>['export'] {
  return {
    ...sink.export,
    fn: (info, spans) => {
      const { workflowId, runId, workflowType, namespace, taskQueue, attempt } = info;
      const names = { workflowId, runId, workflowType, namespace, taskQueue, attempt };
      return sink.export.fn(names as typeof info, spans);
    },
  };
}

/**
 * A client's interceptors that open a span for each start, signal and query, and pass it to the
 * workflow in the call's headers: the run's trace begins where it was started. With `start`, the
 * spans' tracer calls it before its first span: a process that connects without calling (`agents
 * worker` checking its server) leaves the process's tracing to the worker it then runs.
 */
export function clientTracingInterceptors(start?: () => void): ClientInterceptors {
  /* eslint-disable @typescript-eslint/no-require-imports -- loaded only when tracing is on */
  const { OpenTelemetryWorkflowClientInterceptor } =
    require('@temporalio/interceptors-opentelemetry/lib/client') as typeof import('@temporalio/interceptors-opentelemetry/lib/client');
  /* eslint-enable @typescript-eslint/no-require-imports */
  return {
    workflow: [
      new OpenTelemetryWorkflowClientInterceptor(
        start === undefined ? {} : { tracer: startingTracer(start) },
      ),
    ],
  };
}

/** A tracer that calls `start` before each span, then hands the span to the global provider's. */
function startingTracer(start: () => void): Tracer {
  const tracer = () => {
    start();
    return trace.getTracer('@temporalio/interceptor-client');
  };
  const startActiveSpan = (...args: unknown[]): unknown => {
    const current = tracer();
    return (current.startActiveSpan as (...given: unknown[]) => unknown).apply(current, args);
  };
  return { startSpan: (...args) => tracer().startSpan(...args), startActiveSpan } as Tracer;
}

/**
 * The active span's context carried across `await`s with Node's AsyncLocalStorage, so a span
 * opened inside an activity is the child of the activity's span (what
 * `@opentelemetry/context-async-hooks` does, in the few lines this needs).
 */
class AsyncLocalStorageContextManager implements ContextManager {
  private storage = new AsyncLocalStorage<Context>();

  active(): Context {
    return this.storage.getStore() ?? ROOT_CONTEXT;
  }

  with<A extends unknown[], F extends (...args: A) => ReturnType<F>>(
    context: Context,
    fn: F,
    thisArg?: ThisParameterType<F>,
    ...args: A
  ): ReturnType<F> {
    return this.storage.run(context, () => fn.apply(thisArg, args));
  }

  bind<T>(context: Context, target: T): T {
    if (typeof target !== 'function') return target;
    const run = (...args: unknown[]): unknown =>
      this.with(context, () => (target as (...parameters: unknown[]) => unknown)(...args));
    return run as T;
  }

  enable(): this {
    return this;
  }

  disable(): this {
    this.storage.disable();
    this.storage = new AsyncLocalStorage<Context>();
    return this;
  }
}
