import { Context } from '@temporalio/activity';
import { z } from 'zod';
import type { ModelToolCall } from '../common/agent-run-types';
import { TOOL_BATCH_RESULT_MAX_BYTES } from '../common/constants';
import {
  cutToJsonBytes,
  formatExactBytes,
  formatCount,
  jsonBytes,
  jsonStringBytes,
} from '../common/payload-bounds';
import {
  clampTimeoutS,
  isSandboxTool,
  type SandboxPolicy,
  toolResultSchema,
  type ToolCall,
  type ToolResult,
} from '../sandbox/tool-call';
import { parseMcpToolName, type McpServer } from '../common/mcp-servers';
import { mcpFailure } from '../common/mcp-tool-results';
import { measureToolCalls, type AgentMetrics } from './metrics';
import { traceToolCalls } from './call-spans';
import type { McpTools } from './mcp-tools';
import type { ToolExecutor } from './tool-executor';
import type { ToolServerClient } from './tool-server-client';

/** Input of one tool batch: the calls of one model answer, with IDs fixed by the workflow. */
export interface ToolBatchInput {
  trajectoryId: string;
  policy: SandboxPolicy;
  calls: Array<{ callId: string; call: ModelToolCall }>;
  /** The run's own MCP servers, for calls of `mcp__<server>__<tool>`; absent when it has none. */
  mcpServers?: McpServer[];
}

/** Where a batch's calls go. */
export interface ToolBatchRoutes {
  tools?: ToolExecutor;
  externalTools?: ToolServerClient;
  mcp?: McpTools;
  metrics?: AgentMetrics;
}

/** Policy fields a model may try to pass in its arguments; the run's input decides them instead. */
const POLICY_ARGUMENTS = ['allow_network', 'require_sandbox', 'require_stateful_sandbox'];

/**
 * The call the sandbox runs for what the model asked (SEED-BEHAVIOURS 29-32): aliases resolved,
 * policy fields discarded, `timeout` taken out of the arguments and clamped. A call that cannot run
 * is its error result instead.
 */
export function prepareCall(
  trajectoryId: string,
  policy: SandboxPolicy,
  callId: string,
  requested: ModelToolCall,
): ToolCall | ToolResult {
  const args = { ...requested.arguments };
  for (const field of POLICY_ARGUMENTS) delete args[field];
  const timeout = typeof args.timeout === 'number' ? args.timeout : undefined;
  delete args.timeout;
  let tool = requested.tool;
  if (tool === 'terminal') {
    if (args.background === true) {
      return failure(callId, 'terminal background execution is not supported in sandbox');
    }
    delete args.background;
    tool = 'bash';
  } else if (tool === 'terminal_stateful') {
    tool = 'bash_stateful';
  }
  return { callId, trajectoryId, tool, arguments: args, timeoutS: clampTimeoutS(timeout), policy };
}

/** What a call the sandbox would run gets when the worker has no sandbox server. */
const NO_SANDBOX = 'No sandbox server configured: set AGENTS_SANDBOX_URLS (or run `agents dev`)';

function failure(callId: string, error: string): ToolResult {
  return { callId, success: false, output: '', error, metadata: {} };
}

/**
 * Runs one batch of tool calls: sandbox tools through the worker's tool executor, any other tool on
 * the external tool server (SEED-BEHAVIOURS 30 for the messages when one is missing). Heartbeats every second, so a
 * killed worker's batch is retried elsewhere within the heartbeat timeout; the retry sends the same
 * callIds, and the sandbox server answers the calls it already ran with their stored results. The
 * heartbeats also carry the calls whose sandbox server stopped while running them, so the attempt
 * that runs them again marks their results as re-runs (see {@link RERUN_NOTE}). The results come
 * back cut to fit a payload's bound together (see {@link fitToolResults}).
 */
