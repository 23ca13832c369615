import type { ModelToolCall } from '../common/agent-run-types';
import {
  DEFAULT_MCP_CALL_TIMEOUT_S,
  isStdioServer,
  mcpToolName,
  mergeMcpServers,
  MODEL_TOOL_NAME_PATTERN,
  parseMcpToolName,
  type McpHttpServer,
  type McpStdioServer,
  type McpServer,
} from '../common/mcp-servers';
import { mcpFailure } from '../common/mcp-tool-results';
import { oneLine, type McpToolDescription } from '../common/mcp-tool-session';
import type { ToolDefinition } from '../models/model-provider';
import type { SandboxPolicy, ToolCall, ToolResult } from '../sandbox/tool-call';
import type { McpHttpSessions } from './mcp-http-sessions';
import type { ToolExecutor } from './tool-executor';

/**
 * The MCP servers of runs, as a worker uses them: its own servers (`agents worker --mcp`) with the
 * run's (`agents start --mcp`), their tools offered to the model as `mcp__<server>__<tool>`, and the
 * calls routed to where each server lives — a stdio server to the run's sandbox server, which runs
 * it in the run's sandbox; an HTTP server straight from the worker.
 */

/** A run as its MCP servers need it. */
export interface McpRunContext {
  /** Names the run's workspace, so its stdio servers run next to it. */
  trajectoryId: string;
  /** The run's own servers, from its input. */
  servers?: McpServer[];
  /** The run's sandbox policy (its network), which a stdio server's sandbox gets too. */
  policy: SandboxPolicy;
}

/** The MCP tools offered in one model turn, and the check of the model's calls against them. */
export interface McpOffer {
  definitions: ToolDefinition[];
  /**
   * The call as the workflow should see it, or undefined when it does not name an MCP tool. A tool
   * no server of the run offers is `invalid`; a server whose list could not be read this turn is
   * given the benefit of the doubt, and the call itself reports what is wrong with it.
   */
  check(call: ModelToolCall): ModelToolCall | undefined;
}

/** Where one MCP call goes, or its result when it cannot go anywhere. */
export type McpRoute =
  | { kind: 'sandbox'; server: McpStdioServer; call: ToolCall }
  | { kind: 'http'; server: McpHttpServer; tool: string }
  | { kind: 'failed'; result: ToolResult };

export class McpTools {
  constructor(
    private readonly options: {
      /** Servers every run on this worker has. */
      workerServers: readonly McpServer[];
      http: McpHttpSessions;
      /** The sandbox servers, where stdio MCP servers run; none: stdio servers are not offered. */
      sandbox: ToolExecutor | undefined;
      warn: (message: string) => void;
    },
  ) {}

  /** The servers of a run: the worker's and the run's own, the run's winning on a shared name. */
  serversOf(context: Pick<McpRunContext, 'servers'>): McpServer[] {
    return mergeMcpServers(this.options.workerServers, context.servers ?? []);
  }

  /** The tools the run's servers offer now; a server that cannot list them is left out with a warning. */
  async offer(context: McpRunContext, signal?: AbortSignal): Promise<McpOffer> {
    const servers = this.serversOf(context);
    const unlisted = new Set<string>();
    const listings = await Promise.all(
      servers.map(async (server) => {
        try {
          return { server, tools: await this.listTools(context, server, signal) };
        } catch (error) {
          if (signal?.aborted === true) throw error;
          unlisted.add(server.name);
          this.options.warn(
            `The tools of MCP server ${server.name} are not offered this turn: ${errorLine(error)}`,
          );
          return { server, tools: [] };
        }
      }),
    );
    const definitions: ToolDefinition[] = [];
    const offered = new Map<string, string[]>();
    for (const { server, tools } of listings) {
      const names: string[] = [];
      const unfit: string[] = [];
      for (const tool of tools) {
        const name = mcpToolName(server.name, tool.name);
        if (!MODEL_TOOL_NAME_PATTERN.test(name)) {
          unfit.push(tool.name);
          continue;
        }
        names.push(name);
        definitions.push({
          name,
          description: `[MCP server ${server.name}] ${tool.description}`.trim(),
          parameters: tool.inputSchema,
        });
      }
      if (unfit.length > 0) {
        this.options.warn(
          `MCP server ${server.name}: ${unfit.length} tool(s) not offered, their names do not fit a model's tool name (1-64 of A-Z, a-z, 0-9, _ and -): ${unfit.slice(0, 5).join(', ')}`,
        );
      }
      offered.set(server.name, names);
    }
    return {
      definitions,
      check: (call) => {
        const named = parseMcpToolName(call.tool);
        if (named === undefined) return undefined;
        if (call.invalid !== undefined) return call;
        const names = offered.get(named.server);
        if (names === undefined) {
          const known = servers.map((server) => server.name);
          return {
            ...call,
            invalid: `No MCP server ${named.server} in this run (${known.length === 0 ? 'it has none' : `its servers: ${known.join(', ')}`})`,
          };
        }
        if (names.includes(call.tool) || unlisted.has(named.server)) return call;
        return { ...call, invalid: `Unknown tool: ${call.tool}` };
      },
    };
  }

