import type { IterationRecord } from '../common/agent-run-types';
import { ERROR_MAX_CHARS, SUMMARY_MAX_CHARS } from '../common/constants';
import { roundUsd } from './budgets';

/** What an iteration produced, before it becomes a record. */
export interface IterationOutcome {
  iteration: number;
  startedAtMs: number;
  endedAtMs: number;
  text: string;
  status: IterationRecord['status'];
  tokensIn: number;
  tokensOut: number;
  costUsd: number;
  error?: string;
}

/** The tail of the model's text: the end of a turn is where the model writes its summary. */
export function summarize(text: string): string {
  const trimmed = text.trim();
  return trimmed === '' ? '(no output)' : trimmed.slice(-SUMMARY_MAX_CHARS);
}

/** Shortens a failure message for the iteration text, the record and the status. */
export function shortenError(message: string): string {
  return message.slice(0, ERROR_MAX_CHARS);
}

/** The marker appended to an iteration's text when its model call failed. */
export function errorMarker(message: string): string {
  return `\n[ERROR: ${shortenError(message)}]`;
}

/** Builds the record kept in workflow state, shown by `agents log` and returned by `iterations`. */
export function buildIterationRecord(outcome: IterationOutcome): IterationRecord {
  const record: IterationRecord = {
    iteration: outcome.iteration,
    timestamp: new Date(outcome.endedAtMs).toISOString(),
    startedAt: new Date(outcome.startedAtMs).toISOString(),
    summary: summarize(outcome.text),
    status: outcome.status,
    durationS: Math.round((outcome.endedAtMs - outcome.startedAtMs) / 100) / 10,
    tokensIn: outcome.tokensIn,
    tokensOut: outcome.tokensOut,
    costUsd: roundUsd(outcome.costUsd),
  };
  if (outcome.error !== undefined) record.error = shortenError(outcome.error);
  return record;
}
