import type { ModelToolCall, ModelUsage } from '../common/agent-run-types';
import { CHARACTERS_PER_TOKEN } from '../common/constants';
import type { ModelRequest } from './model-provider';

/** Characters a tool call takes in a prompt or an answer: its name and its arguments' JSON. */
export function toolCallCharacters(calls: readonly ModelToolCall[] = []): number {
  return calls.reduce((sum, call) => sum + call.tool.length + JSON.stringify(call.arguments).length, 0);
}

/** Tokens of a text by its length. */
export function estimateTokens(characters: number): number {
  return Math.ceil(characters / CHARACTERS_PER_TOKEN);
}

/** Input tokens of a request by its characters: the system prompt and every message. */
export function estimateInputTokens(request: ModelRequest): number {
  const characters = request.messages.reduce(
    (sum, message) =>
      sum +
      message.content.length +
      (message.role === 'assistant' ? toolCallCharacters(message.toolCalls) : 0),
    request.systemPrompt.length,
  );
  return estimateTokens(characters);
}

/**
 * Usage by character count, marked `estimated`: for servers that never report it, and for an
 * answer stopped before its usage came, counted from the characters streamed until then.
 */
export function estimateUsage(request: ModelRequest, outputCharacters: number): ModelUsage {
  return {
    inputTokens: estimateInputTokens(request),
    outputTokens: estimateTokens(outputCharacters),
    estimated: true,
  };
}
