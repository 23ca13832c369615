import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, readFile, realpath, symlink } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { checkBubblewrap, SANDBOX_USER_ID } from '../sandbox/bubblewrap';
import { MAX_STREAM_CHARS, type ToolCall, type ToolResult } from '../sandbox/tool-call';
import { runSandboxTool } from '../sandbox/tools';
import { runUnsandboxed } from '../sandbox/unsandboxed';
import { AGENTS_BIN, runCli } from './helpers/cli';
import { useScratchFolder } from './helpers/scratch';
import { waitFor } from './helpers/wait';

/**
 * `--unsafe-no-sandbox`: the host runner (limits, clean environment, process-group kill), the tools
 * in isolation 'none', and `agents sandbox` refusing or starting without bubblewrap.
 */

const runFile = promisify(execFile);

let callNumber = 0;

const scratch = useScratchFolder('agents-unsandboxed-');
const newWorkspace = () => scratch.newWorkspace();

/** Whether any process's command line contains `marker` (pgrep exits 1 when none does). */
async function processesWith(marker: string): Promise<boolean> {
  try {
    await runFile('pgrep', ['-f', marker]);
    return true;
  } catch (error) {
    if ((error as { code?: unknown }).code === 1) return false;
    throw error;
  }
}

function toolCall(tool: string, args: Record<string, unknown>): ToolCall {
  callNumber += 1;
  return {
    callId: `call-${callNumber}`,
    trajectoryId: 'unsandboxed-test',
    tool,
    arguments: args,
    policy: { network: false },
  };
}

async function runUnsandboxedTool(
  workspace: string,
  tool: string,
  args: Record<string, unknown>,
): Promise<ToolResult> {
  return runSandboxTool(toolCall(tool, args), workspace, new AbortController().signal, 'none');
}

describe('the unsandboxed host runner', () => {
  it('runs the command in the workspace with a clean environment and the limits', async () => {
    const workspace = await newWorkspace();
    const secret = `secret-${randomUUID()}`;
    process.env.AGENTS_UNSANDBOXED_SECRET = secret;
    try {
      const result = await runUnsandboxed('pwd; env; echo "uid=$(id -u)"; ulimit -u; echo oops >&2', {
        workspace,
        timeoutS: 30,
      });
      assert.equal(result.exitCode, 0, result.stderr);
      const lines = result.stdout.trim().split('\n');
      assert.equal(lines[0], await realpath(workspace));
      assert.ok(!result.stdout.includes(secret), 'the server environment leaked into the command');
      assert.ok(lines.includes(`HOME=${workspace}`));
      assert.ok(lines.includes('LANG=C.UTF-8'));
      assert.ok(lines.includes('256'), `expected the process limit in: ${result.stdout}`);
      if (process.getuid?.() === 0) assert.ok(lines.includes(`uid=${SANDBOX_USER_ID}`));
      assert.equal(result.stderr, 'oops\n');
      assert.equal(result.timedOut, false);
    } finally {
      delete process.env.AGENTS_UNSANDBOXED_SECRET;
    }
  });

  it('kills the whole process tree when the command times out', async () => {
    const workspace = await newWorkspace();
    const marker = `marker-${randomUUID()}`;
    const result = await runUnsandboxed(`bash -c 'sleep 600; : ${marker}' & sleep 600`, {
      workspace,
      timeoutS: 1,
    });
    assert.equal(result.timedOut, true);
    assert.equal(result.exitCode, -1);
    await waitFor('the timed-out command tree to be gone', async () => !(await processesWith(marker)));
  });

  it('kills what the command left in the background when it ends', async () => {
    const workspace = await newWorkspace();
    const marker = `marker-${randomUUID()}`;
    const result = await runUnsandboxed(`bash -c 'sleep 600; : ${marker}' >/dev/null 2>&1 & echo started`, {
      workspace,
      timeoutS: 60,
    });
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, 'started\n');
    await waitFor('the background process to be gone', async () => !(await processesWith(marker)));
  });

  it('truncates long output and kills a command that floods it', async () => {
    const workspace = await newWorkspace();
    const long = await runUnsandboxed("head -c 5000 /dev/zero | tr '\\0' a", {
      workspace,
      timeoutS: 30,
      maxStreamChars: 1000,
    });
    assert.equal(long.stdout, 'a'.repeat(1000));
    assert.equal(long.stdoutTruncated, true);
    assert.equal(long.outputLimitExceeded, false);

    const flood = await runUnsandboxed('yes', { workspace, timeoutS: 60 });
    assert.equal(flood.outputLimitExceeded, true);
    assert.equal(flood.timedOut, false);
    assert.equal(flood.stdout.length, MAX_STREAM_CHARS);
  });

  it('kills the process tree and rejects with the reason when aborted', async () => {
    const workspace = await newWorkspace();
    const marker = `marker-${randomUUID()}`;
    const controller = new AbortController();
    const running = runUnsandboxed(`bash -c 'sleep 600; : ${marker}' & echo ready; wait`, {
      workspace,
      timeoutS: 60,
      signal: controller.signal,
    });
    await waitFor('the command to start', () => processesWith(marker));
    controller.abort(new Error('shutting down'));
    await assert.rejects(running, /shutting down/);
    await waitFor('the aborted command tree to be gone', async () => !(await processesWith(marker)));
  });
});

