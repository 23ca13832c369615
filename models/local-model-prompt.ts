import type { ModelToolCall, TranscriptMessage } from '../common/agent-run-types';
import type { ToolDefinition } from './model-provider';
import { parseToolCallArguments } from './tool-calls';

/**
 * How a local model is asked for tool calls: its answer is one JSON object,
 * `{"tool_calls": [{"name", "arguments"}], "text"}`, and generation is held to that shape by a
 * grammar built from the tools' schemas. Even a small model without native function calling then
 * calls tools with arguments that parse. Pure functions: the prompt and grammar for a transcript
 * are tested without a model.
 */

/** Closes a turn of tool results. */
const AFTER_RESULTS = 'If the iteration is done, answer with "tool_calls": [] and your summary in "text".';

/** One message as node-llama-cpp's chat wrappers take it. */
export type LocalChatItem =
  { type: 'system'; text: string } | { type: 'user'; text: string } | { type: 'model'; response: string[] };

/**
 * Longest text the grammar lets the model write, so a confused model cannot ramble until its token
 * limit. Arguments (file contents) are bounded by the token limit alone: llama.cpp refuses a grammar
 * whose repetitions grow past about a thousand.
 */
const MAX_TEXT_CHARS = 600;
/** Tool calls one answer may hold. */
const MAX_CALLS_PER_ANSWER = 4;

/** A tool result is cut to this many characters in the prompt: small models have small contexts. */
const MAX_RESULT_CHARS = 4000;

/** A JSON Schema subset node-llama-cpp turns into a grammar (every listed property is required). */
export type GrammarSchema =
  | { type: 'string'; maxLength?: number }
  | { type: 'number' | 'integer' | 'boolean' }
  | { enum: Array<string | number | boolean> }
  | { const: string }
  | { type: 'object'; properties: Record<string, GrammarSchema> }
  | { type: 'array'; items: GrammarSchema; maxItems?: number }
  | { oneOf: GrammarSchema[] };

/**
 * The grammar schema of an answer. Each tool contributes its required arguments only, as a
 * grammar cannot leave a property out; a tool whose required arguments are not plain values is
 * not offered to the local model.
 */
export function answerSchema(tools: readonly ToolDefinition[]): GrammarSchema {
  const calls = tools.flatMap((tool) => {
    const args = requiredArguments(tool.parameters);
    if (args === undefined) return [];
    return [
      {
        type: 'object' as const,
        properties: { name: { const: tool.name }, arguments: { type: 'object' as const, properties: args } },
      },
    ];
  });
  const properties: Record<string, GrammarSchema> = { text: { type: 'string', maxLength: MAX_TEXT_CHARS } };
  if (calls.length > 0) {
    properties.tool_calls = { type: 'array', items: { oneOf: calls }, maxItems: MAX_CALLS_PER_ANSWER };
  }
  return { type: 'object', properties };
}

/** The grammar schemas of a tool's required arguments; undefined when one is not a plain value. */
function requiredArguments(parameters: Record<string, unknown>): Record<string, GrammarSchema> | undefined {
  const properties = (parameters.properties ?? {}) as Record<string, Record<string, unknown>>;
  const required = Array.isArray(parameters.required) ? (parameters.required as string[]) : [];
  const result: Record<string, GrammarSchema> = {};
  for (const name of required) {
    const schema = properties[name];
    if (schema === undefined) return undefined;
    const value = plainValueSchema(schema);
    if (value === undefined) return undefined;
    result[name] = value;
  }
  return result;
}

function plainValueSchema(schema: Record<string, unknown>): GrammarSchema | undefined {
  if (Array.isArray(schema.enum)) return { enum: schema.enum as Array<string | number | boolean> };
  switch (schema.type) {
    case 'string':
      return { type: 'string' };
    case 'number':
    case 'integer':
    case 'boolean':
      return { type: schema.type };
    default:
      return undefined;
  }
}

