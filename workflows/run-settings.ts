import type { AgentRunInput } from '../common/agent-input';
import {
  DEFAULT_CONTEXT_BUDGET_TOKENS,
  DEFAULT_ERROR_BACKOFF_S,
  DEFAULT_MAX_TOOL_CALLS_PER_ANSWER,
  DEFAULT_PERMISSION_TIMEOUT_S,
} from '../common/constants';

/**
 * The settings of a run whose input may predate some of them. A run started by an earlier version
 * lacks the permission policy, budgets, notices, guard limits and sandbox settings; it keeps behaving
 * as it was started: tools run without asking, no network, no budget, no guard that could end it
 * where it used to go on.
 * New runs always carry every field, because the client applies the schema's defaults.
 */
export function runSettings(input: AgentRunInput): AgentRunInput {
  const partial = input as Partial<AgentRunInput> & Pick<AgentRunInput, 'name' | 'template' | 'model'>;
  return {
    ...input,
    permissions: partial.permissions ?? {
      mode: 'auto-approve',
      rules: [],
      timeoutS: DEFAULT_PERMISSION_TIMEOUT_S,
      onDeny: 'stop',
    },
    budgets: partial.budgets ?? { sessionTokens: 0, sessionCostUsd: 0, dailyTokens: 0, dailyCostUsd: 0 },
    notifications: partial.notifications ?? { console: true, logFile: true },
    sandbox: partial.sandbox ?? { network: false, resetOnEnd: false },
    contextBudgetTokens: partial.contextBudgetTokens ?? DEFAULT_CONTEXT_BUDGET_TOKENS,
    guards: {
      errorBackoffS: DEFAULT_ERROR_BACKOFF_S,
      sameFailureLimit: Number.MAX_SAFE_INTEGER,
      anyFailureLimit: Number.MAX_SAFE_INTEGER,
      stagnationWindow: 0,
      emptyWindow: 0,
      // Not as it was started: an answer of thousands of calls would jam the run.
      maxToolCallsPerAnswer: DEFAULT_MAX_TOOL_CALLS_PER_ANSWER,
      ...partial.guards,
    },
  };
}

/**
 * Marks executions that send notices and use the daily ledger. Replaying an execution recorded
 * before those existed, `patched` answers false, and the run schedules neither.
 */
export const RUNNER_COMMANDS_PATCH = 'notices-and-daily-ledger';

/**
 * Marks executions that send their notices one after the other, each once the one before is
 * delivered. Replaying an execution recorded before, `patched` answers false, and its notices go
 * out all at once, as they did then.
 */
export const NOTICES_IN_ORDER_PATCH = 'notices-in-order';

/**
 * Marks executions that check their own input and keep `AgentState` true to the end: the final
 * state upserted before the execution fails or continues as new, and the next execution of the
 * chain started with the run's live state. Replaying an execution recorded before, `patched`
 * answers false, and the run issues none of those commands.
 */
export const RUN_INTEGRITY_PATCH = 'input-check-and-final-state';

/**
 * Marks executions in which a workflow cancellation (the Web UI's "Request Cancellation", `temporal
 * workflow cancel`) ends the run like a stop: requests closed, the end notice sent, the workspace
 * released, and a result with exitReason `cancelled`. Replaying an execution recorded before,
 * `patched` answers false, and a cancellation fails the run as it did then.
 */
export const CLEAN_CANCELLATION_PATCH = 'cancellation-ends-like-stop';

/**
 * Marks executions that keep what a model says within Temporal's limits: one notice for the
 * policy's verdicts on a batch instead of one per call, a model turn cancelled only once it has
 * reported the tokens it used, payload-size failures not retried, an iteration that ends its tool
 * rounds and a run that continues as new once the history reaches 10 MiB, and a bound on notices
 * in flight. Replaying
 * an execution recorded before, `patched` answers false, and the run issues the commands it did then.
 */
export const ANSWER_BOUNDS_PATCH = 'bounded-answers';

/**
 * Marks executions whose model turns do the run's bookkeeping on the way: a turn charges its own
 * spend to the daily ledger and brings back today's figure, so an iteration reads the ledger only
 * when it has to (no figure for today yet, spend left to charge, or near a daily limit), and it
 * delivers the notice of the iteration before, which then needs no activity of its own. Replaying
 * an execution recorded before, `patched` answers false, and the run reads the ledger before every
 * iteration and sends every notice through `notify`, as it did then.
 */
export const TURN_BOOKKEEPING_PATCH = 'model-turns-charge-and-notify';

/**
 * Marks executions that, near a daily limit, ask the daily ledger for room before each model call
 * (signal `reserve`) instead of reading it: the ledger decides in arrival order and counts what
 * earlier grants hold, so concurrent runs cannot all spend the last of a daily budget. Replaying an
 * execution recorded before, `patched` answers false, and the run reads the ledger as it did then.
 */
export const DAILY_RESERVATIONS_PATCH = 'daily-limit-reservations';
