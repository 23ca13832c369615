import type { AgentState, PendingPermission } from '../common/agent-run-types';
import { DEFAULT_PERMISSION_EXTENSION_S } from '../common/constants';
import { cutWithNote, markdownFence, markdownText, visibleJson } from '../common/display-text';

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

/**
 * How much of a request's input the details show: a command is far shorter, and a long `write_file`
 * content is cut with a note saying how many characters `agents pending` adds.
 */
const DETAILS_INPUT_MAX_CHARS = 10_000;

/** The exact `permission` signal input that approves a request, as the Web UI's form takes it. */
export function approveSignalJson(requestId: string): string {
  return JSON.stringify({ requestId, approve: true });
}

/**
 * Renders the run's current details as Markdown for the Temporal Web UI, including the exact
 * signal JSON a person can paste into the UI's signal form for each decision waiting on them.
 * Nothing the model wrote is live Markdown: a request's input is in a fenced block, controls and
 * invisible characters shown as escapes, and its rationale, the summary and errors are escaped, so
 * model text can neither render an image or link nor pose as the page's own words.
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
      `**Approval needed** (${request.requestId}, expires ${request.expiresAt}): ${markdownText(request.rationale)}`,
      markdownFence(
        cutWithNote(visibleJson(request.input), DETAILS_INPUT_MAX_CHARS, 'agents pending shows them all'),
        'json',
      ),
      `Approve: send signal \`permission\` with input \`${approveSignalJson(request.requestId)}\``,
      `Deny: \`${JSON.stringify({ requestId: request.requestId, approve: false })}\` · more time: \`${JSON.stringify({ requestId: request.requestId, extendS: DEFAULT_PERMISSION_EXTENSION_S })}\``,
    );
  }
  if (view.pauseReason !== null) {
    lines.push(
      '',
      `**Paused:** ${markdownText(view.pauseReason)}`,
      'Resume: send signal `resume` with input `{}`, or with new budgets, e.g. `{"budgets": {"sessionTokens": 400000}}`',
    );
  }
  if (view.lastSummary !== undefined) lines.push('', `**Last summary:** ${markdownText(view.lastSummary)}`);
  if (view.lastError !== null) lines.push('', `**Last error:** ${markdownText(view.lastError)}`);
  if (view.state !== 'stopped' && view.state !== 'failed') {
    lines.push('', 'To stop: send signal `stop` with input `{"reason": "…"}`');
  }
  return lines.join('\n');
}
