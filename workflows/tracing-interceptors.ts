/**
 * The workflow interceptors of the traced workflow bundle (`worker/workflow-bundle.ts` builds it
 * for workers with an OTLP endpoint set): Temporal's OpenTelemetry interceptors, which open a span
 * for the run, its signals and updates, and each activity it schedules, and pass the trace on in
 * the activities' headers and across continue-as-new. The spans leave the sandbox through the
 * worker's `exporter` sink, which never runs on replay.
 *
 * Two changes keep the run's decisions the same whether or not its worker traces, so a run may move
 * between traced and untraced workers and replay on either:
 * - Span and trace IDs do not come from the workflow's Math.random, which also draws the permission
 *   requests' IDs: spans drawing from it would give a run other request IDs on a traced worker than
 *   in its history. They come from a generator of their own, seeded with the run ID.
 * - Queries and update validators open no span: they run outside the history (a validator never
 *   runs on replay), so spans of theirs would shift the IDs of the spans after them between a run
 *   and its replay. With them left out, a replayed run gives its spans the IDs they had, and a span
 *   opened after a worker restart joins the same run span and trace as before it.
 */
// First: it gives the sandbox the `performance` and `window` OpenTelemetry's modules read as they load.
import '@temporalio/interceptors-opentelemetry/lib/workflow/runtime';
import type { IdGenerator } from '@opentelemetry/sdk-trace-base';
import { BasicTracerProvider, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import {
  OpenTelemetryInboundInterceptor,
  OpenTelemetryInternalsInterceptor,
  OpenTelemetryOutboundInterceptor,
} from '@temporalio/interceptors-opentelemetry/lib/workflow';
import { SpanExporter } from '@temporalio/interceptors-opentelemetry/lib/workflow/span-exporter';
import {
  workflowInfo,
  type Next,
  type QueryInput,
  type UpdateInput,
  type WorkflowInboundCallsInterceptor,
  type WorkflowInterceptors,
} from '@temporalio/workflow';

/**
 * Span and trace IDs from xoshiro128**, seeded with a hash of the run ID: unique across runs (run
 * IDs are random UUIDs), the same on every replay of one run, and drawn apart from Math.random.
 */
class RunIdGenerator implements IdGenerator {
  private runId: string | undefined;
  private readonly state = new Uint32Array(4);

  generateTraceId(): string {
    return this.hex(4);
  }

  generateSpanId(): string {
    return this.hex(2);
  }

  private hex(words: number): string {
    const { runId } = workflowInfo();
    if (runId !== this.runId) this.seed(runId);
    let text = '';
    for (let index = 0; index < words; index++) text += this.next().toString(16).padStart(8, '0');
    // An all-zero ID is invalid in W3C trace context; after any seed xoshiro never gives four zero words.
    return /^0+$/.test(text) ? `${text.slice(0, -1)}1` : text;
  }

  /** Four 32-bit FNV-1a hashes of the run ID with different offsets, mixed by murmur3's finaliser. */
  private seed(runId: string): void {
    this.runId = runId;
    const offsets = [0x811c9dc5, 0x050c5d1f, 0x6a09e667, 0xbb67ae85];
    for (const [lane, offset] of offsets.entries()) {
      let hash = offset;
      for (let index = 0; index < runId.length; index++) {
        hash = Math.imul(hash ^ runId.charCodeAt(index), 0x01000193);
      }
      hash ^= hash >>> 16;
      hash = Math.imul(hash, 0x85ebca6b);
      hash ^= hash >>> 13;
      hash = Math.imul(hash, 0xc2b2ae35);
      hash ^= hash >>> 16;
      this.state[lane] = hash;
    }
    if (this.state.every((word) => word === 0)) this.state[0] = 1;
  }

  /** One step of xoshiro128**. */
  private next(): number {
    const state = this.state;
    const result = Math.imul(rotateLeft(Math.imul(state[1]!, 5), 7), 9) >>> 0;
    const shifted = state[1]! << 9;
    state[2]! ^= state[0]!;
    state[3]! ^= state[1]!;
    state[1]! ^= state[2]!;
    state[0]! ^= state[3]!;
    state[2]! ^= shifted;
    state[3] = rotateLeft(state[3]!, 11);
    return result;
  }
}

function rotateLeft(value: number, bits: number): number {
  return (value << bits) | (value >>> (32 - bits));
}

let tracer: ReturnType<BasicTracerProvider['getTracer']> | undefined;

/**
 * The tracer of this run's spans. Not registered globally: the interceptors' own provider is, and
 * with it the context manager and propagator both use.
 */
function runTracer(): ReturnType<BasicTracerProvider['getTracer']> {
  if (tracer === undefined) {
    const provider = new BasicTracerProvider({
      idGenerator: new RunIdGenerator(),
      spanProcessors: [new SimpleSpanProcessor(new SpanExporter())],
    });
    tracer = provider.getTracer('@temporalio/interceptor-workflow');
  }
  return tracer;
}

class RunInboundInterceptor extends OpenTelemetryInboundInterceptor {
  protected override readonly tracer = runTracer();

  override handleQuery(
    input: QueryInput,
    next: Next<WorkflowInboundCallsInterceptor, 'handleQuery'>,
  ): Promise<unknown> {
    return next(input);
  }

  override validateUpdate(
    input: UpdateInput,
    next: Next<WorkflowInboundCallsInterceptor, 'validateUpdate'>,
  ): void {
    next(input);
  }
}

class RunOutboundInterceptor extends OpenTelemetryOutboundInterceptor {
  protected override readonly tracer = runTracer();
}

/** Read by the SDK from each module the bundle names as a workflow interceptor module. */
export const interceptors = (): WorkflowInterceptors => ({
  inbound: [new RunInboundInterceptor()],
  outbound: [new RunOutboundInterceptor()],
  internals: [new OpenTelemetryInternalsInterceptor()],
});
