import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { formatBytes } from './byte-size';
import { processTree, readProcessChildren } from './process-tree-memory';

/**
 * The disk quota of a workspace. The workspace is a folder on the host's disk and the kernel's
 * quotas are not available (no project quotas on it), so a watchdog measures it while anything of
 * its trajectory's sandbox runs (a `bash` call, or a stateful session, whose background processes
 * can write between calls) and the holder that takes it over the quota is killed.
 *
 * Usage is `du -s -x -P --block-size=1`: allocated blocks, not apparent size (a sparse file counts
 * what it really takes), each hard-linked file once, symlinks never followed, one file system; it
 * reads metadata only, on the host, where the sandbox cannot touch it. The walk runs every
 * `max(250 ms, 10 × the last walk's duration)`, so it costs at most a tenth of a core however big
 * the workspace.
 *
 * Worst case: the quota plus what the sandbox writes in one interval and one walk (write rate ×
 * (interval + walk), e.g. 1 GB/s × 260 ms ≈ 260 MB on a small workspace; measured here: 20-250 MiB
 * over a 64 MiB quota at 150 MiB/s-1.1 GiB/s); one write or `fallocate` is further bounded by
 * RLIMIT_FSIZE, 100 MiB per file. A call shorter than one interval is measured right after it ends;
 * the next call then starts over the quota and is measured at once. A file deleted while a process
 * of the sandbox still holds it open or mapped takes disk that no walk sees: those are found through
 * /proc/<pid>/fd and /proc/<pid>/map_files of the sandbox's processes and counted too (map_files
 * needs a root server). Not counted when the server is not root: folders the sandbox made unreadable
 * to their owner.
 */

/** Shortest time between two walks of one workspace. */
export const DISK_SAMPLE_MIN_INTERVAL_MS = 250;

/** The time between two walks is at least this many times the last walk's duration. */
export const DISK_SAMPLE_COST_FACTOR = 10;

/** Block size the quota check of a write rounds up to: a new file takes whole blocks. */
const BLOCK_BYTES = 4096;

/**
 * Bytes the workspace's files take on disk. A file that vanishes during the walk makes `du` exit
 * non-zero but still print the total of the rest, which is taken. Rejects when `du` prints none.
 */