describe('the sandbox tools with isolation none', () => {
  it('runs bash on the host and reads and writes workspace files', async () => {
    const workspace = await newWorkspace();
    const written = await runUnsandboxedTool(workspace, 'write_file', {
      path: 'notes/a.txt',
      content: 'hello',
    });
    assert.equal(written.success, true, written.error);

    const bash = await runUnsandboxedTool(workspace, 'bash', {
      command: 'cat notes/a.txt; echo " world" >> notes/a.txt; echo warn >&2',
    });
    assert.equal(bash.success, true, bash.error);
    assert.equal(bash.output, 'hello\n[stderr]\nwarn\n');
    assert.equal(bash.metadata.exitCode, 0);

    const read = await runUnsandboxedTool(workspace, 'read_file', { path: 'notes/a.txt' });
    assert.equal(read.output, 'hello world\n');
    assert.equal(await readFile(path.join(workspace, 'notes', 'a.txt'), 'utf8'), 'hello world\n');

    const failing = await runUnsandboxedTool(workspace, 'bash', { command: 'exit 3' });
    assert.equal(failing.success, false);
    assert.equal(failing.error, 'Exit code: 3');
  });

  it('refuses bash_stateful and tmux, which need bubblewrap', async () => {
    const workspace = await newWorkspace();
    for (const [tool, args] of [
      ['bash_stateful', { command: 'echo hi' }],
      ['tmux', { action: 'start' }],
    ] as const) {
      const result = await runUnsandboxedTool(workspace, tool, args);
      assert.equal(result.success, false);
      assert.equal(
        result.error,
        `${tool} needs bubblewrap: this sandbox server runs with --unsafe-no-sandbox`,
      );
    }
  });
});

