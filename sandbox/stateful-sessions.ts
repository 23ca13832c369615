import { isDeepStrictEqual } from 'node:util';
import type { NetworkEgress } from './network-proxy';
import {
  DEFAULT_SANDBOX_TOTALS,
  describeLimitKill,
  type SandboxLimitKill,
  type SandboxTotals,
} from './sandbox-watchdog';
import { StatefulSandbox } from './stateful-sandbox';
import { SandboxError, type ToolCall } from './tool-call';

/**
 * The long-lived sandboxes of this process, one per trajectory, shared by the `bash_stateful` and
 * `tmux` tools. A trajectory's calls use its sandbox one at a time (the server's lanes already
 * serialise them; this also covers direct callers). A sandbox is replaced when it has ended (a
 * timeout tore it down), when the call's network policy or workspace differs from the one it was
 * started with, and it is closed after {@link STATEFUL_IDLE_CLOSE_MS} without calls, on release and
 * when the server closes ({@link closeStatefulSessions}).
 *
 * At most `maxSessions` of them live at once (see `SandboxTotals`). A call that would start one more
 * closes the longest-idle session (no call queued or running) to make room, and that trajectory's
 * next call is told so; when every session is busy, the call is refused with a message naming the
 * cap. Evicting rather than always refusing: sessions idle for up to {@link STATEFUL_IDLE_CLOSE_MS}
 * would otherwise lock every other run out of the stateful tools on a busy server, and an idle
 * session is only closed a little before its time.
 */

/** A session with no call for this long is closed; the next call starts a fresh one. */
export const STATEFUL_IDLE_CLOSE_MS = 10 * 60 * 1000;

/**
 * Why the sandbox a call runs in was started for it: none was running (or the last one ended), or the
 * running one had another network policy or workspace. Undefined when it was already running.
 */
export type SessionStart = 'new' | 'policy-changed' | 'workspace-changed' | undefined;

interface SessionSlot {
  sandbox: StatefulSandbox | undefined;
  /** The end of the chain of this trajectory's calls. */
  tail: Promise<unknown>;
  /** Calls queued or running. */
  pending: number;
  /** Bumped by each close, so a sandbox that was starting meanwhile is not kept. */
  generation: number;
  idleTimer: NodeJS.Timeout | undefined;
  /** When the last call ended, to find the longest-idle session. */
  idleSince: number;
  /** The session was closed to make room for another; its next call is told so. */
  evicted: boolean;
}

const slots = new Map<string, SessionSlot>();

/** Sandboxes being started, counted against the cap with the live ones. */
let startingSessions = 0;

/**
 * What a call's task is told about the trajectory's sandbox: whether (and why) it was started for
 * this call, and, when the previous one was closed between calls (by the watchdog, or to make room
 * under the cap), why.
 */
export interface SessionContext {
  started: SessionStart;
  previousLimitKill: SandboxLimitKill | undefined;
  /** The sentence that says why the previous session was closed between calls, if it was. */
  previousClosed: string | undefined;
}

/** Stateful sandboxes alive now in this process. */
export function liveStatefulSessions(): number {
  let live = 0;
  for (const slot of slots.values()) if (slot.sandbox?.alive === true) live += 1;
  return live;
}

/**
 * Runs `task` with the trajectory's long-lived sandbox for `workspace`, starting one when needed,
 * after the trajectory's earlier calls. `started` tells the task whether (and why) the sandbox is
 * new, `context` also why the previous one was closed between calls. A new sandbox beyond
 * `totals.maxSessions` closes the longest-idle one first; when none is idle, this rejects with a
 * {@link SandboxError} naming the cap.
 */
export function withStatefulSandbox<T>(
  call: ToolCall,
  workspace: string,
  signal: AbortSignal,
  task: (sandbox: StatefulSandbox, started: SessionStart, context: SessionContext) => Promise<T>,
  totals: SandboxTotals = DEFAULT_SANDBOX_TOTALS,
  network?: NetworkEgress,
): Promise<T> {
  let slot = slots.get(call.trajectoryId);
  if (slot === undefined) {
    slot = {
      sandbox: undefined,
      tail: Promise.resolve(),
      pending: 0,
      generation: 0,
      idleTimer: undefined,
      idleSince: 0,
      evicted: false,
    };
    slots.set(call.trajectoryId, slot);
  }
  const current = slot;
  current.pending += 1;
  clearTimeout(current.idleTimer);
  const run = async (): Promise<T> => {
    try {
      const { sandbox, context } = await sandboxFor(current, call, workspace, signal, totals, network);
      return await task(sandbox, context.started, context);
    } finally {
      current.pending -= 1;
      if (current.pending === 0) settle(call.trajectoryId, current);
    }
  };
  const result = current.tail.then(run, run);
  current.tail = result.catch(() => undefined);
  return result;
}