export function measureWorkspaceBytes(workspace: string): Promise<number> {
  return new Promise((resolve, reject) => {
    execFile(
      'du',
      ['-s', '-x', '-P', '--block-size=1', '--', workspace],
      { env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' }, maxBuffer: 64 * 1024 },
      (error, stdout) => {
        const bytes = Number.parseInt(stdout, 10);
        if (Number.isSafeInteger(bytes)) resolve(bytes);
        else reject(error ?? new Error(`du printed no total for the workspace`));
      },
    );
  });
}

/**
 * Bytes taken on `device` by files that processes of the trees rooted at `rootPids` hold open or
 * mapped after they were deleted, each file once.
 */
export function deletedHeldFileBytes(rootPids: readonly number[], device: number): number {
  if (rootPids.length === 0) return 0;
  const children = readProcessChildren();
  const counted = new Set<number>();
  let bytes = 0;
  const count = (handle: string): void => {
    try {
      const stats = statSync(handle);
      if (stats.nlink !== 0 || stats.dev !== device || counted.has(stats.ino) || !stats.isFile()) return;
      counted.add(stats.ino);
      bytes += stats.blocks * 512;
    } catch {
      // Closed or ended meanwhile.
    }
  };
  for (const pid of new Set(rootPids.flatMap((rootPid) => processTree(rootPid, children)))) {
    for (const descriptor of listFolder(`/proc/${pid}/fd`)) count(`/proc/${pid}/fd/${descriptor}`);
    let maps = '';
    try {
      maps = readFileSync(`/proc/${pid}/maps`, 'utf8');
    } catch {
      continue;
    }
    for (const line of maps.split('\n')) {
      if (line.endsWith(' (deleted)')) count(`/proc/${pid}/map_files/${line.slice(0, line.indexOf(' '))}`);
    }
  }
  return bytes;
}

function listFolder(folder: string): string[] {
  try {
    return readdirSync(folder);
  } catch {
    return [];
  }
}

function deviceOf(folder: string): number | undefined {
  try {
    return statSync(folder).dev;
  } catch {
    return undefined;
  }
}

/** Something that can write into a workspace while it is watched: one sandbox. */
interface DiskHolder {
  /** bwrap's host process: the root of the sandbox's process tree. */
  rootPid: number;
  quotaBytes: number;
  /**
   * The lowest usage seen while this holder was watched. A holder that starts over the quota may
   * run (to delete files) and is killed only when usage grows past the lowest point it reached.
   */
  lowestBytes: number | undefined;
  onOver: (usedBytes: number) => void;
  /** `onOver` was called; the holder waits for its sandbox to end. */
  over: boolean;
}

/** The watch of one workspace, shared by every holder on it. */
class WorkspaceDiskWatch {
  readonly holders = new Set<DiskHolder>();
  /** The last measurement, kept while no holder runs so the next one knows where it starts. */
  lastBytes: number | undefined;
  private lastWalkMs = 0;
  private walking = false;
  private timer: NodeJS.Timeout | undefined;
  /** A walk is owed once the one in progress ends. */
  private walkAgain = false;

  constructor(private readonly workspace: string) {}

  /**
   * Where the workspace stands before a new holder starts: the last measurement, unless a walk is
   * under way or the last holder just left (what it wrote is not measured yet); the next walk's
   * result is the starting point then.
   */
  startingPoint(): number | undefined {
    const lastWalkDue = this.timer !== undefined && this.holders.size === 0;
    return this.walking || lastWalkDue ? undefined : this.lastBytes;
  }

  add(holder: DiskHolder): void {
    this.holders.add(holder);
    // Where the last measurement is missing or over a quota, a holder is measured at once.
    const urgent = holder.lowestBytes === undefined || holder.lowestBytes >= holder.quotaBytes;
    if (urgent) this.walkSoon(0);
    else if (this.timer === undefined && !this.walking) this.walkSoon(this.interval());
  }

  remove(holder: DiskHolder): void {
    if (!this.holders.delete(holder)) return;
    // One last walk after the last holder, so that what a short call wrote is known at the next start.
    if (this.holders.size === 0) this.walkSoon(0);
  }

  private interval(): number {
    return Math.max(DISK_SAMPLE_MIN_INTERVAL_MS, DISK_SAMPLE_COST_FACTOR * this.lastWalkMs);
  }

  private walkSoon(delayMs: number): void {
    if (this.walking) {
      if (delayMs === 0) this.walkAgain = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.walk(), delayMs);
    this.timer.unref();
  }

  private async walk(): Promise<void> {
    this.timer = undefined;
    this.walking = true;
    this.walkAgain = false;
    const startedAt = performance.now();
    let bytes: number | undefined;
    try {
      bytes = await measureWorkspaceBytes(this.workspace);
      const device = deviceOf(this.workspace);
      if (device !== undefined) {
        const rootPids = [...this.holders].map((holder) => holder.rootPid);
        bytes += deletedHeldFileBytes(rootPids, device);
      }
    } catch {
      // Gone (released) or unreadable: nothing to hold against anyone this time.
    }
    this.lastWalkMs = performance.now() - startedAt;
    this.walking = false;
    if (bytes !== undefined) {
      this.lastBytes = bytes;
      knownUsage.set(this.workspace, bytes);
      for (const holder of this.holders) {
        if (holder.over) continue;
        holder.lowestBytes = Math.min(holder.lowestBytes ?? bytes, bytes);
        if (bytes > Math.max(holder.quotaBytes, holder.lowestBytes)) {
          // Kept until its sandbox has ended: what it wrote between this walk and its death is
          // measured by the walk after it leaves.
          holder.over = true;
          holder.onOver(bytes);
        }
      }
    }
    if (this.walkAgain) this.walkSoon(0);
    else if (this.holders.size > 0) this.walkSoon(this.interval());
    else if (workspaceWatches.get(this.workspace) === this) workspaceWatches.delete(this.workspace);
  }
}

/** Watches by workspace folder; an idle one stays while its last walk is pending. */
const workspaceWatches = new Map<string, WorkspaceDiskWatch>();

/** The last measured usage of each workspace no longer watched, so a new holder knows where it starts. */
const knownUsage = new Map<string, number>();

function watchFor(workspace: string): WorkspaceDiskWatch {
  let watch = workspaceWatches.get(workspace);
  if (watch === undefined) {
    watch = new WorkspaceDiskWatch(workspace);
    watch.lastBytes = knownUsage.get(workspace);
    workspaceWatches.set(workspace, watch);
  }
  return watch;
}

/**
 * Watches `workspace` for one sandbox (bwrap's host process `rootPid`) that can write into it and calls `onOver` once, with the
 * usage measured, when that is over `quotaBytes` (or, for a sandbox that started over it, when it
 * grows past the lowest usage seen since); the caller kills the sandbox. Returns the function that
 * stops watching, to be called once the sandbox has ended.
 */
export function watchWorkspaceDisk(
  workspace: string,
  rootPid: number,
  quotaBytes: number,
  onOver: (usedBytes: number) => void,
): () => void {
  const watch = watchFor(workspace);
  const holder: DiskHolder = {
    rootPid,
    quotaBytes,
    lowestBytes: watch.startingPoint(),
    onOver,
    over: false,
  };
  watch.add(holder);
  return () => watch.remove(holder);
}

/** Forgets what was measured of `workspace`, when it is released or deleted. */
export function forgetWorkspaceUsage(workspace: string): void {
  knownUsage.delete(workspace);
}

/**
 * Why a write of `addedBytes` into `workspace` is refused, or undefined when it fits under
 * `quotaBytes`. Measured afresh, so it also holds between calls. A write that replaces a file is
 * counted as if it added all its bytes: near the quota, deleting first is what frees room.
 */
export async function diskQuotaRefusal(
  workspace: string,
  quotaBytes: number,
  addedBytes: number,
): Promise<string | undefined> {
  const usedBytes = await measureWorkspaceBytes(workspace);
  const added = Math.ceil(addedBytes / BLOCK_BYTES) * BLOCK_BYTES;
  if (usedBytes + added <= quotaBytes) return undefined;
  return `Write refused: it would take the workspace over its disk quota (${formatBytes(usedBytes)} used of ${formatBytes(quotaBytes)}, this write adds ${formatBytes(addedBytes)}): delete files to go on`;
}
