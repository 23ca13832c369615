import type { AgentStatus, IterationRecord } from '../common/agent-run-types';
import type { AgentListing } from './agents-client';

function oneLine(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ').trim();
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
  if (status.pendingPermissions.length > 0)
    lines.push(`  pending     ${status.pendingPermissions.length} permission request(s)`);
  if (status.lastError !== null) lines.push(`  last error  ${oneLine(status.lastError, 200)}`);
  if (status.stopReason !== null) lines.push(`  stop reason ${status.stopReason}`);
  if (status.ignoredSignals > 0) lines.push(`  ignored signals ${status.ignoredSignals}`);
  return lines.join('\n');
}
