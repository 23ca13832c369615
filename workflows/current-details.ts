import type { AgentState, PendingPermission } from '../common/agent-run-types';
import { DEFAULT_PERMISSION_EXTENSION_S } from '../common/constants';

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
  pendingPermissions: PendingPermission[];
  pauseReason: string | null;
}

/** The exact `permission` signal input that approves a request, as the Web UI's form takes it. */
export function approveSignalJson(requestId: string): string {
  return JSON.stringify({ requestId, approve: true });
}

/**
 * Renders the run's current details as Markdown for the Temporal Web UI, including the exact
 * signal JSON a person can paste into the UI's signal form for each decision waiting on them.
 */
export function renderCurrentDetails(view: DetailsView): string {
  const progress =
    view.maxIterations === undefined ? `${view.iteration}` : `${view.iteration} of ${view.maxIterations}`;
  const lines = [
    `**State:** ${view.state} · **Iteration:** ${progress}`,
    `**Usage:** ${view.inputTokens} tokens in, ${view.outputTokens} out, $${view.costUsd.toFixed(4)}`,
  ];
  for (const request of view.pendingPermissions) {
    lines.push(
      '',
      `**Approval needed** (${request.requestId}, expires ${request.expiresAt}): ${request.rationale}`,
      '```json',
      JSON.stringify(request.input).slice(0, 2000),
      '```',
      `Approve: send signal \`permission\` with input \`${approveSignalJson(request.requestId)}\``,
      `Deny: \`${JSON.stringify({ requestId: request.requestId, approve: false })}\` · more time: \`${JSON.stringify({ requestId: request.requestId, extendS: DEFAULT_PERMISSION_EXTENSION_S })}\``,
    );
  }
  if (view.pauseReason !== null) {
    lines.push(
      '',
      `**Paused:** ${view.pauseReason}`,
      'Resume: send signal `resume` with input `{}`, or with new budgets, e.g. `{"budgets": {"sessionTokens": 400000}}`',
    );
  }
  if (view.lastSummary !== undefined) lines.push('', `**Last summary:** ${view.lastSummary}`);
  if (view.lastError !== null) lines.push('', `**Last error:** ${view.lastError}`);
  if (view.state !== 'stopped' && view.state !== 'failed') {
    lines.push('', 'To stop: send signal `stop` with input `{"reason": "…"}`');
  }
  return lines.join('\n');
}