export async function runToolBatch(input: ToolBatchInput, routes: ToolBatchRoutes): Promise<ToolResult[]> {
  const context = Context.current();
  const { lost, answered } = earlierProgress(context.info.heartbeatDetails);
  // Every heartbeat carries all of it: one without details would erase them for the next attempt.
  const beat = () =>
    context.heartbeat({
      lostCallIds: [...lost],
      ...(answered.size === 0 ? {} : { mcpAnswered: [...answered.values()] }),
    } satisfies ToolBatchProgress);
  beat();
  const heartbeat = setInterval(beat, 1000);
  const attempt: BatchAttempt = {
    input,
    routes,
    lost,
    answered,
    beat,
    firstAttempt: context.info.attempt === 1,
    signal: context.cancellationSignal,
  };
  try {
    const results = await measureToolCalls(
      routes.metrics,
      input.calls,
      traceToolCalls(input.calls, async ({ callId, call }) => {
        if (parseMcpToolName(call.tool) !== undefined) return runMcpCall(attempt, callId, call);
        const prepared = prepareCall(input.trajectoryId, input.policy, callId, call);
        if ('success' in prepared) return prepared;
        if (!isSandboxTool(prepared.tool)) {
          if (routes.externalTools === undefined) {
            return failure(
              callId,
              `External tool not available (ToolServer not configured): ${prepared.tool}`,
            );
          }
          const { tool, arguments: args, timeoutS } = prepared;
          return routes.externalTools.execute(
            { callId, tool, arguments: args, timeoutS },
            context.cancellationSignal,
          );
        }
        if (routes.tools === undefined) {
          return failure(callId, NO_SANDBOX);
        }
        return runInSandbox(routes.tools, prepared, lost, beat);
      }),
    );
    return fitToolResults(results);
  } finally {
    clearInterval(heartbeat);
  }
}

/**
 * The line that opens the output of a call its sandbox server ran twice, so the model knows that
 * what the command did before the stop (a file appended to, a package half installed) may be there
 * twice.
 */
export const RERUN_NOTE = '[the sandbox server stopped during this command; it ran again from the start]';

/** What a tool batch's heartbeats carry to its next attempt. */
const toolBatchProgressSchema = z.object({
  /** Calls whose sandbox server broke the connection before answering them. */
  lostCallIds: z.array(z.string()),
  /** Results of calls to HTTP MCP servers, which no server stores for a retry. */
  mcpAnswered: z.array(toolResultSchema).optional(),
});
type ToolBatchProgress = z.infer<typeof toolBatchProgressSchema>;

/** What an earlier attempt recorded; nothing on a first attempt or from an older worker. */
function earlierProgress(heartbeatDetails: unknown): {
  lost: Set<string>;
  answered: Map<string, ToolResult>;
} {
  const parsed = toolBatchProgressSchema.safeParse(heartbeatDetails);
  if (!parsed.success) return { lost: new Set(), answered: new Map() };
  const answered = (parsed.data.mcpAnswered ?? []).map((result) => [result.callId, result] as const);
  return { lost: new Set(parsed.data.lostCallIds), answered: new Map(answered) };
}

/** One attempt of a batch, as its MCP calls need it. */
interface BatchAttempt {
  input: ToolBatchInput;
  routes: ToolBatchRoutes;
  lost: Set<string>;
  answered: Map<string, ToolResult>;
  beat: () => void;
  firstAttempt: boolean;
  signal: AbortSignal;
}

/**
 * Why an MCP call was not sent: an MCP server has no way to be told a call is a repeat, so a call
 * that may have reached it is never sent again. The model is told it may or may not have run.
 */
export const MCP_NOT_RESENT =
  'it was under way when its worker or sandbox server stopped, and an MCP server cannot be told a call is a retry, so it was not sent again: it may or may not have run';

/**
 * Runs one call of an MCP tool, at most once. A stdio server's call goes to the run's sandbox
 * server, which stores its result by callId like every call there, so a worker that dies is
 * answered from the store on retry; a call its sandbox server was running when it stopped is not
 * sent again. An HTTP server's call goes from the worker on the batch's first attempt only; its
 * result rides on the heartbeats, and a later attempt answers from those or says it was not sent
 * again ({@link MCP_NOT_RESENT}).
 */
async function runMcpCall(attempt: BatchAttempt, callId: string, call: ModelToolCall): Promise<ToolResult> {
  const { input, routes } = attempt;
  if (routes.mcp === undefined) return mcpFailure(callId, '?', call.tool, 'this worker runs no MCP tools');
  const context = { trajectoryId: input.trajectoryId, policy: input.policy, servers: input.mcpServers };
  const routed = routes.mcp.route(context, callId, call);
  if (routed.kind === 'failed') return routed.result;
  if (routed.kind === 'sandbox') {
    if (attempt.lost.has(callId)) return mcpFailure(callId, routed.server.name, call.tool, MCP_NOT_RESENT);
    if (routes.tools === undefined) {
      return failure(callId, NO_SANDBOX);
    }
    return runInSandbox(routes.tools, routed.call, attempt.lost, attempt.beat);
  }
  const recorded = attempt.answered.get(callId);
  if (recorded !== undefined) return recorded;
  if (!attempt.firstAttempt) return mcpFailure(callId, routed.server.name, routed.tool, MCP_NOT_RESENT);
  const result = await routes.mcp.callHttp(
    input.trajectoryId,
    routed.server,
    callId,
    routed.tool,
    call.arguments,
    attempt.signal,
    attempt.beat,
  );
  attempt.answered.set(callId, result);
  attempt.beat();
  return result;
}

