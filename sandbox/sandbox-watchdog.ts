import type { ChildProcess } from 'node:child_process';
import { formatBytes } from './byte-size';
import { watchProcessTreeMemory } from './process-tree-memory';
import { watchWorkspaceDisk } from './workspace-quota';

/**
 * The totals a sandbox server holds every trajectory to, beyond the per-process limits of
 * `bubblewrap.ts`: the disk its workspace takes (`workspace-quota.ts`), the memory of a whole
 * sandbox (`process-tree-memory.ts`), and how many stateful sessions live at once
 * (`stateful-sessions.ts`). The cgroups that would let the kernel count these are not delegated
 * here, so watchdogs sample them and kill the sandbox that goes over; each module states its
 * interval and worst case.
 */

/** The totals of one sandbox server; see the module comment. */
export interface SandboxTotals {
  /** Bytes each workspace may take on disk. */
  diskQuotaBytes: number;
  /** Bytes of memory each `bash` call or stateful session may hold, all its processes and its /tmp and /dev/shm together. */
  memoryLimitBytes: number;
  /** Stateful sessions (`bash_stateful`, `tmux`) alive at once in the server. */
  maxSessions: number;
}

/** Default disk quota of a workspace: 2 GiB. */
export const DEFAULT_DISK_QUOTA_BYTES = 2 * 1024 ** 3;

/** Default memory of one call's or session's processes together: 2 GiB. */
export const DEFAULT_MEMORY_LIMIT_BYTES = 2 * 1024 ** 3;

/**
 * Default number of live stateful sessions. Each may hold its memory limit (which counts its
 * 2 × 256 MiB of /tmp and /dev/shm), so 16 of them can hold 32 GiB at most, plus what each
 * allocates within one sampling interval.
 */
export const DEFAULT_MAX_SESSIONS = 16;

/** The totals a server has unless configured otherwise. */
export const DEFAULT_SANDBOX_TOTALS: Readonly<SandboxTotals> = {
  diskQuotaBytes: DEFAULT_DISK_QUOTA_BYTES,
  memoryLimitBytes: DEFAULT_MEMORY_LIMIT_BYTES,
  maxSessions: DEFAULT_MAX_SESSIONS,
};

/** Why a watchdog killed a sandbox, with what it measured. */
export type SandboxLimitKill =
  | { kind: 'disk-quota'; usedBytes: number; quotaBytes: number }
  | { kind: 'memory-limit'; usedBytes: number; limitBytes: number };

/**
 * The sentence that tells the model why its command was killed:
 * "Command killed: the workspace is over its disk quota (2.0 GiB used of 2.0 GiB): delete files to go on".
 */
export function describeLimitKill(kill: SandboxLimitKill): string {
  switch (kill.kind) {
    case 'disk-quota':
      return `Command killed: the workspace is over its disk quota (${formatBytes(kill.usedBytes)} used of ${formatBytes(kill.quotaBytes)}): delete files to go on`;
    case 'memory-limit':
      return `Command killed: its processes used over ${formatBytes(kill.limitBytes)} of memory`;
  }
}

/** What a watched sandbox is held to. */
export type WatchedTotals = Pick<SandboxTotals, 'diskQuotaBytes' | 'memoryLimitBytes'>;

/**
 * Watches the sandbox whose bwrap process is `child` on `workspace`: its workspace's disk and its
 * processes' memory. Calls `onKill` at most once, with the first limit crossed; the caller kills the
 * sandbox. Returns the function that stops both watches, to call once the sandbox has ended.
 */
export function watchSandbox(
  child: ChildProcess,
  workspace: string,
  totals: WatchedTotals,
  onKill: (kill: SandboxLimitKill) => void,
): () => void {
  const rootPid = child.pid;
  if (rootPid === undefined) return () => undefined;
  let fired = false;
  const fire = (kill: SandboxLimitKill): void => {
    if (fired) return;
    fired = true;
    onKill(kill);
  };
  const stopDisk = watchWorkspaceDisk(workspace, rootPid, totals.diskQuotaBytes, (usedBytes) =>
    fire({ kind: 'disk-quota', usedBytes, quotaBytes: totals.diskQuotaBytes }),
  );
  const stopMemory = watchProcessTreeMemory(rootPid, totals.memoryLimitBytes, (usedBytes) =>
    fire({ kind: 'memory-limit', usedBytes, limitBytes: totals.memoryLimitBytes }),
  );
  let stopped = false;
  // Only once the sandbox has ended: the disk watch then measures what it wrote up to its death.
  const stop = (): void => {
    if (stopped) return;
    stopped = true;
    stopDisk();
    stopMemory();
  };
  return stop;
}
