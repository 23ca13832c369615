import type { AgentStatus, IterationRecord, PendingPermission } from '../common/agent-run-types';
import { visibleJson, visibleLine, visibleProse } from '../common/display-text';
import type { AgentListing } from './agents-client';

/**
 * Model text on one line for a terminal: controls, bidi and invisible characters shown as escapes
 * first, so the cut can never leave half a terminal sequence live.
 */
function oneLine(text: string, max: number): string {
  const flat = visibleProse(text);
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/** One iteration record on one line: number, status, time, tokens, summary. */
export function formatRecord(record: IterationRecord): string {
  const tokens = `${record.tokensIn}→${record.tokensOut} tok`;
  return `  #${record.iteration} ${record.status.padEnd(10)} ${record.durationS.toFixed(1).padStart(5)}s ${tokens.padEnd(16)} ${oneLine(record.summary, 110)}`;
}

/** A table of runs for `agents list`. */
export function formatListings(listings: AgentListing[]): string {
  if (listings.length === 0) return 'No agent runs.';
  const rows = listings.map((run) => [
    run.name,
    run.state ?? '-',
    String(run.iteration ?? '-'),
    run.template ?? '-',
    run.executionStatus.toLowerCase(),
    run.startTime.toISOString().replace('T', ' ').slice(0, 19),
  ]);
  const header = ['NAME', 'STATE', 'ITER', 'TEMPLATE', 'EXECUTION', 'STARTED (UTC)'];
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => row[column]!.length)),
  );
  return [header, ...rows]
    .map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('  '))
    .join('\n');
}

/** The `status` query answer for people. */
export function formatStatus(status: AgentStatus): string {
  const lines = [
    `Agent ${status.name} (template ${status.template})`,
    `  state       ${status.state}${status.exitReason === null ? '' : ` (exit: ${status.exitReason})`}`,
    `  iteration   ${status.iteration}${status.maxIterations === null ? '' : ` of ${status.maxIterations}`}`,
    `  usage       ${status.usage.inputTokens} tokens in, ${status.usage.outputTokens} out, $${status.usage.costUsd.toFixed(4)}`,
    `  started     ${status.startedAt}`,
    `  updated     ${status.updatedAt}`,
  ];
  for (const request of status.pendingPermissions) {
    lines.push(
      `  pending     ${request.requestId} ${visibleLine(request.tool)} ${visibleJson(request.input)} (expires ${request.expiresAt})`,
    );
  }
  if (status.pauseReason !== null)
    lines.push(`  paused      ${visibleProse(status.pauseReason)} (\`agents resume ${status.name}\`)`);
  lines.push(`  budgets     ${formatBudgets(status)}`);
  if (status.lastError !== null) lines.push(`  last error  ${oneLine(status.lastError, 200)}`);
  if (status.stopReason !== null) lines.push(`  stop reason ${visibleProse(status.stopReason)}`);
  if (status.ignoredSignals > 0) lines.push(`  ignored signals ${status.ignoredSignals}`);
  return lines.join('\n');
}

function formatBudgets(status: AgentStatus): string {
  const limit = (value: number, unit: (value: number) => string) => (value === 0 ? 'unlimited' : unit(value));
  const tokens = (value: number) => `${value} tokens`;
  const usd = (value: number) => `$${value.toFixed(2)}`;
  const { budgets } = status;
  const daily =
    status.dailyUsage === null
      ? ''
      : ` (today ${status.dailyUsage.tokens} tokens, $${status.dailyUsage.costUsd.toFixed(4)})`;
  return `session ${limit(budgets.sessionTokens, tokens)} / ${limit(budgets.sessionCostUsd, usd)}, daily ${limit(budgets.dailyTokens, tokens)} / ${limit(budgets.dailyCostUsd, usd)}${daily}`;
}

/**
 * Pending permission requests for `agents pending`: the tool call's whole input on one line, never
 * cut, with every control or invisible character shown as its escape, then why it asks and the
 * commands that decide it.
 */
export function formatPending(pending: Array<{ name: string; request: PendingPermission }>): string {
  if (pending.length === 0) return 'No permission requests are waiting.';
  return pending
    .map(
      ({ name, request }) =>
        `${name}  ${request.requestId}  ${visibleLine(request.tool)} ${visibleJson(request.input)}\n    ${visibleProse(request.rationale)}; expires ${request.expiresAt}\n    agents approve ${name} ${request.requestId}   |   agents deny ${name} ${request.requestId}`,
    )
    .join('\n');
}
