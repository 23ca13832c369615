import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { SandboxServer } from '../sandbox/sandbox-server';
import { closeStatefulSessions } from '../sandbox/stateful-sessions';
import { MAX_STREAM_CHARS, TRUNCATION_MARKER, type ToolCall, type ToolResult } from '../sandbox/tool-call';
import { runSandboxTool } from '../sandbox/tools';
import {
  processesMatching,
  sandboxProcessesOf,
  waitForNoProcess,
  waitForNoSandboxOf,
} from './helpers/processes';
import { useScratchFolder } from './helpers/scratch';
import { waitFor } from './helpers/wait';

/**
 * The stateful tools against real bubblewrap and tmux: `bash_stateful` keeps a shell per trajectory
 * (state, exit codes, timeouts, policy changes, limits), `tmux` keeps named terminal sessions in the
 * same sandbox, and closing a trajectory's sessions leaves no process behind.
 */

let callNumber = 0;

// Registered first, so the sessions close before the scratch folder is removed.
after(async () => {
  await closeStatefulSessions();
});

const scratch = useScratchFolder('agents-sandbox-stateful-');

/** A trajectory of its own: a fresh workspace, open to the sandbox's user, and a unique ID. */
async function newTrajectory(): Promise<{ trajectoryId: string; workspace: string }> {
  const trajectoryId = `stateful-${randomUUID()}`;
  return { trajectoryId, workspace: await scratch.newWorkspace(trajectoryId) };
}

type Trajectory = Awaited<ReturnType<typeof newTrajectory>>;

function runTool(
  trajectory: Trajectory,
  tool: string,
  args: Record<string, unknown>,
  overrides: Partial<ToolCall> = {},
  signal = new AbortController().signal,
): Promise<ToolResult> {
  callNumber += 1;
  const call: ToolCall = {
    callId: `call-${callNumber}`,
    trajectoryId: trajectory.trajectoryId,
    tool,
    arguments: args,
    policy: { network: false },
    ...overrides,
  };
  return runSandboxTool(call, trajectory.workspace, signal);
}

function shell(
  trajectory: Trajectory,
  command: string,
  overrides: Partial<ToolCall> = {},
): Promise<ToolResult> {
  return runTool(trajectory, 'bash_stateful', { command }, overrides);
}

function tmux(trajectory: Trajectory, args: Record<string, unknown>): Promise<ToolResult> {
  return runTool(trajectory, 'tmux', args);
}

