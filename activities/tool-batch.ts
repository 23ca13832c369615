import { Context } from '@temporalio/activity';
import type { ModelToolCall } from '../common/agent-run-types';
import {
  clampTimeoutS,
  isSandboxTool,
  type SandboxPolicy,
  type ToolCall,
  type ToolResult,
} from '../sandbox/tool-call';
import type { ToolExecutor } from './tool-executor';
import type { ToolServerClient } from './tool-server-client';

/** Input of one tool batch: the calls of one model answer, with IDs fixed by the workflow. */
export interface ToolBatchInput {
  trajectoryId: string;
  policy: SandboxPolicy;
  calls: Array<{ callId: string; call: ModelToolCall }>;
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

function failure(callId: string, error: string): ToolResult {
  return { callId, success: false, output: '', error, metadata: {} };
}

/**
 * Runs one batch of tool calls: sandbox tools through the worker's tool executor, any other tool on
 * the external tool server (SEED-BEHAVIOURS 30 for the messages when one is missing). Heartbeats every second, so a
 * killed worker's batch is retried elsewhere within the heartbeat timeout; the retry sends the same
 * callIds, and the sandbox server answers the calls it already ran with their stored results.
 */
export async function runToolBatch(
  input: ToolBatchInput,
  routes: { tools?: ToolExecutor; externalTools?: ToolServerClient },
): Promise<ToolResult[]> {
  const context = Context.current();
  const heartbeat = setInterval(() => context.heartbeat(), 1000);
  try {
    return await Promise.all(
      input.calls.map(async ({ callId, call }) => {
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
          return failure(
            callId,
            'No sandbox server configured: set AGENTS_SANDBOX_URLS (or run `agents dev`)',
          );
        }
        return routes.tools.execute(prepared);
      }),
    );
  } finally {
    clearInterval(heartbeat);
  }
}