/** The tools section of the system prompt: the answer format, then one line per tool. */
export function toolInstructions(tools: readonly ToolDefinition[]): string {
  const lines = tools
    .filter((tool) => requiredArguments(tool.parameters) !== undefined)
    .map((tool) => {
      const args = Object.keys(requiredArguments(tool.parameters) ?? {}).join(', ');
      return `- ${tool.name}(${args}): ${tool.description}`;
    });
  return [
    '=== HOW TO ANSWER ===',
    'Answer with one JSON object and nothing else:',
    '{"text": "<one or two sentences>", "tool_calls": [{"name": "<tool>", "arguments": {...}}]}',
    'Call a tool to act. After the tool results come back, answer with "tool_calls": [] and',
    'say in "text" what you did.',
    '',
    'Tools:',
    ...lines,
  ].join('\n');
}

/**
 * The conversation as chat items, for a model with a chat template: the model's earlier answers
 * in the JSON it writes, each answer's tool results as one user turn.
 */
export function chatHistory(
  systemPrompt: string,
  tools: readonly ToolDefinition[],
  messages: readonly TranscriptMessage[],
): LocalChatItem[] {
  const items: LocalChatItem[] = [{ type: 'system', text: `${systemPrompt}\n\n${toolInstructions(tools)}` }];
  for (const turn of turns(messages)) {
    items.push(
      turn.speaker === 'model' ? { type: 'model', response: [turn.text] } : { type: 'user', text: turn.text },
    );
  }
  return items;
}

/**
 * The conversation as plain text ending in "You:", for a base model without a chat template: it
 * continues a transcript written the way the task program's own examples are ("User: …", "You: …").
 */
export function transcriptPrompt(
  systemPrompt: string,
  tools: readonly ToolDefinition[],
  messages: readonly TranscriptMessage[],
): string {
  const lines = turns(messages).map((turn) => `${turn.speaker === 'model' ? 'You' : 'User'}: ${turn.text}`);
  return [systemPrompt, '', toolInstructions(tools), '', '=== CONVERSATION ===', ...lines, 'You:'].join('\n');
}

/** The conversation in turns of the two speakers a chat format knows. */
function turns(messages: readonly TranscriptMessage[]): Array<{ speaker: 'user' | 'model'; text: string }> {
  const result: Array<{ speaker: 'user' | 'model'; text: string; results?: boolean }> = [];
  for (const message of messages) {
    switch (message.role) {
      case 'user':
        result.push({ speaker: 'user', text: message.content });
        break;
      case 'assistant':
        result.push({ speaker: 'model', text: renderAnswer(message.content, message.toolCalls ?? []) });
        break;
      case 'tool': {
        const text = `Tool ${message.tool} ${message.success ? 'returned' : 'failed'}: ${clip(message.content)}`;
        const last = result.at(-1);
        if (last?.results === true) last.text += `\n${text}`;
        else result.push({ speaker: 'user', text, results: true });
        break;
      }
    }
  }
  const last = result.at(-1);
  // Small models tend to call tools again and again: the turn after results says how to stop.
  if (last?.results === true) last.text += `\n${AFTER_RESULTS}`;
  return result.map(({ speaker, text }) => ({ speaker, text }));
}

/** An earlier answer as the model would have written it. */
function renderAnswer(text: string, calls: readonly ModelToolCall[]): string {
  return JSON.stringify({
    text,
    tool_calls: calls.map((call) => ({ name: call.tool, arguments: call.arguments })),
  });
}

function clip(text: string): string {
  return text.length <= MAX_RESULT_CHARS ? text : `${text.slice(0, MAX_RESULT_CHARS)}… (cut)`;
}

/**
 * The model's answer as text and tool calls. The grammar makes it parse; an answer cut off by the
 * token limit does not, and then counts as text so the run goes on.
 */
export function parseAnswer(
  answer: string,
  callIdPrefix: string,
): { text: string; toolCalls: ModelToolCall[] } {
  let parsed: unknown;
  try {
    parsed = JSON.parse(answer);
  } catch {
    return { text: answer.trim(), toolCalls: [] };
  }
  const value = (parsed ?? {}) as { text?: unknown; tool_calls?: unknown };
  const calls = Array.isArray(value.tool_calls) ? (value.tool_calls as Array<Record<string, unknown>>) : [];
  return {
    text: typeof value.text === 'string' ? value.text : '',
    toolCalls: calls.map((call, index) =>
      parseToolCallArguments(
        `${callIdPrefix}_${index}`,
        typeof call.name === 'string' ? call.name : 'unknown',
        JSON.stringify(call.arguments ?? {}),
      ),
    ),
  };
}
