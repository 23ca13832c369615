import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, statfsSync } from 'node:fs';

/**
 * Memory of a whole sandbox, not only of each of its processes: RLIMIT_AS bounds one process, but
 * 256 processes (RLIMIT_NPROC) of 1 GiB each would still take the host's memory. Without delegated
 * cgroups the kernel cannot count a process tree, so a watchdog samples it every
 * {@link MEMORY_SAMPLE_INTERVAL_MS}: the resident memory of every process below bwrap (found
 * through the parent of each process in /proc, since /proc/<pid>/task/<tid>/children is not built
 * into every kernel) plus what the sandbox's private /tmp and /dev/shm hold (memory-backed
 * folders that outlive the processes that filled them).
 *
 * Worst case: a tree can take its limit plus what it allocates in one interval before it is killed
 * (allocation rate × 100 ms: about 0.2-0.5 GiB at the 2-5 GiB/s a few cores fault pages in), and a
 * call shorter than one interval is never sampled (it can allocate at most that much anyway).
 * Resident memory counts shared pages (libraries, shared mappings) once per process, so the sum is
 * on the high side. Not counted: SysV shared memory segments that no process maps and memfds kept
 * only by descriptor; the sandbox's ipc namespace frees both when its last process ends.
 */

/** How often each watched tree is measured. */
export const MEMORY_SAMPLE_INTERVAL_MS = 100;

/** Memory-backed folders of a sandbox, as seen from inside it. */
const SANDBOX_TMPFS_FOLDERS = ['tmp', 'dev/shm'];

/** statfs type of tmpfs. */
const TMPFS_MAGIC = 0x01021994;

let pageBytesCache: number | undefined;

/** The kernel's page size, which /proc/<pid>/statm counts in. */
function pageBytes(): number {
  if (pageBytesCache === undefined) {
    try {
      pageBytesCache = Number.parseInt(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8' }), 10);
    } catch {
      pageBytesCache = 4096;
    }
    if (!Number.isSafeInteger(pageBytesCache) || pageBytesCache <= 0) pageBytesCache = 4096;
  }
  return pageBytesCache;
}

/** The children of every process on the host, from the parent field of /proc/<pid>/stat. */
export function readProcessChildren(): Map<number, number[]> {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // Ended meanwhile.
    }
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ")".
    const parent = Number.parseInt(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1] ?? '', 10);
    if (!Number.isSafeInteger(parent)) continue;
    const siblings = children.get(parent);
    if (siblings === undefined) children.set(parent, [Number(entry)]);
    else siblings.push(Number(entry));
  }
  return children;
}

/**
 * `rootPid` and every process below it. An orphan is adopted by the sandbox's pid 1 (its own pid
 * namespace), so nothing of a sandbox leaves its tree.
 */
export function processTree(rootPid: number, children: Map<number, number[]>): number[] {
  const tree: number[] = [];
  const pending = [rootPid];
  const seen = new Set<number>();
  while (pending.length > 0) {
    const pid = pending.pop() as number;
    if (seen.has(pid)) continue;
    seen.add(pid);
    tree.push(pid);
    pending.push(...(children.get(pid) ?? []));
  }
  return tree;
}

/**
 * What the sandbox rooted at bwrap's host process `rootPid` holds in memory: the resident memory
 * of each of its processes plus the used space of its private /tmp and /dev/shm.
 */
export function processTreeMemoryBytes(
  rootPid: number,
  children: Map<number, number[]> = readProcessChildren(),
): number {
  const tree = processTree(rootPid, children);
  let pages = 0;
  for (const pid of tree) {
    try {
      pages += Number.parseInt(readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1] ?? '0', 10) || 0;
    } catch {
      // Ended meanwhile.
    }
  }
  return pages * pageBytes() + sandboxTmpfsBytes(tree.slice(1));
}

/**
 * Used bytes of the sandbox's memory-backed folders, through the root of the first process that is
 * in a mount namespace other than the server's (bwrap's host process, and a child still setting
 * up, see the host's folders instead).
 */
function sandboxTmpfsBytes(pids: readonly number[]): number {
  const ownNamespace = mountNamespace('self');
  for (const pid of pids) {
    const namespace = mountNamespace(String(pid));
    if (namespace === undefined || namespace === ownNamespace) continue;
    let used = 0;
    try {
      for (const folder of SANDBOX_TMPFS_FOLDERS) {
        const stats = statfsSync(`/proc/${pid}/root/${folder}`);
        if (stats.type === TMPFS_MAGIC) used += (stats.blocks - stats.bfree) * stats.bsize;
      }
    } catch {
      continue; // Ended meanwhile, or not ours to read.
    }
    return used;
  }
  return 0;
}

function mountNamespace(pid: string): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return undefined;
  }
}

interface MemoryWatch {
  rootPid: number;
  limitBytes: number;
  onOver: (usedBytes: number) => void;
}

const watches = new Set<MemoryWatch>();
let ticker: NodeJS.Timeout | undefined;

/**
 * Measures the sandbox rooted at `rootPid` every {@link MEMORY_SAMPLE_INTERVAL_MS} and calls
 * `onOver` once, with what it measured, when that is over `limitBytes`; the caller kills the tree.
 * Returns the function that stops watching. One timer and one read of the process table serve every
 * watched sandbox.
 */
export function watchProcessTreeMemory(
  rootPid: number,
  limitBytes: number,
  onOver: (usedBytes: number) => void,
): () => void {
  const watch: MemoryWatch = { rootPid, limitBytes, onOver };
  watches.add(watch);
  if (ticker === undefined) {
    ticker = setInterval(sampleWatchedTrees, MEMORY_SAMPLE_INTERVAL_MS);
    // The sandboxes themselves keep the process alive as long as they should.
    ticker.unref();
  }
  return () => {
    watches.delete(watch);
    stopWhenIdle();
  };
}

function sampleWatchedTrees(): void {
  let children: Map<number, number[]>;
  try {
    children = readProcessChildren();
  } catch {
    return;
  }
  for (const watch of [...watches]) {
    const used = processTreeMemoryBytes(watch.rootPid, children);
    if (used > watch.limitBytes && watches.delete(watch)) watch.onOver(used);
  }
  stopWhenIdle();
}

function stopWhenIdle(): void {
  if (watches.size > 0 || ticker === undefined) return;
  clearInterval(ticker);
  ticker = undefined;
}