  /**
   * Where a call of an MCP tool goes: a stdio server's to the run's sandbox server, as a call with
   * the server attached; an HTTP server's to {@link callHttp}. The arguments go as the model gave
   * them: they are the MCP tool's, and a `timeout` among them is the tool's own, not the call's.
   */
  route(context: McpRunContext, callId: string, call: ModelToolCall): McpRoute {
    const named = parseMcpToolName(call.tool);
    const server = named && this.serversOf(context).find((candidate) => candidate.name === named.server);
    if (named === undefined || server === undefined) {
      const reason = 'this worker knows no such MCP server for the run';
      return { kind: 'failed', result: mcpFailure(callId, named?.server ?? '?', call.tool, reason) };
    }
    if (!isStdioServer(server)) return { kind: 'http', server, tool: named.tool };
    return {
      kind: 'sandbox',
      server,
      call: {
        callId,
        trajectoryId: context.trajectoryId,
        tool: call.tool,
        arguments: call.arguments,
        ...(server.timeoutS === undefined ? {} : { timeoutS: server.timeoutS }),
        policy: context.policy,
        mcpServer: server,
      },
    };
  }

  /** Calls an HTTP server's tool from the worker, over the run's session with it. */
  async callHttp(
    trajectoryId: string,
    server: McpHttpServer,
    callId: string,
    tool: string,
    args: Record<string, unknown>,
    signal: AbortSignal,
    onProgress: () => void,
  ): Promise<ToolResult> {
    let session;
    try {
      session = await this.options.http.session(trajectoryId, server, signal);
    } catch (error) {
      if (signal.aborted) throw error;
      return mcpFailure(callId, server.name, tool, errorLine(error));
    }
    const timeoutS = server.timeoutS ?? DEFAULT_MCP_CALL_TIMEOUT_S;
    return session.tools.callTool(callId, tool, args, timeoutS, signal, onProgress);
  }

  /** Closes the run's HTTP sessions when it ends. */
  async release(trajectoryId: string): Promise<void> {
    await this.options.http.close(trajectoryId);
  }

  /** Closes every HTTP session, when the worker stops. */
  async close(): Promise<void> {
    await this.options.http.close();
  }

  private async listTools(
    context: McpRunContext,
    server: McpServer,
    signal: AbortSignal | undefined,
  ): Promise<McpToolDescription[]> {
    if (!isStdioServer(server)) {
      const session = await this.options.http.session(context.trajectoryId, server, signal);
      return session.tools.listTools(signal);
    }
    if (this.options.sandbox === undefined) {
      throw new Error('it runs in the sandbox, and this worker has no sandbox server (AGENTS_SANDBOX_URLS)');
    }
    return this.options.sandbox.listMcpTools(context.trajectoryId, server, context.policy, signal);
  }
}

/** An error's message on one line, for a warning or a result. */
function errorLine(error: unknown): string {
  return oneLine(error instanceof Error ? error.message : String(error), 500);
}
