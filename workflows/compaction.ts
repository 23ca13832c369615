import type { TranscriptMessage } from '../common/agent-run-types';
import { CHARACTERS_PER_TOKEN } from '../common/constants';

/**
 * Keeping a conversation inside the model's context budget: pure functions the workflow calls
 * before each model turn. The summary is built from the conversation itself, deterministically, so
 * compaction costs no model call, replays identically, and shows in the history as the whole
 * compacted conversation sent once to the model activity.
 */

/** What each older assistant message keeps in the summary: its end, where the model sums up. */
const SUMMARY_CHARS_PER_ANSWER = 300;

/** A rough token count of messages, counting tool calls' arguments too. */
export function estimateTokens(messages: readonly TranscriptMessage[], systemPrompt = ''): number {
  let characters = systemPrompt.length;
  for (const message of messages) {
    characters += message.content.length + 16;
    if (message.role === 'assistant' && message.toolCalls !== undefined) {
      characters += JSON.stringify(message.toolCalls).length;
    }
  }
  return Math.ceil(characters / CHARACTERS_PER_TOKEN);
}

/** The conversation after compaction, and how many of its old messages the summary replaced. */
export interface Compaction {
  messages: TranscriptMessage[];
  replaced: number;
}

/**
 * Replaces the older part of a conversation with a summary when it (plus what this turn adds)
 * would exceed `budgetTokens`; returns undefined when it fits. The recent part kept is at most half
 * the budget and starts at a user message, so no tool result is separated from its call.
 */
export function compactTranscript(
  messages: readonly TranscriptMessage[],
  append: readonly TranscriptMessage[],
  budgetTokens: number,
  systemPrompt: string,
): Compaction | undefined {
  if (estimateTokens([...messages, ...append], systemPrompt) <= budgetTokens) return undefined;
  const keepBudget = Math.floor(budgetTokens / 2) - estimateTokens(append, systemPrompt);
  let cut = messages.length;
  for (let index = messages.length - 1; index > 0; index -= 1) {
    if (estimateTokens(messages.slice(index)) > keepBudget) break;
    if (messages[index]?.role === 'user') cut = index;
  }
  if (cut === 0) return undefined;
  const summary = summarizeMessages(messages.slice(0, cut), Math.floor(budgetTokens / 4));
  return { messages: [{ role: 'user', content: summary }, ...messages.slice(cut)], replaced: cut };
}

/**
 * A summary of older turns: what the model said at the end of each answer and which tools it
 * called, most recent last, cut from the front to fit `maxTokens`.
 */
export function summarizeMessages(messages: readonly TranscriptMessage[], maxTokens: number): string {
  const lines: string[] = [];
  for (const message of messages) {
    if (message.role === 'assistant') {
      const text = message.content.trim();
      if (text !== '') lines.push(`- said: ${text.slice(-SUMMARY_CHARS_PER_ANSWER).replace(/\s+/g, ' ')}`);
      for (const call of message.toolCalls ?? []) {
        lines.push(`- called ${call.tool} ${JSON.stringify(call.arguments).slice(0, 200)}`);
      }
    } else if (message.role === 'tool' && !message.success) {
      lines.push(`- ${message.tool} failed: ${message.content.slice(0, 200).replace(/\s+/g, ' ')}`);
    } else if (message.role === 'user' && message.content.startsWith(COMPACTED_HEADING)) {
      lines.push(...message.content.split('\n').slice(1));
    }
  }
  const maxCharacters = maxTokens * CHARACTERS_PER_TOKEN;
  let body = lines.join('\n');
  if (body.length > maxCharacters) body = `…\n${body.slice(body.length - maxCharacters)}`;
  return `${COMPACTED_HEADING}\n${body}`;
}

/** First line of a compacted summary: the model reads it, and the next compaction folds it in. */
export const COMPACTED_HEADING =
  '[Earlier iterations of this conversation, compacted to stay within the context budget]';
