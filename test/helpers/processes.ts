import { execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { waitFor } from './wait';

/** Sends `signal` (SIGKILL by default) to a child still running and resolves once it has exited. */
export async function stopProcess(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill(signal);
  await exited;
}

/** Host processes whose command line contains `marker` (tests put one in a command's comment). */
export async function processesMatching(marker: string): Promise<string[]> {
  try {
    const { stdout } = await promisify(execFile)('pgrep', ['-f', marker]);
    return stdout.trim().split('\n');
  } catch (error) {
    // pgrep exits 1 when no process matches.
    if ((error as { code?: unknown }).code === 1) return [];
    throw error;
  }
}

/** Waits until no host process carries `marker`: what a killed process tree leaves behind. */
export async function waitForNoProcess(marker: string): Promise<void> {
  await waitFor(
    `no process left with ${marker}`,
    async () => (await processesMatching(marker)).length === 0,
    10_000,
  );
}

/**
 * Host processes of the sandboxes that bind `workspace` at /workspace, found by their mount table:
 * bwrap gets its options through a descriptor, so no command line names the workspace.
 */
export async function sandboxProcessesOf(workspace: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^[0-9]+$/.test(pid)) continue;
    let mounts: string;
    try {
      mounts = await readFile(`/proc/${pid}/mountinfo`, 'utf8');
    } catch {
      continue; // Ended meanwhile.
    }
    // Fields 4 and 5: the mount's root in its file system, and where it is mounted.
    const bindsWorkspace = mounts.split('\n').some((line) => {
      const [, , , root, mountPoint] = line.split(' ');
      return mountPoint === '/workspace' && root !== undefined && root !== '/' && workspace.endsWith(root);
    });
    if (bindsWorkspace) found.push(pid);
  }
  return found;
}

/** Waits until no sandbox binds `workspace` any more. */
export async function waitForNoSandboxOf(workspace: string): Promise<void> {
  await waitFor(
    `no sandbox left of ${workspace}`,
    async () => (await sandboxProcessesOf(workspace)).length === 0,
    10_000,
  );
}
