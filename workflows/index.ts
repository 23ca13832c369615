/** Entry point of the workflow bundle: every workflow type the agents worker registers. */
export { agentRun } from './agent-run';
export { dailyBudgetLedger } from './daily-ledger';