describe('bash_stateful tool', () => {
  it('keeps the working folder, variables and functions from one call to the next', async () => {
    const trajectory = await newTrajectory();
    const first = await shell(
      trajectory,
      'mkdir -p deep/er && cd deep/er && GREETING=hello; greet() { echo "$GREETING $1"; }',
    );
    assert.equal(first.success, true, first.error);
    assert.equal(first.output, '');
    assert.equal(first.metadata.sessionStarted, 'new');

    const second = await shell(trajectory, 'pwd; greet world');
    assert.equal(second.success, true, second.error);
    assert.equal(second.output, '/workspace/deep/er\nhello world\n');
    assert.equal(second.metadata.sessionStarted, undefined);
  });

  it('returns only what the command printed: stdout, then a [stderr] section, as bash does', async () => {
    const trajectory = await newTrajectory();
    await shell(trajectory, 'echo earlier');
    const result = await shell(trajectory, 'echo out; echo err >&2; printf no-newline');
    assert.equal(result.output, 'out\nno-newline\n[stderr]\nerr\n');
    assert.equal(result.metadata.exitCode, 0);
    assert.equal(result.metadata.timedOut, false);
    assert.equal(result.metadata.truncated, false);
  });

  it('keeps a redirection of the shell made with exec, and still finds where each command ends', async () => {
    const trajectory = await newTrajectory();
    const redirected = await shell(trajectory, 'exec 2>/dev/null; echo visible; echo hidden >&2');
    assert.equal(redirected.success, true, redirected.error);
    assert.equal(redirected.output, 'visible\n');
    const next = await shell(trajectory, 'echo still-hidden >&2; exec 2>&1; echo now-on-stdout >&2');
    assert.equal(next.output, 'now-on-stdout\n');
  });

  it('captures a non-zero exit code as "Exit code: N" and keeps the shell', async () => {
    const trajectory = await newTrajectory();
    await shell(trajectory, 'KEPT=yes');
    const failed = await shell(trajectory, 'echo partial; (exit 7)');
    assert.equal(failed.success, false);
    assert.equal(failed.error, 'Exit code: 7');
    assert.equal(failed.output, 'partial\n');
    assert.equal(failed.metadata.exitCode, 7);
    const syntax = await shell(trajectory, 'echo "unterminated');
    assert.equal(syntax.error, 'Exit code: 2');
    const after = await shell(trajectory, 'echo $KEPT; cat; echo stdin-is-empty');
    assert.equal(after.output, 'yes\nstdin-is-empty\n');
  });

  it('reports a command that ends the shell with its status, then starts a fresh shell', async () => {
    const trajectory = await newTrajectory();
    await shell(trajectory, 'KEPT=yes');
    const exited = await shell(trajectory, 'echo bye; exit 3');
    assert.equal(exited.error, 'Exit code: 3');
    assert.equal(exited.output, 'bye\n');
    assert.equal(exited.metadata.shellExited, true);
    const next = await shell(trajectory, 'echo "${KEPT:-gone}"; pwd');
    assert.equal(next.output, 'gone\n/workspace\n');
  });

  it('times out with "Command timed out after 1s", tears the session down, and the next call gets a fresh shell', async () => {
    const trajectory = await newTrajectory();
    const marker = `stateful-timeout-${randomUUID()}`;
    await shell(trajectory, 'KEPT=yes');
    const result = await shell(trajectory, `echo started; (exec -a ${marker} sleep 60)`, { timeoutS: 1 });
    assert.equal(result.success, false);
    assert.equal(result.error, 'Command timed out after 1s');
    assert.equal(result.output, 'started\n');
    assert.equal(result.metadata.exitCode, -1);
    assert.equal(result.metadata.timedOut, true);
    assert.equal(result.metadata.sessionClosed, true);
    await waitForNoProcess(marker);

    const next = await shell(trajectory, 'echo "${KEPT:-gone}"');
    assert.equal(next.success, true, next.error);
    assert.equal(next.output, 'gone\n');
    assert.equal(next.metadata.sessionStarted, 'new');
  });

  it('clamps the timeout argument to 1..600 seconds', async () => {
    const trajectory = await newTrajectory();
    const result = await runTool(trajectory, 'bash_stateful', { command: 'sleep 5', timeout: 0.01 });
    assert.equal(result.error, 'Command timed out after 1s');
  });

  describe('network policy', () => {
    let server: Server;
    let port: number;

    before(async () => {
      server = createServer((socket) => socket.destroy());
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as { port: number }).port;
    });

    after(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it('restarts the session when the network policy changes, with the new policy applied', async () => {
      const trajectory = await newTrajectory();
      // With the network on, the session's way out is the relay to its proxy (the host loopback
      // stays out of reach either way: see sandbox-network.test.ts).
      const connect = `(echo hello > /dev/tcp/127.0.0.1/${port}) 2>/dev/null && echo connected || echo refused; (echo > /dev/tcp/127.0.0.1/3128) 2>/dev/null && echo proxy || echo no-proxy`;
      const offline = await shell(trajectory, `KEPT=yes; ${connect}`);
      assert.equal(offline.output, 'refused\nno-proxy\n');

      const online = await shell(trajectory, `echo "\${KEPT:-gone}"; ${connect}`, {
        policy: { network: true },
      });
      assert.equal(online.output, 'gone\nrefused\nproxy\n');
      assert.equal(online.metadata.sessionStarted, 'policy-changed');
      const same = await shell(trajectory, 'KEPT=again', { policy: { network: true } });
      assert.equal(same.metadata.sessionStarted, undefined);

      const offlineAgain = await shell(trajectory, `echo "\${KEPT:-gone}"; ${connect}`);
      assert.equal(offlineAgain.output, 'gone\nrefused\nno-proxy\n');
      assert.equal(offlineAgain.metadata.sessionStarted, 'policy-changed');
    });
  });

  it('truncates output at 50,000 characters with the marker and keeps the session', async () => {
    const trajectory = await newTrajectory();
    await shell(trajectory, 'KEPT=yes');
    const result = await shell(trajectory, "head -c 60000 /dev/zero | tr '\\0' y");
    assert.equal(result.success, true, result.error);
    assert.equal(result.output, `${'y'.repeat(MAX_STREAM_CHARS)}\n${TRUNCATION_MARKER}`);
    assert.equal(result.metadata.truncated, true);
    const next = await shell(trajectory, 'echo $KEPT');
    assert.equal(next.output, 'yes\n');
  });

  it('kills an output flood instead of draining it until the timeout', async () => {
    const trajectory = await newTrajectory();
    const result = await shell(trajectory, 'yes');
    assert.equal(result.success, false);
    assert.equal(result.error, 'Command killed: output over 500000 characters');
    assert.equal(result.output, `${'y\n'.repeat(MAX_STREAM_CHARS / 2)}\n${TRUNCATION_MARKER}`);
    assert.equal(result.metadata.sessionClosed, true);
    const next = await shell(trajectory, 'echo alive');
    assert.equal(next.output, 'alive\n');
  });

  it('gives two trajectories separate shells and separate sandboxes', async () => {
    const first = await newTrajectory();
    const second = await newTrajectory();
    await shell(first, 'NAME=first; echo first > /tmp/owner');
    await shell(second, 'NAME=second; echo second > /tmp/owner');
    assert.equal((await shell(first, 'echo $NAME; cat /tmp/owner')).output, 'first\nfirst\n');
    assert.equal((await shell(second, 'echo $NAME; cat /tmp/owner')).output, 'second\nsecond\n');
  });

  it('runs as the sandbox user with the server environment kept out', async () => {
    const trajectory = await newTrajectory();
    const secret = `secret-${randomUUID()}`;
    process.env.AGENTS_TEST_SECRET = secret;
    try {
      const result = await shell(trajectory, "id -u; env; tr '\\0' '\\n' < /proc/1/environ");
      assert.match(result.output, /^65534\n/);
      assert.ok(!result.output.includes(secret), 'the secret leaked into the sandbox');
    } finally {
      delete process.env.AGENTS_TEST_SECRET;
    }
  });

  it('tears the session down and rethrows when the signal aborts', async () => {
    const trajectory = await newTrajectory();
    const marker = `stateful-aborted-${randomUUID()}`;
    const controller = new AbortController();
    const running = runTool(
      trajectory,
      'bash_stateful',
      { command: `(exec -a ${marker} sleep 60)` },
      {},
      controller.signal,
    );
    await waitFor(
      'the command to start',
      async () => (await processesMatching(`^${marker}`)).length > 0,
      10_000,
    );
    controller.abort();
    await assert.rejects(running, { name: 'AbortError' });
    await waitForNoProcess(marker);
  });

  it('answers bad arguments with one line naming the field', async () => {
    const trajectory = await newTrajectory();
    const result = await runTool(trajectory, 'bash_stateful', { command: '' });
    assert.equal(result.error, 'Invalid arguments for tool bash_stateful: command must not be empty');
  });
});

