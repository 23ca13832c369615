import assert from 'node:assert/strict';
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

/** What the CLI says on stderr about the embedded server it uses or starts: news, never an error. */
export const SERVER_NEWS_LINE = /^(Using|Starting|Started) the Temporal dev server/;

/**
 * A failure the way users should see it: exit 1 and exactly one line saying what was wrong, last on
 * stderr, after at most the news about the server it used.
 */
export function assertOneLineFailure(result: CliResult, pattern: RegExp): void {
  assert.equal(result.code, 1, `expected exit 1, got ${result.code}: ${result.stderr}`);
  const lines = result.stderr.trim().split('\n');
  const news = lines.slice(0, -1);
  assert.ok(
    news.every((line) => SERVER_NEWS_LINE.test(line)),
    `expected one line, got: ${result.stderr}`,
  );
  assert.match(lines.at(-1) ?? '', /^agents: /);
  assert.match(lines.at(-1) ?? '', pattern);
}

/** An `agents …` process under way: its output so far, and its result once it exits. */
export interface RunningCli {
  child: ChildProcess;
  readonly stdout: string;
  readonly stderr: string;
  done: Promise<CliResult>;
}

/**
 * Starts `agents …` with the given environment; its output can be read while it runs. `input`,
 * when given, is its standard input.
 */
export function spawnCli(
  args: string[],
  environment: NodeJS.ProcessEnv,
  timeoutMs = 120_000,
  input?: string,
): RunningCli {
  const child = spawn(AGENTS_BIN, args, { env: environment, stdio: ['pipe', 'pipe', 'pipe'] });
  // Without `input`, an empty standard input, as /dev/null gives.
  child.stdin.end(input ?? '');
  const output = { stdout: '', stderr: '' };
  child.stdout.on('data', (chunk: Buffer) => (output.stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output.stderr += chunk.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = once(child, 'close').then(([code]) => {
    clearTimeout(timer);
    return { code: code as number | null, ...output };
  });
  return {
    child,
    get stdout() {
      return output.stdout;
    },
    get stderr() {
      return output.stderr;
    },
    done,
  };
}

/** Runs `agents …` to completion with the given environment (and `input` on its standard input). */
export async function runCli(
  args: string[],
  environment: NodeJS.ProcessEnv,
  timeoutMs = 120_000,
  input?: string,
): Promise<CliResult> {
  return spawnCli(args, environment, timeoutMs, input).done;
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
