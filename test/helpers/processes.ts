import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { waitFor } from './wait';

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