describe('tmux tool', () => {
  it('starts a session, sends keys, captures the pane, streams whole lines from an offset, and stops it', async () => {
    const trajectory = await newTrajectory();
    const started = await tmux(trajectory, { action: 'start', session: 'work' });
    assert.equal(started.success, true, started.error);
    assert.deepEqual(started.metadata, { session: 'work', width: 120, height: 40 });
    const again = await tmux(trajectory, { action: 'start', session: 'work' });
    assert.equal(again.error, "tmux session 'work' already exists; stop it first or use another name");

    const sent = await tmux(trajectory, {
      action: 'send_keys',
      session: 'work',
      keys: 'cd /tmp; echo "answer-$((6 * 7))"\n',
      block: true,
      max_wait: 10,
    });
    assert.equal(sent.success, true, sent.error);
    assert.match(sent.output, /^answer-42$/m);
    assert.equal(sent.metadata.quiet, true);

    const captured = await tmux(trajectory, { action: 'capture', session: 'work' });
    assert.match(captured.output, /^answer-42$/m);
    assert.equal(captured.metadata.width, 120);
    assert.equal(captured.metadata.height, 40);

    const streamed = await tmux(trajectory, { action: 'stream', session: 'work', offset: 0 });
    assert.match(streamed.output, /^answer-42\n/m);
    assert.ok(streamed.output.endsWith('\n'), 'a stream returns whole lines only');
    const nextOffset = streamed.metadata.nextOffset as number;
    assert.equal(nextOffset, streamed.output.split('\n').length - 1);

    // Typed but not entered: the line is not complete, so a stream does not return it yet.
    await tmux(trajectory, { action: 'send_keys', session: 'work', keys: 'echo "second-$((1 + 1))"' });
    await waitFor('the typed line to show', async () =>
      (await tmux(trajectory, { action: 'capture', session: 'work' })).output.includes('echo "second-'),
    );
    const partial = await tmux(trajectory, { action: 'stream', session: 'work', offset: nextOffset });
    assert.equal(partial.output, '');
    assert.equal(partial.metadata.nextOffset, nextOffset);

    await tmux(trajectory, { action: 'send_keys', session: 'work', keys: 'Enter' });
    const rest = await waitFor('the entered line and its output', async () => {
      const streamedRest = await tmux(trajectory, { action: 'stream', session: 'work', offset: nextOffset });
      return streamedRest.output.includes('second-2\n') && streamedRest;
    });
    assert.match(rest.output, /echo "second-\$\(\(1 \+ 1\)\)"\nsecond-2\n$/);
    assert.ok(!rest.output.includes('answer-42'), rest.output);
    assert.equal(rest.metadata.nextOffset, nextOffset + rest.output.split('\n').length - 1);

    // The session's shell is in the same sandbox as bash_stateful's.
    const fromShell = await shell(
      trajectory,
      'tmux -S /tmp/agents-tmux/socket list-sessions -F "#{session_name}"',
    );
    assert.equal(fromShell.output, 'work\n');

    const stopped = await tmux(trajectory, { action: 'stop', session: 'work' });
    assert.equal(stopped.success, true, stopped.error);
    const gone = await tmux(trajectory, { action: 'capture', session: 'work' });
    assert.equal(gone.error, "No tmux session 'work'; start it with action 'start'");
  });

  it('presses key names and types text ending in ";" literally', async () => {
    const trajectory = await newTrajectory();
    await tmux(trajectory, { action: 'start' });
    await tmux(trajectory, { action: 'send_keys', keys: 'sleep 60' });
    await tmux(trajectory, { action: 'send_keys', keys: 'Enter' });
    await tmux(trajectory, { action: 'send_keys', keys: 'C-c' });
    await tmux(trajectory, { action: 'send_keys', keys: 'echo semi;' });
    const typed = await waitFor('the keys to show', async () => {
      const captured = await tmux(trajectory, { action: 'capture' });
      return /echo semi;$/m.test(captured.output) && captured;
    });
    assert.match(typed.output, /sleep 60\n\^C\n/);
  });

  it('clamps the pane size to 20-500 x 10-200', async () => {
    const trajectory = await newTrajectory();
    const large = await tmux(trajectory, { action: 'start', session: 'large', width: 1000, height: 3 });
    assert.deepEqual(large.metadata, { session: 'large', width: 500, height: 10 });
    const small = await tmux(trajectory, { action: 'start', session: 'small', width: 5, height: 999 });
    assert.deepEqual(small.metadata, { session: 'small', width: 20, height: 200 });
    const captured = await tmux(trajectory, { action: 'capture', session: 'large' });
    assert.equal(captured.metadata.width, 500);
    assert.equal(captured.metadata.height, 10);
  });

  it('answers a missing session, a missing keys and an unknown action with one line', async () => {
    const trajectory = await newTrajectory();
    const missing = await tmux(trajectory, { action: 'capture', session: 'nowhere' });
    assert.equal(missing.error, "No tmux session 'nowhere'; start it with action 'start'");
    await tmux(trajectory, { action: 'start' });
    const noKeys = await tmux(trajectory, { action: 'send_keys' });
    assert.equal(noKeys.error, "Invalid arguments for tool tmux: keys is required for action 'send_keys'");
    const unknown = await tmux(trajectory, { action: 'teleport' });
    assert.equal(
      unknown.error,
      'Invalid arguments for tool tmux: action must be one of start, send_keys, capture, stream, stop',
    );
    const badName = await tmux(trajectory, { action: 'start', session: 'a:b' });
    assert.match(String(badName.error), /^Invalid arguments for tool tmux: session must be 1-64 characters/);
  });
});

