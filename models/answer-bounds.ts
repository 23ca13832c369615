import type { ModelToolCall } from '../common/agent-run-types';
import { ANSWER_TEXT_MAX_BYTES, MODEL_RESULT_MAX_BYTES, TOOL_ARGUMENT_MAX_BYTES } from '../common/constants';
import { cutToJsonBytes, formatExactBytes, formatCount, jsonBytes } from '../common/payload-bounds';
import type { ModelResponse } from './model-provider';

/**
 * A model's answer as a model turn returns it: within the bounds Temporal's payloads allow,
 * whatever the model sent.
 */
export interface BoundedAnswer extends ModelResponse {
  /**
   * Tool calls of the answer that were left out: beyond the run's limit per answer, or beyond the
   * bytes a model turn may return. Nothing of them runs; the run tells the model.
   */
  toolCallsNotTaken?: number;
}

/** Characters of an argument's name quoted in a message. */
const QUOTED_NAME_CHARS = 100;

/**
 * The answer cut to fit a model turn's result: its text to {@link ANSWER_TEXT_MAX_BYTES}, each tool
 * argument to {@link TOOL_ARGUMENT_MAX_BYTES} (the call then invalid, so nothing runs on cut
 * arguments), at most `maxToolCalls` calls, and no more calls than fit in
 * {@link MODEL_RESULT_MAX_BYTES} with the rest. Every cut ends with a marker the model and the
 * audit see.
 */
export function boundAnswer(answer: ModelResponse, maxToolCalls: number): BoundedAnswer {
  const text = cutToJsonBytes(
    answer.text,
    ANSWER_TEXT_MAX_BYTES,
    `an answer keeps at most ${formatExactBytes(ANSWER_TEXT_MAX_BYTES)}`,
  );
  const withoutCalls = { ...answer, text, toolCalls: [] };
  // Room for the count of calls not taken, the one field this adds.
  let room = MODEL_RESULT_MAX_BYTES - jsonBytes(withoutCalls) - jsonBytes({ toolCallsNotTaken: 1e9 });
  const toolCalls: ModelToolCall[] = [];
  for (const call of answer.toolCalls.slice(0, maxToolCalls)) {
    const bounded = boundToolCall(call);
    // One more byte for the comma between calls.
    const bytes = jsonBytes(bounded) + 1;
    if (bytes > room) break;
    room -= bytes;
    toolCalls.push(bounded);
  }
  const notTaken = answer.toolCalls.length - toolCalls.length;
  return { ...withoutCalls, toolCalls, ...(notTaken > 0 ? { toolCallsNotTaken: notTaken } : {}) };
}

/**
 * The call with each argument whose JSON exceeds {@link TOOL_ARGUMENT_MAX_BYTES} cut (one that is
 * not a string is cut as its JSON text), and then invalid with the reason: a command or a file's
 * content cut short must never run.
 */
export function boundToolCall(call: ModelToolCall): ModelToolCall {
  const oversized: string[] = [];
  const kept: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(call.arguments)) {
    const bytes = jsonBytes(value);
    if (bytes <= TOOL_ARGUMENT_MAX_BYTES) {
      kept[name] = value;
      continue;
    }
    kept[name] = cutToJsonBytes(
      typeof value === 'string' ? value : JSON.stringify(value),
      TOOL_ARGUMENT_MAX_BYTES,
      `a tool argument keeps at most ${formatExactBytes(TOOL_ARGUMENT_MAX_BYTES)}`,
    );
    oversized.push(`${name.slice(0, QUOTED_NAME_CHARS)} (${formatCount(bytes)} bytes)`);
  }
  if (oversized.length === 0) return call;
  const invalid =
    call.invalid ??
    `Invalid arguments for tool ${call.tool}: ${oversized.join(', ')} over the ${formatExactBytes(TOOL_ARGUMENT_MAX_BYTES)} an argument may take; nothing ran. Send it in smaller parts.`;
  return { ...call, arguments: kept, invalid };
}
