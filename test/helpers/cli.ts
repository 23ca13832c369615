import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { createInterface } from 'node:readline';

/** The `agents` executable of this checkout, as users run it. */
export const AGENTS_BIN = path.resolve(__dirname, '..', '..', 'bin', 'agents');

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `agents …` to completion with the given environment. */
export async function runCli(
  args: string[],
  environment: NodeJS.ProcessEnv,
  timeoutMs = 120_000,
): Promise<CliResult> {
  const child = spawn(AGENTS_BIN, args, { env: environment, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const [code] = (await once(child, 'close')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** Starts a long-running `agents …` process and resolves once a line of its output matches `ready`. */
export async function startCli(
  args: string[],
  environment: NodeJS.ProcessEnv,
  ready: RegExp,
): Promise<ChildProcess> {
  const child = spawn(AGENTS_BIN, args, { env: environment, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const lines = createInterface({ input: child.stdout });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`agents ${args.join(' ')} not ready in 60 s: ${output}`)),
      60_000,
    );
    lines.on('line', (line) => {
      output += `${line}\n`;
      if (ready.test(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`agents ${args.join(' ')} exited with ${code}: ${output}`));
    });
  });
  child.removeAllListeners('exit');
  return child;
}
