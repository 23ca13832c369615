import { StatefulSandbox } from './stateful-sandbox';
import { SandboxError, type ToolCall } from './tool-call';

/**
 * The long-lived sandboxes of this process, one per trajectory, shared by the `bash_stateful` and
 * `tmux` tools. A trajectory's calls use its sandbox one at a time (the server's lanes already
 * serialise them; this also covers direct callers). A sandbox is replaced when it has ended (a
 * timeout tore it down), when the call's network policy or workspace differs from the one it was
 * started with, and it is closed after {@link STATEFUL_IDLE_CLOSE_MS} without calls, on release and
 * when the server closes ({@link closeStatefulSessions}).
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
}

const slots = new Map<string, SessionSlot>();

/**
 * Runs `task` with the trajectory's long-lived sandbox for `workspace`, starting one when needed,
 * after the trajectory's earlier calls. `started` tells the task whether (and why) the sandbox is new.
 */
export function withStatefulSandbox<T>(
  call: ToolCall,
  workspace: string,
  signal: AbortSignal,
  task: (sandbox: StatefulSandbox, started: SessionStart) => Promise<T>,
): Promise<T> {
  let slot = slots.get(call.trajectoryId);
  if (slot === undefined) {
    slot = { sandbox: undefined, tail: Promise.resolve(), pending: 0, generation: 0, idleTimer: undefined };
    slots.set(call.trajectoryId, slot);
  }
  const current = slot;
  current.pending += 1;
  clearTimeout(current.idleTimer);
  const run = async (): Promise<T> => {
    try {
      const { sandbox, started } = await sandboxFor(current, call, workspace, signal);
      return await task(sandbox, started);
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
): Promise<{ sandbox: StatefulSandbox; started: SessionStart }> {
  const previous = slot.sandbox;
  if (
    previous !== undefined &&
    previous.alive &&
    previous.network === call.policy.network &&
    previous.workspace === workspace
  ) {
    return { sandbox: previous, started: undefined };
  }
  let started: SessionStart = 'new';
  if (previous !== undefined) {
    if (previous.alive) {
      started = previous.workspace === workspace ? 'policy-changed' : 'workspace-changed';
    }
    slot.sandbox = undefined;
    await previous.close();
  }
  const generation = slot.generation;
  const sandbox = await StatefulSandbox.start(workspace, call.policy, signal);
  if (slot.generation !== generation) {
    await sandbox.close();
    throw new SandboxError('The stateful session was closed while starting');
  }
  slot.sandbox = sandbox;
  return { sandbox, started };
}

/** After a trajectory's last queued call: forget a dead sandbox, and close a live one once idle. */
function settle(trajectoryId: string, slot: SessionSlot): void {
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
