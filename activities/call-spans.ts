import { SpanKind, SpanStatusCode, trace, type Span } from '@opentelemetry/api';
import type { ModelSpec } from '../common/agent-input';
import type { ModelToolCall } from '../common/agent-run-types';
import { ModelTurnStopped, type ModelResponse } from '../models/model-provider';
import type { ToolResult } from '../sandbox/tool-call';

/**
 * Spans of their own around each model call and each tool call, children of the activity's span
 * (`worker/tracing.ts`). Their attributes follow OpenTelemetry's semantic conventions for generative
 * AI where there is one (`gen_ai.*`), and say `agents.*` where there is none. Without a registered
 * tracer provider these are the API's no-op spans: nothing is recorded.
 */
const tracer = trace.getTracer('durable-agents');

/**
 * `call` (one call of a model) inside a span `chat <model>`: the provider and model, and once it
 * answered or was stopped, the tokens it used; `agents.model.outcome` is `answered`, `stopped` or
 * `failed`.
 */
export function traceModelCall(
  spec: ModelSpec,
  call: () => Promise<ModelResponse>,
): () => Promise<ModelResponse> {
  // A scripted model has no name of its own: its provider names it.
  const model = 'model' in spec ? spec.model : spec.provider;
  return () =>
    tracer.startActiveSpan(
      `chat ${model}`,
      {
        kind: SpanKind.CLIENT,
        attributes: {
          'gen_ai.operation.name': 'chat',
          'gen_ai.provider.name': spec.provider,
          'gen_ai.request.model': model,
        },
      },
      async (span) => {
        try {
          const response = await call();
          recordUsage(span, response);
          span.setAttribute('agents.model.outcome', 'answered');
          return response;
        } catch (error) {
          if (error instanceof ModelTurnStopped) {
            recordUsage(span, error);
            span.setAttribute('agents.model.outcome', 'stopped');
          } else {
            span.setAttribute('agents.model.outcome', 'failed');
            recordFailure(span, error);
          }
          throw error;
        } finally {
          span.end();
        }
      },
    );
}

function recordUsage(span: Span, spent: Pick<ModelResponse, 'usage' | 'costUsd'>): void {
  span.setAttributes({
    'gen_ai.usage.input_tokens': spent.usage.inputTokens,
    'gen_ai.usage.output_tokens': spent.usage.outputTokens,
    'agents.model.tokens_estimated': spent.usage.estimated === true,
    'agents.model.cost_usd': spent.costUsd,
  });
}

/**
 * `run` for each call of a batch, each inside a span `execute_tool <tool>`: the tool, the call's
 * callId (`agents.tool.call_id`) beside the model's own ID of it, and `agents.tool.outcome`,
 * `success` or `failure` as its result says, or `error` when it threw (a lost sandbox server: the
 * batch is retried).
 */
export function traceToolCalls<Entry extends { callId: string; call: ModelToolCall }>(
  entries: Entry[],
  run: (entry: Entry) => Promise<ToolResult>,
): Array<Promise<ToolResult>> {
  return entries.map((entry) =>
    tracer.startActiveSpan(
      `execute_tool ${entry.call.tool}`,
      {
        attributes: {
          'gen_ai.operation.name': 'execute_tool',
          'gen_ai.tool.name': entry.call.tool,
          'gen_ai.tool.call.id': entry.call.id,
          'agents.tool.call_id': entry.callId,
        },
      },
      async (span) => {
        try {
          const result = await run(entry);
          span.setAttribute('agents.tool.outcome', result.success ? 'success' : 'failure');
          return result;
        } catch (error) {
          span.setAttribute('agents.tool.outcome', 'error');
          recordFailure(span, error);
          throw error;
        } finally {
          span.end();
        }
      },
    ),
  );
}

function recordFailure(span: Span, error: unknown): void {
  span.recordException(error instanceof Error ? error : String(error));
  span.setStatus({
    code: SpanStatusCode.ERROR,
    message: error instanceof Error ? error.message : String(error),
  });
}
