import type { WorkspaceSource } from '../common/agent-input';
import { circuitCooldownS, type GuardedIteration } from './guards';

/**
 * The one-line summaries a person reads in the Web UI's event timeline and `temporal workflow
 * show`: each activity and timer of a run says what it is for. They are user metadata of the
 * commands, not part of what replay compares, so they may read better without a patch.
 */

/** How many request IDs an approval timer names before it counts the rest. */
const APPROVAL_IDS_SHOWN = 3;

/**
 * The summary of a model call: its iteration and its place in the iteration ("model turn 3.2", the
 * second call of iteration 3), so every call of an iteration is told apart.
 */
export function modelTurnSummary(iteration: number, call: number): string {
  return `model turn ${iteration}.${call}`;
}

/**
 * A wait in whole units, the largest first: "45s", "30m", "10m30s", "2h", "1h30m". Never "0s": a
 * wait that rounds to nothing reads "1s".
 */
export function formatWait(ms: number): string {
  const totalS = Math.max(1, Math.round(ms / 1000));
  const hours = Math.floor(totalS / 3600);
  const minutes = Math.floor((totalS % 3600) / 60);
  const seconds = totalS % 60;
  const parts: string[] = [];
  if (hours > 0) parts.push(`${hours}h`);
  if (minutes > 0) parts.push(`${minutes}m`);
  if (seconds > 0 && hours === 0) parts.push(`${seconds}s`);
  return parts.join('');
}

/**
 * The summary of the timer that times out approval requests: the requests it waits for and how
 * long until the first of them expires ("approval pr_0123456789abcdef (30m)").
 */
export function approvalTimerSummary(requestIds: readonly string[], ms: number): string {
  const shown = requestIds.slice(0, APPROVAL_IDS_SHOWN).join(', ');
  const more =
    requestIds.length > APPROVAL_IDS_SHOWN ? ` +${requestIds.length - APPROVAL_IDS_SHOWN} more` : '';
  return `approval ${shown}${more} (${formatWait(ms)})`;
}

/**
 * The summary of the timer between iterations: `interval`, or why the pause is longer than that
 * (`error backoff` after a failed iteration, `circuit cooldown` while a model's breaker is open).
 */
export function pauseTimerSummary(iteration: GuardedIteration): string {
  if (circuitCooldownS(iteration) !== undefined) return 'circuit cooldown';
  return iteration.status === 'error' ? 'error backoff' : 'interval';
}

/** Hex digits of a digest or commit a summary shows: enough to tell runs apart at a glance. */
const SHORT_ID_CHARS = 12;

/**
 * The summary of the activity that prepares a run's workspace: what it starts from ("workspace:
 * folder 3f9a0c2b1d4e", "workspace: https://github.com/o/r@9c1e2d3f4a5b").
 */
export function workspaceSummary(workspace: WorkspaceSource): string {
  if (workspace.kind === 'folder') return `workspace: folder ${workspace.digest.slice(0, SHORT_ID_CHARS)}`;
  return `workspace: ${workspace.url}@${workspace.commit.slice(0, SHORT_ID_CHARS)}`;
}
