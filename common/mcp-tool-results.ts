import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import type { ToolResult } from '../sandbox/tool-call';
import { cutToJsonBytes, formatExactBytes, jsonBytes } from './payload-bounds';

/**
 * An MCP tool's answer as every other tool's result: data the model reads, with the server's
 * structured content kept beside the text, both bounded. The same conversion serves stdio servers
 * (on the sandbox server) and HTTP servers (on the worker), so a result reads alike wherever its
 * server ran.
 */

/** Bytes an MCP result's text keeps, as JSON; the batch's own bound then applies on top. */
export const MCP_OUTPUT_MAX_BYTES = 64 * 1024;
/** Bytes its structured content keeps, as JSON; larger content is left out with a note. */
export const MCP_STRUCTURED_MAX_BYTES = 16 * 1024;

const OUTPUT_LIMIT = `an MCP result keeps at most ${formatExactBytes(MCP_OUTPUT_MAX_BYTES)}`;

/** One content block as text: text as it is, anything else named with its size and never inlined. */
function contentText(block: CallToolResult['content'][number]): string {
  switch (block.type) {
    case 'text':
      return block.text;
    case 'image':
    case 'audio':
      return `[${block.type} ${block.mimeType}, ${formatExactBytes(Math.floor((block.data.length * 3) / 4))}, not shown]`;
    case 'resource_link':
      return `[resource link ${block.uri}${block.name === '' ? '' : ` (${block.name})`}]`;
    case 'resource': {
      const resource = block.resource;
      if ('text' in resource && typeof resource.text === 'string') return resource.text;
      return `[resource ${resource.uri}${resource.mimeType === undefined ? '' : ` ${resource.mimeType}`}, not shown]`;
    }
    default:
      return `[${(block as { type: string }).type} content, not shown]`;
  }
}

/** What a call's metadata says of where it ran. */
export interface McpCallFacts {
  server: string;
  tool: string;
  durationMs: number;
  /** Progress notifications received during the call, and the last one's figures. */
  progress?: { notifications: number; progress: number; total?: number; message?: string };
}

/**
 * The tool result of a `tools/call` answer: its text blocks joined (or, with no text, its
 * structured content as JSON), cut to {@link MCP_OUTPUT_MAX_BYTES}; `isError` makes it a failure
 * whose error is that text. Structured content up to {@link MCP_STRUCTURED_MAX_BYTES} is kept in
 * `metadata.structuredContent`.
 */
export function mcpToolResult(callId: string, answer: CallToolResult, facts: McpCallFacts): ToolResult {
  const texts = (answer.content ?? []).map(contentText);
  const structured = answer.structuredContent;
  let text = texts.join('\n');
  if (text === '' && structured !== undefined) text = JSON.stringify(structured, null, 2);
  text = cutToJsonBytes(text, MCP_OUTPUT_MAX_BYTES, OUTPUT_LIMIT);
  const structuredBytes = structured === undefined ? 0 : jsonBytes(structured);
  const metadata: Record<string, unknown> = {
    mcpServer: facts.server,
    mcpTool: facts.tool,
    durationMs: facts.durationMs,
    ...(facts.progress === undefined ? {} : { progress: facts.progress }),
    ...(structured === undefined
      ? {}
      : structuredBytes <= MCP_STRUCTURED_MAX_BYTES
        ? { structuredContent: structured }
        : {
            structuredContentCut: `${formatExactBytes(structuredBytes)} of structured content were not kept; at most ${formatExactBytes(MCP_STRUCTURED_MAX_BYTES)}`,
          }),
  };
  if (answer.isError === true) {
    return {
      callId,
      success: false,
      output: '',
      error: text === '' ? `${facts.tool} on MCP server ${facts.server} reported an error` : text,
      metadata,
    };
  }
  return { callId, success: true, output: text, metadata };
}

/** A call that got no answer: one line naming the server and what went wrong. */
export function mcpFailure(callId: string, server: string, tool: string, reason: string): ToolResult {
  return {
    callId,
    success: false,
    output: '',
    error: `MCP server ${server} failed on ${tool}: ${reason}`,
    metadata: { mcpServer: server, mcpTool: tool },
  };
}
