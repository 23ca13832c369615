import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import {
  CallToolResultSchema,
  ErrorCode,
  ListToolsResultSchema,
  McpError,
  ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js';
import type { ToolResult } from '../sandbox/tool-call';
import { MAX_MCP_CALL_TIMEOUT_S } from './mcp-servers';
import { mcpFailure, mcpToolResult, type McpCallFacts } from './mcp-tool-results';
import { jsonBytes } from './payload-bounds';

/**
 * The two MCP requests a run makes of a server, `tools/list` and `tools/call`, over a connected
 * client of the official SDK, bounded and always ending in data: the worker uses this for HTTP
 * servers, the sandbox server for stdio ones, each with a transport and a way of saying why a
 * server went away of its own.
 *
 * Requests go through `client.request` with the SDK's result schemas, not `listTools`/`callTool`:
 * those compile each tool's output schema (Ajv) and run it on every answer, and a server's schema
 * is not ours to run — a backtracking pattern in one would stall the process for every run.
 */

/** A tool as a server lists it, bounded: its own (unprefixed) name, description and argument schema. */
export interface McpToolDescription {
  name: string;
  description: string;
  inputSchema: Record<string, unknown>;
}

/** Time `tools/list`, every page of it, may take. */
export const MCP_LIST_TIMEOUT_MS = 10_000;
/** Tools kept of one server's list; the pages after it are not asked for. */
export const MCP_MAX_TOOLS = 256;
/** Pages of `tools/list` followed at most. */
const MAX_LIST_PAGES = 16;
/** Characters of a tool's description kept; a longer one is cut with "…". */
export const MCP_MAX_DESCRIPTION_CHARS = 4_000;
/** Bytes of a tool's argument schema, as JSON; a tool with a larger one is left out of the list. */
export const MCP_MAX_SCHEMA_BYTES = 32 * 1024;
/** A tool name as the MCP specification allows it: 1-128 of A-Z, a-z, 0-9, "_", "-", "." and "/". */
const TOOL_NAME_PATTERN = /^[A-Za-z0-9_./-]{1,128}$/;

/** Says in one line why a request failed: `method` is what was asked, `timeoutS` its timeout. */
export type McpFailureDescriber = (error: unknown, method: string, timeoutS: number) => string;

/** The reasons every transport shares: a timeout, the server's own error, an answer that is not MCP. */
export function describeMcpError(error: unknown, method: string, timeoutS: number): string {
  if (error instanceof McpError && error.code === Number(ErrorCode.RequestTimeout)) {
    const data = error.data as { maxTotalTimeout?: unknown } | undefined;
    if (data?.maxTotalTimeout !== undefined) {
      return `it did not finish ${method} within ${MAX_MCP_CALL_TIMEOUT_S}s, however often it reported progress`;
    }
    return `it did not answer ${method} within ${timeoutS}s`;
  }
  if (error instanceof McpError && error.code === Number(ErrorCode.ConnectionClosed)) {
    return 'the connection closed';
  }
  if (error instanceof McpError) return `it answered ${method} with an error: ${oneLine(error.message, 500)}`;
  if (error instanceof Error && error.name === 'ZodError')
    return `its answer to ${method} is not a valid MCP result`;
  return oneLine(error instanceof Error ? error.message : String(error), 500);
}

/** `text` on one line, control characters made spaces, at most `limit` characters. */
export function oneLine(text: string, limit: number): string {
  // eslint-disable-next-line no-control-regex -- control characters are what is replaced
  const flat = text.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return flat.length > limit ? `${flat.slice(0, limit - 1)}…` : flat;
}

/**
 * Runs `request` with a signal of its own that follows `outer`. The SDK adds an abort listener to
 * the signal of each request and never removes it: handed a long-lived signal (a server's
 * shutdown), it would gather one per request for the life of the process.
 */
export async function withRequestSignal<T>(
  outer: AbortSignal | undefined,
  request: (signal: AbortSignal | undefined) => Promise<T>,
): Promise<T> {
  if (outer === undefined) return request(undefined);
  const controller = new AbortController();
  const abort = () => controller.abort(outer.reason);
  if (outer.aborted) abort();
  else outer.addEventListener('abort', abort, { once: true });
  try {
    return await request(controller.signal);
  } finally {
    outer.removeEventListener('abort', abort);
  }
}

/** The tools of one connected server and the calls of them. */
export class McpToolClient {
  private tools: Promise<McpToolDescription[]> | undefined;

  constructor(
    /** The server's name in the run, for messages. */
    readonly server: string,
    readonly client: Client,
    private readonly describe: McpFailureDescriber = describeMcpError,
  ) {
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
      this.tools = undefined;
    });
  }

  /**
   * The server's tools: `tools/list`, every page, within {@link MCP_LIST_TIMEOUT_MS}, once and
   * again after the server sends `notifications/tools/list_changed`. Bounded: at most
   * {@link MCP_MAX_TOOLS} tools, descriptions cut to {@link MCP_MAX_DESCRIPTION_CHARS}, and a tool
   * whose name breaks the specification's rule or whose schema is over {@link MCP_MAX_SCHEMA_BYTES}
   * left out. Rejects with one line saying why (callers name the server).
   */
  listTools(signal?: AbortSignal): Promise<McpToolDescription[]> {
    if (this.tools !== undefined) return this.tools;
    const listing = this.fetchTools(signal);
    this.tools = listing;
    // A failed listing is not kept: the next one asks again.
    listing.catch(() => {
      if (this.tools === listing) this.tools = undefined;
    });
    return listing;
  }

  private async fetchTools(signal: AbortSignal | undefined): Promise<McpToolDescription[]> {
    if (this.client.getServerCapabilities()?.tools === undefined) {
      throw new Error('it offers no tools (its answer to initialize has no tools capability)');
    }
    const deadline = performance.now() + MCP_LIST_TIMEOUT_MS;
    const listed: McpToolDescription[] = [];
    let cursor: string | undefined;
    try {
      for (let page = 0; page < MAX_LIST_PAGES && listed.length < MCP_MAX_TOOLS; page += 1) {
        const remainingMs = Math.max(1, Math.round(deadline - performance.now()));
        const answer = await withRequestSignal(signal, (requestSignal) =>
          this.client.request(
            { method: 'tools/list', params: cursor === undefined ? {} : { cursor } },
            ListToolsResultSchema,
            { timeout: remainingMs, ...(requestSignal === undefined ? {} : { signal: requestSignal }) },
          ),
        );
        for (const tool of answer.tools) {
          if (!TOOL_NAME_PATTERN.test(tool.name)) continue;
          if (jsonBytes(tool.inputSchema) > MCP_MAX_SCHEMA_BYTES) continue;
          const description = tool.description ?? tool.title ?? '';
          listed.push({
            name: tool.name,
            description:
              description.length > MCP_MAX_DESCRIPTION_CHARS
                ? `${description.slice(0, MCP_MAX_DESCRIPTION_CHARS - 1)}…`
                : description,
            inputSchema: tool.inputSchema,
          });
        }
        cursor = answer.nextCursor;
        if (cursor === undefined) break;
      }
    } catch (error) {
      if (signal?.aborted === true) throw error;
      throw new Error(
        `it did not list its tools: ${this.describe(error, 'tools/list', MCP_LIST_TIMEOUT_MS / 1000)}`,
        {
          cause: error,
        },
      );
    }
    return listed.slice(0, MCP_MAX_TOOLS);
  }

  /**
   * Runs `tools/call` and returns its result: the answer through `mcpToolResult`, anything else
   * (a timeout, the server's end, its JSON-RPC error) one failure through `mcpFailure`. `timeoutS`
   * bounds the wait for an answer and each progress notification restarts it, up to
   * {@link MAX_MCP_CALL_TIMEOUT_S} in all. Rejects only when `signal` aborts.
   */
  async callTool(
    callId: string,
    tool: string,
    args: Record<string, unknown>,
    timeoutS: number,
    signal?: AbortSignal,
    onProgress?: () => void,
  ): Promise<ToolResult> {
    const startedAt = performance.now();
    let progress: McpCallFacts['progress'];
    try {
      const answer = await withRequestSignal(signal, (requestSignal) =>
        this.client.request(
          { method: 'tools/call', params: { name: tool, arguments: args } },
          CallToolResultSchema,
          {
            timeout: timeoutS * 1000,
            resetTimeoutOnProgress: true,
            maxTotalTimeout: MAX_MCP_CALL_TIMEOUT_S * 1000,
            ...(requestSignal === undefined ? {} : { signal: requestSignal }),
            onprogress: (update) => {
              progress = {
                notifications: (progress?.notifications ?? 0) + 1,
                progress: update.progress,
                ...(update.total === undefined ? {} : { total: update.total }),
                ...(update.message === undefined ? {} : { message: update.message.slice(0, 200) }),
              };
              onProgress?.();
            },
          },
        ),
      );
      return mcpToolResult(callId, answer, {
        server: this.server,
        tool,
        durationMs: Math.round(performance.now() - startedAt),
        ...(progress === undefined ? {} : { progress }),
      });
    } catch (error) {
      if (signal?.aborted === true) throw error;
      const failure = mcpFailure(callId, this.server, tool, this.describe(error, 'tools/call', timeoutS));
      return {
        ...failure,
        metadata: {
          ...failure.metadata,
          durationMs: Math.round(performance.now() - startedAt),
          ...(progress === undefined ? {} : { progress }),
        },
      };
    }
  }
}