/**
 * Closes the long-lived sandboxes of `trajectoryId`, or of every trajectory, killing everything in
 * them (shells, tmux sessions, background processes). A call running in one ends as its sandbox
 * does; the next call starts a fresh sandbox.
 */
export async function closeStatefulSessions(trajectoryId?: string): Promise<void> {
  const closing: Array<Promise<void>> = [];
  for (const [id, slot] of slots) {
    if (trajectoryId !== undefined && id !== trajectoryId) continue;
    slot.generation += 1;
    clearTimeout(slot.idleTimer);
    if (slot.sandbox !== undefined) closing.push(slot.sandbox.close());
    slot.sandbox = undefined;
    if (slot.pending === 0) slots.delete(id);
  }
  await Promise.all(closing);
}

async function sandboxFor(
  slot: SessionSlot,
  call: ToolCall,
  workspace: string,
  signal: AbortSignal,
  totals: SandboxTotals,
  network: NetworkEgress | undefined,
): Promise<{ sandbox: StatefulSandbox; context: SessionContext }> {
  const previous = slot.sandbox;
  if (
    previous !== undefined &&
    previous.alive &&
    isDeepStrictEqual(previous.network, call.policy.network) &&
    previous.workspace === workspace
  ) {
    return {
      sandbox: previous,
      context: { started: undefined, previousLimitKill: undefined, previousClosed: undefined },
    };
  }
  const previousLimitKill = previous?.alive === false ? previous.takeUnreportedLimitKill() : undefined;
  const previousClosed =
    previousLimitKill !== undefined
      ? describeLimitKill(previousLimitKill)
      : slot.evicted
        ? `It was closed to make room for another session: this sandbox server runs at most ${totals.maxSessions} at once (--max-sessions), and it was the longest idle`
        : undefined;
  slot.evicted = false;
  let started: SessionStart = 'new';
  if (previous !== undefined) {
    if (previous.alive) {
      started = previous.workspace === workspace ? 'policy-changed' : 'workspace-changed';
    }
    slot.sandbox = undefined;
    await previous.close();
  }
  if (liveStatefulSessions() + startingSessions >= totals.maxSessions) {
    const idlest = longestIdleSlot();
    if (idlest === undefined) {
      throw new SandboxError(
        `Too many stateful sessions: this sandbox server runs at most ${totals.maxSessions} at once (--max-sessions) and all of them are in use. Use bash meanwhile, or try again later`,
      );
    }
    idlest.generation += 1;
    idlest.evicted = true;
    clearTimeout(idlest.idleTimer);
    const evicted = idlest.sandbox;
    idlest.sandbox = undefined;
    await evicted?.close();
  }
  const generation = slot.generation;
  startingSessions += 1;
  let sandbox: StatefulSandbox;
  try {
    sandbox = await StatefulSandbox.start(workspace, call.policy, signal, totals, network);
  } finally {
    startingSessions -= 1;
  }
  if (slot.generation !== generation) {
    await sandbox.close();
    throw new SandboxError('The stateful session was closed while starting');
  }
  slot.sandbox = sandbox;
  return { sandbox, context: { started, previousLimitKill, previousClosed } };
}

/** The live session with no call queued or running that has been idle longest, if any. */
function longestIdleSlot(): SessionSlot | undefined {
  let idlest: SessionSlot | undefined;
  for (const slot of slots.values()) {
    if (slot.pending > 0 || slot.sandbox?.alive !== true) continue;
    if (idlest === undefined || slot.idleSince < idlest.idleSince) idlest = slot;
  }
  return idlest;
}

/** After a trajectory's last queued call: forget a dead sandbox, and close a live one once idle. */
function settle(trajectoryId: string, slot: SessionSlot): void {
  slot.idleSince = performance.now();
  if (slot.sandbox !== undefined && !slot.sandbox.alive) slot.sandbox = undefined;
  if (slot.sandbox === undefined) {
    if (slots.get(trajectoryId) === slot) slots.delete(trajectoryId);
    return;
  }
  clearTimeout(slot.idleTimer);
  slot.idleTimer = setTimeout(() => {
    if (slot.pending === 0 && slots.get(trajectoryId) === slot) void closeStatefulSessions(trajectoryId);
  }, STATEFUL_IDLE_CLOSE_MS);
  // An idle session never keeps the process alive on its own.
  slot.idleTimer.unref();
}
