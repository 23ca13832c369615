import type { ModelToolCall } from '../common/agent-run-types';
import { TOOL_ARGUMENT_MAX_BYTES } from '../common/constants';
import { cutToJsonBytes, formatExactBytes } from '../common/payload-bounds';

/** Characters of malformed arguments quoted back to the model. */
const QUOTED_ARGUMENTS_CHARS = 200;

/**
 * A tool call from the arguments text a model streamed. Arguments that are not a JSON object make
 * the call `invalid`: the model reads why as the call's result, and the iteration goes on. The text
 * the model sent is kept in `rawArguments` (cut to a bound), so the audit shows it rather than `{}`.
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
      rawArguments: keptArguments(text),
    };
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return {
      id,
      tool,
      arguments: {},
      invalid: `Invalid arguments for tool ${tool}: must be a JSON object`,
      rawArguments: keptArguments(text),
    };
  }
  return { id, tool, arguments: parsed as Record<string, unknown> };
}

function quote(text: string): string {
  return text.length <= QUOTED_ARGUMENTS_CHARS ? text : `${text.slice(0, QUOTED_ARGUMENTS_CHARS)}…`;
}

/** The arguments text as the audit keeps it. */
function keptArguments(text: string): string {
  return cutToJsonBytes(
    text,
    TOOL_ARGUMENT_MAX_BYTES,
    `the arguments text of a call keeps at most ${formatExactBytes(TOOL_ARGUMENT_MAX_BYTES)}`,
  );
}
