import type { AgentState } from '../common/agent-run-types';

/** What the Web UI's "current details" panel shows about a run. */
export interface DetailsView {
  state: AgentState;
  iteration: number;
  maxIterations: number | undefined;
  lastSummary: string | undefined;
  inputTokens: number;
  outputTokens: number;
  costUsd: number;
  lastError: string | null;
}

/**
 * Renders the run's current details as Markdown for the Temporal Web UI, including the exact
 * signal JSON a person can paste into the UI's signal form.
 */
export function renderCurrentDetails(view: DetailsView): string {
  const progress =
    view.maxIterations === undefined ? `${view.iteration}` : `${view.iteration} of ${view.maxIterations}`;
  const lines = [
    `**State:** ${view.state} · **Iteration:** ${progress}`,
    `**Usage:** ${view.inputTokens} tokens in, ${view.outputTokens} out, $${view.costUsd.toFixed(4)}`,
  ];
  if (view.lastSummary !== undefined) lines.push('', `**Last summary:** ${view.lastSummary}`);
  if (view.lastError !== null) lines.push('', `**Last error:** ${view.lastError}`);
  if (view.state !== 'stopped' && view.state !== 'failed') {
    lines.push('', 'To stop: send signal `stop` with input `{"reason": "…"}`');
  }
  return lines.join('\n');
}
