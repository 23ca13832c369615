import type { ModelToolCall } from '../common/agent-run-types';

/** Characters of malformed arguments quoted back to the model. */
const QUOTED_ARGUMENTS_CHARS = 200;

/**
 * A tool call from the arguments text a model streamed. Arguments that are not a JSON object make
 * the call `invalid`: the model reads why as the call's result, and the iteration goes on.
 */
export function parseToolCallArguments(id: string, tool: string, argumentsJson: string): ModelToolCall {
  const text = argumentsJson.trim() === '' ? '{}' : argumentsJson;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return {
      id,
      tool,
      arguments: {},
      invalid: `Invalid arguments for tool ${tool}: not valid JSON: ${quote(text)}`,
    };
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return { id, tool, arguments: {}, invalid: `Invalid arguments for tool ${tool}: must be a JSON object` };
  }
  return { id, tool, arguments: parsed as Record<string, unknown> };
}

function quote(text: string): string {
  return text.length <= QUOTED_ARGUMENTS_CHARS ? text : `${text.slice(0, QUOTED_ARGUMENTS_CHARS)}…`;
}