describe('closing stateful sessions', () => {
  it('leaves no bwrap, shell, tmux or background process behind, and only for the trajectory asked', async () => {
    const closed = await newTrajectory();
    const kept = await newTrajectory();
    const marker = `stateful-close-${randomUUID()}`;
    const session = `close-${randomUUID()}`;
    await shell(closed, `(exec -a ${marker}-shell sleep 300) &`);
    await tmux(closed, { action: 'start', session });
    await tmux(closed, { action: 'send_keys', session, keys: `exec -a ${marker}-tmux sleep 300\n` });
    await shell(kept, 'KEPT=yes');
    await waitFor('both processes to start', async () => {
      const running = await processesMatching(`^${marker}`);
      return running.length === 2;
    });
    // The sandbox binds the workspace (its mount table says so), the tmux server names its session.
    assert.ok((await sandboxProcessesOf(closed.workspace)).length > 0);
    assert.ok((await processesMatching(session)).length > 0);

    await closeStatefulSessions(closed.trajectoryId);
    await waitForNoProcess(marker);
    await waitForNoSandboxOf(closed.workspace);
    await waitForNoProcess(session);

    assert.equal((await shell(kept, 'echo $KEPT')).output, 'yes\n');
    const fresh = await shell(closed, 'echo fresh');
    assert.equal(fresh.metadata.sessionStarted, 'new');
    await closeStatefulSessions();
    await waitForNoSandboxOf(kept.workspace);
    await waitForNoSandboxOf(closed.workspace);
  });

  it('closes a trajectory session on /release and all of them when the server closes', async () => {
    const root = await mkdtemp(path.join(scratch.root, 'server-'));
    const token = 'stateful-test-token-0123456789';
    const server = new SandboxServer({ root, token, lanes: 4, runTool: runSandboxTool });
    const baseUrl = `http://127.0.0.1:${await server.listen(0)}`;
    const post = async (route: string, body: unknown): Promise<Record<string, unknown>> => {
      const response = await request(`${baseUrl}${route}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
      return (await response.body.json()) as Record<string, unknown>;
    };
    const execute = (trajectoryId: string, command: string) =>
      post('/execute', {
        callId: randomUUID(),
        trajectoryId,
        tool: 'bash_stateful',
        arguments: { command },
        timeoutS: 30,
      });
    const released = `released-${randomUUID()}`;
    const open = `open-${randomUUID()}`;
    try {
      await execute(released, 'KEPT=yes');
      await execute(open, 'KEPT=yes');
      assert.equal((await execute(released, 'echo $KEPT')).output, 'yes\n');
      await post('/release', { trajectoryId: released });
      assert.equal((await execute(released, 'echo "${KEPT:-gone}"')).output, 'gone\n');
      assert.equal((await execute(open, 'echo $KEPT')).output, 'yes\n');
    } finally {
      await server.close();
    }
    await waitForNoSandboxOf(path.join(root, 'trajectories', open, 'workspace'));
    await waitForNoSandboxOf(path.join(root, 'trajectories', released, 'workspace'));
  });
});