describe('agents sandbox --unsafe-no-sandbox', () => {
  const token = `token-${randomUUID()}`;

  /** The CLI's environment; `withoutBubblewrap` gives it a PATH with only what bin/agents needs. */
  async function cliEnvironment(withoutBubblewrap: boolean): Promise<NodeJS.ProcessEnv> {
    const home = path.join(scratch.root, `home-${randomUUID()}`);
    const environment: NodeJS.ProcessEnv = {
      ...process.env,
      AGENTS_HOME: home,
      AGENTS_SANDBOX_ROOT: path.join(home, 'sandbox'),
      AGENTS_SANDBOX_TOKEN: token,
    };
    if (!withoutBubblewrap) return environment;
    const bin = path.join(home, 'bin');
    await mkdir(bin, { recursive: true });
    for (const tool of ['node', 'bash', 'dirname', 'readlink']) {
      const { stdout } = await runFile('bash', ['-c', `command -v ${tool}`]);
      await symlink(stdout.trim(), path.join(bin, tool));
    }
    // python3 (the interpreter itself, not a version manager's shim) sets the ACL that lets the
    // sandbox's user through the private home to its workspaces.
    const { stdout: python } = await runFile('python3', ['-c', 'import sys; print(sys.executable)']);
    await symlink(python.trim(), path.join(bin, 'python3'));
    return { ...environment, PATH: bin };
  }

  /**
   * Starts `agents sandbox --port 0 …` and resolves, with its stdout lines so far and its URL, once
   * it prints the line saying where it serves.
   */
  async function startSandboxCli(
    environment: NodeJS.ProcessEnv,
    extraArgs: string[],
  ): Promise<{ child: ChildProcess; lines: string[]; url: string }> {
    const child = spawn(AGENTS_BIN, ['sandbox', '--port', '0', ...extraArgs], {
      env: environment,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    createInterface({ input: child.stdout }).on('line', (line) => lines.push(line));
    try {
      const url = await waitFor(
        'the sandbox server to serve',
        () => {
          if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode}: ${stderr}`);
          const serving = lines.map(
            (line) => /^Sandbox server on (http:\/\/127\.0\.0\.1:\d+)/.exec(line)?.[1],
          );
          return serving.find((found) => found !== undefined);
        },
        60_000,
      );
      return { child, lines, url };
    } catch (error) {
      await stop(child);
      throw error;
    }
  }

  async function stop(child: ChildProcess): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const closed = once(child, 'close');
    child.kill('SIGTERM');
    await closed;
  }

  it('refuses to start without bubblewrap unless the flag is given, with one line naming it', async () => {
    const result = await runCli(['sandbox', '--port', '0'], await cliEnvironment(true));
    assert.equal(result.code, 1, result.stderr);
    const lines = result.stderr.trim().split('\n');
    assert.equal(lines.length, 1, result.stderr);
    assert.match(lines[0] ?? '', /^agents: bubblewrap is not usable \(bubblewrap \(bwrap\) is not installed/);
    assert.match(lines[0] ?? '', /--unsafe-no-sandbox/);
  });

  it('serves unsandboxed with a loud warning when the flag is given and bubblewrap is missing', async () => {
    const { child, lines, url } = await startSandboxCli(await cliEnvironment(true), ['--unsafe-no-sandbox']);
    try {
      const warnings = lines.filter((line) => line.startsWith('WARNING: '));
      assert.equal(warnings.length, 1, lines.join('\n'));
      assert.match(
        warnings[0] ?? '',
        /^WARNING: bubblewrap is not usable \(bubblewrap \(bwrap\) is not installed[^)]*\); running tool calls UNSANDBOXED on this host because of --unsafe-no-sandbox/,
      );
      assert.match(warnings[0] ?? '', /\/workspace\/\.\.\. paths do not map/);
      assert.doesNotMatch(url, /:0$/);

      const health = await fetch(`${url}/health`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(health.status, 200);
      assert.equal(((await health.json()) as { status: string }).status, 'ok');

      const response = await fetch(`${url}/execute`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          ...toolCall('bash', { command: 'echo from-host' }),
          trajectoryId: 'cli-test',
        }),
      });
      assert.equal(response.status, 200);
      const result = (await response.json()) as ToolResult;
      assert.equal(result.success, true, result.error);
      assert.equal(result.output, 'from-host\n');
    } finally {
      await stop(child);
    }
  });

  it('still uses bubblewrap when it is usable and the flag is given, and says so', async (context) => {
    const check = await checkBubblewrap();
    if (!check.usable) {
      context.skip(`bubblewrap is not usable here: ${check.reason}`);
      return;
    }
    const { child, lines } = await startSandboxCli(await cliEnvironment(false), ['--unsafe-no-sandbox']);
    await stop(child);
    assert.ok(!lines.some((line) => line.startsWith('WARNING: ')), lines.join('\n'));
    assert.ok(
      lines.some((line) => /^Note: bubblewrap is usable, so --unsafe-no-sandbox changes nothing/.test(line)),
      lines.join('\n'),
    );
    assert.ok(!lines.some((line) => line.includes('UNSANDBOXED')), lines.join('\n'));
  });
});
