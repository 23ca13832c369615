import { readdir, readFile, readlink } from 'node:fs/promises';

/**
 * Processes of this machine as Linux's `/proc` shows them: which one listens on a TCP port, and
 * who a PID is. The CLI records the embedded server by both its PID and its start time, so a PID
 * that the kernel has since given to another program is never signalled.
 */

/** A process told apart from any later one with the same PID: its start time, in clock ticks since boot. */
export interface ProcessIdentity {
  pid: number;
  startTime: string;
}

/**
 * The identity of a live process, undefined when there is none with that PID or it has exited and
 * waits to be reaped (a zombie holds its PID but nothing else).
 */
export async function processIdentity(pid: number): Promise<ProcessIdentity | undefined> {
  let stat: string;
  try {
    stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) is in parentheses and may hold spaces or parentheses itself: the
  // fields after its last ')' start with field 3, the state; field 22 is the start time.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const [state, startTime] = [fields[0], fields[22 - 3]];
  if (state === undefined || startTime === undefined || state === 'Z' || state === 'X') return undefined;
  return { pid, startTime };
}

/** Whether `identity` is still the process it was: same PID, same start time, not exited. */
export async function isSameProcess(identity: ProcessIdentity): Promise<boolean> {
  return (await processIdentity(identity.pid))?.startTime === identity.startTime;
}

/** The command line of a process, its arguments joined by spaces, for messages; '' when unknown. */
export async function commandLineOf(pid: number): Promise<string> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').join(' ').trim();
  } catch {
    return '';
  }
}

/** The inodes of the sockets listening on TCP `port`, on any address, IPv4 or IPv6. */
async function listeningSocketInodes(port: number): Promise<Set<string>> {
  const inodes = new Set<string>();
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = await readFile(table, 'utf8');
    } catch {
      continue;
    }
    // Columns: sl, local address (hex address:hex port), remote address, state (0A: LISTEN), …, inode.
    for (const line of text.split('\n').slice(1)) {
      const [, local, , state, , , , , , inode] = line.trim().split(/\s+/);
      if (state !== '0A' || local === undefined || inode === undefined) continue;
      if (Number.parseInt(local.slice(local.lastIndexOf(':') + 1), 16) === port) inodes.add(inode);
    }
  }
  return inodes;
}

/**
 * The PID of the process that listens on TCP `port`, found by matching the listening socket's
 * inode with the sockets each process holds open; undefined when nothing listens or the process is
 * not ours to inspect. It names the server itself, not a wrapper that started it.
 */
export async function processListeningOn(port: number): Promise<number | undefined> {
  const inodes = await listeningSocketInodes(port);
  if (inodes.size === 0) return undefined;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let descriptors: string[];
    try {
      descriptors = await readdir(`/proc/${entry}/fd`);
    } catch {
      continue; // Ended meanwhile, or another user's.
    }
    for (const descriptor of descriptors) {
      let target: string;
      try {
        target = await readlink(`/proc/${entry}/fd/${descriptor}`);
      } catch {
        continue;
      }
      const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
      if (inode !== undefined && inodes.has(inode)) return Number(entry);
    }
  }
  return undefined;
}
