import type { ModelToolCall, TranscriptMessage } from '../common/agent-run-types';
import {
  MODEL_RESULT_MAX_BYTES,
  TEMPORAL_PAYLOAD_LIMIT_BYTES,
  TOOL_BATCH_RESULT_MAX_BYTES,
} from '../common/constants';
import { formatExactBytes, formatCount } from '../common/payload-bounds';
import type { ToolResult } from '../sandbox/tool-call';

/** The Web UI summary of a tool-batch activity: "tools: bash ×2, read_file ×1". */
export function toolBatchSummary(calls: ModelToolCall[]): string {
  const counts = new Map<string, number>();
  for (const call of calls) counts.set(call.tool, (counts.get(call.tool) ?? 0) + 1);
  return `tools: ${[...counts].map(([tool, count]) => `${tool} ×${count}`).join(', ')}`;
}

/** What the model reads back for a tool call: the output, and the error when it failed. */
export function toolResultMessage(call: ModelToolCall, result: ToolResult): TranscriptMessage {
  const parts = [result.output];
  if (!result.success) parts.push(`Error: ${result.error ?? 'failed'}`);
  return {
    role: 'tool',
    toolCallId: call.id,
    tool: call.tool,
    content: parts.filter((part) => part !== '').join('\n'),
    success: result.success,
  };
}

/** What the model reads back for `finish`, which the workflow handles itself. */
export function finishResult(callId: string): ToolResult {
  return { callId, success: true, output: 'The run ends after this iteration.', metadata: {} };
}

/** What the model reads back for a call that did not run: a denial, or the run ending first. */
export function refusalMessage(call: ModelToolCall, refusal: string): TranscriptMessage {
  return { role: 'tool', toolCallId: call.id, tool: call.tool, content: refusal, success: false };
}

/** The result the sandbox gave for a call, or a failure saying it gave none. */
export function resultOrMissing(results: ReadonlyMap<string, ToolResult>, callId: string): ToolResult {
  return (
    results.get(callId) ?? {
      callId,
      success: false,
      output: '',
      error: 'No result from the sandbox',
      metadata: {},
    }
  );
}

/**
 * What the model reads after the results of an answer some of whose tool calls were not taken:
 * how many, the limits, and that none of them ran. Undefined when every call was taken.
 */
export function notTakenMessage(
  notTaken: number | undefined,
  maxToolCalls: number,
): TranscriptMessage | undefined {
  if (notTaken === undefined || notTaken <= 0) return undefined;
  return {
    role: 'user',
    content: `[${formatCount(notTaken)} more tool calls of your last answer were not taken, and none of them ran: one answer may make at most ${maxToolCalls} tool calls, of at most ${formatExactBytes(MODEL_RESULT_MAX_BYTES)} together. Ask again in later answers for those still needed.]`,
  };
}

/**
 * The failure message of an activity whose result the worker refused to send, being over the
 * namespace's payload limit (`[TMPRL1103]`, which does not say which limit): what happened, the
 * limit to check, and the bounds the run keeps its results to.
 */
export function payloadLimitMessage(activity: string, workerMessage: string): string {
  return `the ${activity} activity's result is over this Temporal namespace's payload limit (limit.blobSize.error, ${formatExactBytes(TEMPORAL_PAYLOAD_LIMIT_BYTES)} by default), so it failed without a retry; a model turn returns at most ${formatExactBytes(MODEL_RESULT_MAX_BYTES)} and a tool batch ${formatExactBytes(TOOL_BATCH_RESULT_MAX_BYTES)}, so the namespace's limit must be at least that (${workerMessage})`;
}
