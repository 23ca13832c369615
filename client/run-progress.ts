import type { Client } from '@temporalio/client';
import { TRANSCRIPT_UNAVAILABLE } from '../common/constants';
import { agentIterationKey } from '../common/search-attributes';
import type { AgentRunResult } from '../common/agent-run-types';
import type { RunEnding } from './exit-codes';
import {
  formatApprovalDecided,
  formatApprovalRequested,
  formatModelFailure,
  formatModelTurn,
  formatRecord,
  formatRunEnding,
  formatToolCall,
  formatToolResult,
} from './format';
import { AuditReader, type AuditEntry } from './audit/audit-entries';
import { historyEvents } from './audit/history-reader';

/**
 * A run followed live from its Temporal history, as `agents watch` shows it: each model turn and
 * tool call as the history records it, inside an iteration as well as at its end. The history is the
 * record, so nothing is asked of a worker: a run is watched while every worker is down, and what
 * watch shows is what `agents export` tells afterwards.
 */

/** One step of a followed run, and whether it belongs to the iterations a watch shows in full. */
export interface RunProgress {
  entry: AuditEntry;
  /**
   * True for steps of the iteration under way when the watch began and of every later one; false
   * for the steps of iterations that were over by then.
   */
  current: boolean;
}

/** The kinds `watch` shows of every iteration: records, states and the end. */
const KINDS_ALWAYS_SHOWN = new Set<AuditEntry['kind']>(['notice', 'state', 'run_ended']);

/** The kinds `watch` shows of the current iterations, besides the ones it always shows. */
const KINDS_SHOWN_IN_FULL = new Set<AuditEntry['kind']>([
  'model_output',
  'model_failed',
  'tool_call',
  'tool_result',
  'tool_failed',
  'permission_requested',
  'permission_decided',
]);

/**
 * States a person is told about: running and sleeping alternate every iteration, and the end is
 * told by its own line.
 */
const NEWS_STATES = new Set(['awaiting_approval', 'paused_budget', 'stopping']);

/**
 * Follows the run `workflowId` from its latest execution to its end, through every continue-as-new:
 * each audit entry of each event as the server writes it, by long-polling the history. Ends after the
 * entry of the event that closed the run.
 */
export async function* followRun(client: Client, workflowId: string): AsyncGenerator<RunProgress> {
  const description = await client.workflow.getHandle(workflowId).describe();
  let runId = description.runId;
  // Events up to this one were written before the watch began; the iteration then under way is
  // shown in full, so a watch begun in the middle of a long iteration sees all of it.
  let writtenBefore = description.historyLength;
  const iterationUnderWay = description.typedSearchAttributes.get(agentIterationKey) ?? 0;
  const reader = new AuditReader(workflowId);
  for (;;) {
    let continuedAs: string | undefined;
    for await (const event of historyEvents(client, workflowId, runId, { follow: true })) {
      const live = Number(event.eventId ?? 0) > writtenBefore;
      for (const entry of reader.read(runId, event)) {
        if (entry.kind === 'continued_as_new') continuedAs = entry.newRunId;
        yield { entry, current: live || (entry.iteration ?? 0) >= iterationUnderWay };
      }
    }
    if (continuedAs === undefined) return;
    runId = continuedAs;
    writtenBefore = 0;
  }
}

/** Whether `watch` shows a step: of iterations over before it began, only records and states. */
export function isWatched({ entry, current }: RunProgress): boolean {
  if (entry.kind === 'notice') return entry.record !== undefined;
  if (entry.kind === 'model_failed' && entry.failureType === TRANSCRIPT_UNAVAILABLE) {
    // The worker lacked the conversation and the turn was asked again with all of it: not news.
    return false;
  }
  return KINDS_ALWAYS_SHOWN.has(entry.kind) || (current && KINDS_SHOWN_IN_FULL.has(entry.kind));
}

/** How the run ended, from the entry of the event that closed it. */
export function runEnding(entry: Extract<AuditEntry, { kind: 'run_ended' }>): RunEnding {
  switch (entry.outcome) {
    case 'completed':
      return { outcome: 'completed', result: entry.result as AgentRunResult };
    case 'terminated':
      return { outcome: 'terminated', message: entry.reason ?? '' };
    default:
      return { outcome: entry.outcome, message: entry.error ?? '' };
  }
}

/**
 * The lines a person reads of a followed run, step by step. It numbers the model turns of each
 * iteration (`model turn 3.2`), counting the ones before the watch began too.
 */
export class RunProgressText {
  /** The first model call of each iteration seen, by iteration. */
  private readonly firstCall = new Map<number, number>();

  constructor(private readonly name: string) {}

  /** The lines of one step: none for steps `watch` leaves out. */
  lines(progress: RunProgress): string[] {
    const { entry } = progress;
    if (entry.kind === 'model_output' || entry.kind === 'model_failed') this.noteCall(entry);
    if (!isWatched(progress)) return [];
    switch (entry.kind) {
      case 'notice':
        return entry.record === undefined ? [] : [formatRecord(entry.record)];
      case 'state':
        return NEWS_STATES.has(entry.state) ? [`  · ${entry.state}`] : [];
      case 'model_output':
        return [formatModelTurn(this.turnLabel(entry), entry)];
      case 'model_failed':
        return [formatModelFailure(this.turnLabel(entry), entry)];
      case 'tool_call':
        return [formatToolCall(entry, this.name)];
      case 'tool_result':
      case 'tool_failed':
        return [formatToolResult(entry)];
      case 'permission_requested':
        return [formatApprovalRequested(entry, this.name)];
      case 'permission_decided':
        return [formatApprovalDecided(entry)];
      case 'run_ended':
        return [formatRunEnding(this.name, runEnding(entry))];
      default:
        return [];
    }
  }

  private noteCall(entry: { iteration?: number; callIndex?: number }): void {
    const iteration = entry.iteration ?? 0;
    if (entry.callIndex !== undefined && !this.firstCall.has(iteration)) {
      this.firstCall.set(iteration, entry.callIndex);
    }
  }

  /** `3.2` for the second model call of iteration 3; `3` when the call's index is unknown. */
  private turnLabel(entry: { iteration?: number; callIndex?: number }): string {
    const iteration = entry.iteration ?? 0;
    const first = this.firstCall.get(iteration);
    if (entry.callIndex === undefined || first === undefined) return String(iteration);
    return `${iteration}.${entry.callIndex - first + 1}`;
  }
}