/**
 * Errors of a connection that broke after the request went out: the server closed or reset it
 * before answering. A refused connection is not one: that request never reached a server.
 */
const CONNECTION_LOST_CODES = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);

/**
 * Runs one call on its sandbox server. When the connection breaks before the call's result, the
 * call is recorded as lost (and heartbeated at once) before the batch fails: the server stopped
 * with the call in its hands and kept no result, so the retry runs it again from the start, and
 * that result says so. A call whose result came before the break is stored on the server and
 * answered from there on the retry, unmarked.
 */
async function runInSandbox(
  tools: ToolExecutor,
  call: ToolCall,
  lost: Set<string>,
  recordProgress: () => void,
): Promise<ToolResult> {
  let result: ToolResult;
  try {
    result = await tools.execute(call);
  } catch (error) {
    if (CONNECTION_LOST_CODES.has(String((error as { code?: unknown }).code))) {
      lost.add(call.callId);
      recordProgress();
    }
    throw error;
  }
  if (!lost.has(call.callId)) return result;
  return {
    ...result,
    output: result.output === '' ? RERUN_NOTE : `${RERUN_NOTE}\n${result.output}`,
    metadata: { ...result.metadata, rerun: true },
  };
}

/**
 * The results of a batch cut to fit `maxBytes` together, so no batch of calls, however many and
 * however loud, makes an activity result Temporal refuses. Results under a fair share keep all of
 * their output; the larger ones share what is left evenly, their output (and error) cut with a
 * marker the model and the audit see.
 */
export function fitToolResults(results: ToolResult[], maxBytes = TOOL_BATCH_RESULT_MAX_BYTES): ToolResult[] {
  // One byte per result for the comma between them, two for the brackets.
  const sizes = results.map((result) => jsonBytes(result) + 1);
  if (sizes.reduce((sum, size) => sum + size, 2) <= maxBytes) return results;
  const share = fairShare(sizes, maxBytes - 2);
  return results.map((result, index) => (sizes[index]! <= share ? result : cutResult(result, share - 1)));
}

/**
 * The largest size every item may keep so that all fit in `budget` ("water filling"): items
 * smaller than it keep their size, the others are cut to it.
 */
function fairShare(sizes: number[], budget: number): number {
  const ascending = [...sizes].sort((first, second) => first - second);
  let remaining = budget;
  for (const [index, size] of ascending.entries()) {
    const even = Math.floor(remaining / (ascending.length - index));
    if (size > even) return even;
    remaining -= size;
  }
  return Number.POSITIVE_INFINITY;
}

/** Share of a cut result that its error, or its metadata, keeps at least or at most, beside the output. */
const SIDE_FIELD_SHARE = 0.25;

/** One result cut to `maxBytes`: its output and error shortened, its metadata dropped if it is large. */
function cutResult(result: ToolResult, maxBytes: number): ToolResult {
  const limit = `the results of one tool batch keep at most ${formatExactBytes(TOOL_BATCH_RESULT_MAX_BYTES)} together`;
  const metadataBytes = jsonBytes(result.metadata);
  const metadata =
    metadataBytes <= maxBytes * SIDE_FIELD_SHARE
      ? result.metadata
      : { metadataCut: `${formatCount(metadataBytes)} bytes of metadata were not kept; ${limit}` };
  const bare = { ...result, output: '', metadata, ...(result.error === undefined ? {} : { error: '' }) };
  // The empty strings' quotes are counted in `bare` and again by each cut: a little room is lost.
  const room = Math.max(0, maxBytes - jsonBytes(bare));
  if (result.error === undefined) {
    return { ...bare, output: cutToJsonBytes(result.output, room, limit) };
  }
  // The error keeps a quarter at least, and whatever the output leaves.
  const errorRoom = Math.min(
    jsonStringBytes(result.error),
    Math.max(Math.floor(room * SIDE_FIELD_SHARE), room - jsonStringBytes(result.output)),
  );
  return {
    ...bare,
    output: cutToJsonBytes(result.output, room - errorRoom, limit),
    error: cutToJsonBytes(result.error, errorRoom, limit),
  };
}
