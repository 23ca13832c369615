import type { AgentStatus, IterationRecord, PendingPermission } from '../common/agent-run-types';
import { cutWithNote, visibleJson, visibleLine, visibleProse } from '../common/display-text';
import type { AgentListing } from './agents-client';
import type { RunEnding } from './exit-codes';
import type { AuditEntry } from './audit/audit-entries';

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

/** An audit entry of one kind, for the progress lines of `agents watch`. */
type EntryOf<Kind extends AuditEntry['kind']> = Extract<AuditEntry, { kind: Kind }>;

/** Characters of a tool call's input shown in a progress line; the rest is in the export. */
const PROGRESS_INPUT_CHARS = 120;

/** A model turn as it ends: its number in the iteration, tokens, tool calls, and the start of its text. */
export function formatModelTurn(label: string, entry: EntryOf<'model_output'>): string {
  const { inputTokens, outputTokens } = entry.usage;
  const calls =
    entry.toolCalls === 0 ? '' : `, ${entry.toolCalls} tool call${entry.toolCalls === 1 ? '' : 's'}`;
  const text = entry.text.trim() === '' ? '' : `: ${oneLine(entry.text, 80)}`;
  return `    model turn ${label}  ${inputTokens}→${outputTokens} tok${calls}${text}`;
}

/** A model turn that failed for good (after its retries). */
export function formatModelFailure(label: string, entry: EntryOf<'model_failed'>): string {
  return `    model turn ${label} failed: ${oneLine(entry.error, 200)}`;
}

/** A tool call the model asked for: the tool and the start of its input, saying where the rest is. */
export function formatToolCall(entry: EntryOf<'tool_call'>, agent: string): string {
  const input = cutWithNote(visibleJson(entry.arguments), PROGRESS_INPUT_CHARS, `agents export ${agent}`);
  return `    → ${visibleLine(entry.tool)} ${input}`;
}

/** A tool call's outcome: ok, or error with the first words of why. */
export function formatToolResult(entry: EntryOf<'tool_result'> | EntryOf<'tool_failed'>): string {
  const tool = visibleLine(entry.tool);
  if (entry.kind === 'tool_result' && entry.success) return `    ← ${tool} ok`;
  const why = entry.kind === 'tool_failed' ? entry.error : (entry.error ?? entry.output);
  return `    ← ${tool} error${why.trim() === '' ? '' : `: ${oneLine(why, 120)}`}`;
}

/** A permission request as it opens: its whole input, as every surface an approver reads shows it. */
export function formatApprovalRequested(entry: EntryOf<'permission_requested'>, agent: string): string {
  return `    ? ${entry.requestId} ${visibleLine(entry.tool)} ${visibleJson(entry.input)} waits for approval (agents approve|deny ${agent} ${entry.requestId})`;
}

/**
 * How a permission request was decided, for a person: `approved by ana`, `denied (timeout)`,
 * `approved by rule bash(git status*)`.
 */
export function describeDecision(entry: EntryOf<'permission_decided'>): string {
  const verdict = entry.approved ? 'approved' : 'denied';
  if (entry.via === 'signal')
    return entry.by === undefined ? verdict : `${verdict} by ${visibleLine(entry.by)}`;
  if (entry.via === 'rule') return `${verdict} by rule ${visibleLine(entry.rule ?? '')}`;
  return `${verdict} (${entry.via})`;
}

/** A permission request as it is decided. */
export function formatApprovalDecided(entry: EntryOf<'permission_decided'>): string {
  return `    ${entry.requestId} ${visibleLine(entry.tool)} ${describeDecision(entry)}`;
}

/** The one line that says how a run ended: its exit reason and totals, or how its workflow closed. */
export function formatRunEnding(agent: string, ending: RunEnding): string {
  if (ending.outcome === 'completed') {
    const { result } = ending;
    const { usage } = result;
    return `Agent ${agent} ended: ${result.exitReason} after ${result.iterations} iteration(s), ${usage.inputTokens} tokens in, ${usage.outputTokens} out, $${usage.costUsd.toFixed(4)}`;
  }
  const why = ending.message === '' ? '' : `: ${oneLine(ending.message, 300)}`;
  const closed = {
    failed: 'failed',
    terminated: 'was terminated',
    cancelled: 'was cancelled',
    timed_out: 'timed out',
  }[ending.outcome];
  return `Agent ${agent} ${closed}${why}`;
}
