import { Context } from '@temporalio/activity';
import type { ModelToolCall } from '../common/agent-run-types';
import { clampTimeoutS, type SandboxPolicy, type ToolCall, type ToolResult } from '../sandbox/tool-call';
import type { ToolExecutor } from './tool-executor';

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
 * Runs one batch of tool calls through the worker's tool executor. Heartbeats every second, so a
 * killed worker's batch is retried elsewhere within the heartbeat timeout; the retry sends the same
 * callIds, and the sandbox server answers the calls it already ran with their stored results.
 */
export async function runToolBatch(
  input: ToolBatchInput,
  executor: ToolExecutor | undefined,
): Promise<ToolResult[]> {
  const context = Context.current();
  const heartbeat = setInterval(() => context.heartbeat(), 1000);
  try {
    return await Promise.all(
      input.calls.map(async ({ callId, call }) => {
        const prepared = prepareCall(input.trajectoryId, input.policy, callId, call);
        if ('success' in prepared) return prepared;
        if (executor === undefined) {
          return failure(
            callId,
            'No sandbox server configured: set AGENTS_SANDBOX_URLS (or run `agents dev`)',
          );
        }
        return executor.execute(prepared);
      }),
    );
  } finally {
    clearInterval(heartbeat);
  }
}
