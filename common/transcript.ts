import type { ModelToolCall, TranscriptMessage } from './agent-run-types';

/** The tool that ends the run after the current iteration; the workflow handles it, no sandbox. */
export const FINISH_TOOL = 'finish';

/** The assistant's message for the transcript: its text, and its tool calls when it made some. */
export function assistantMessage(answer: { text: string; toolCalls: ModelToolCall[] }): TranscriptMessage {
  return answer.toolCalls.length === 0
    ? { role: 'assistant', content: answer.text }
    : { role: 'assistant', content: answer.text, toolCalls: answer.toolCalls };
}
