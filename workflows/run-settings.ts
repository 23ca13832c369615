import type { AgentRunInput } from '../common/agent-input';
import {
  DEFAULT_CONTEXT_BUDGET_TOKENS,
  DEFAULT_ERROR_BACKOFF_S,
  DEFAULT_PERMISSION_TIMEOUT_S,
} from '../common/constants';

/**
 * The settings of a run whose input may predate some of them. A run started by an earlier version
 * lacks the permission policy, budgets, notices and guard limits; it keeps behaving as it was
 * started: tools run without asking, no budget, no guard that could end it where it used to go on.
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
    contextBudgetTokens: partial.contextBudgetTokens ?? DEFAULT_CONTEXT_BUDGET_TOKENS,
    guards: {
      errorBackoffS: DEFAULT_ERROR_BACKOFF_S,
      sameFailureLimit: Number.MAX_SAFE_INTEGER,
      anyFailureLimit: Number.MAX_SAFE_INTEGER,
      stagnationWindow: 0,
      ...partial.guards,
    },
  };
}

/**
 * Marks executions that send notices and use the daily ledger. Replaying an execution recorded
 * before those existed, `patched` answers false, and the run schedules neither.
 */
export const RUNNER_COMMANDS_PATCH = 'notices-and-daily-ledger';
