import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkBubblewrap, runInBubblewrap } from '../sandbox/bubblewrap';
import {
  MAX_FILE_CHARS,
  MAX_STREAM_CHARS,
  TRUNCATION_MARKER,
  type ToolCall,
  type ToolResult,
} from '../sandbox/tool-call';
import { runSandboxTool } from '../sandbox/tools';
import { ACCESS_DENIED_MESSAGE, resolveInWorkspace } from '../sandbox/workspace-paths';
import { processesMatching, waitForNoProcess } from './helpers/processes';
import { useScratchFolder } from './helpers/scratch';
import { waitFor } from './helpers/wait';

/**
 * The sandbox tools against real bubblewrap: isolation (environment, /tmp, network, read-only
 * system), limits (processes, memory, output, wall time), and the workspace path rules.
 */

let callNumber = 0;

const scratch = useScratchFolder('agents-sandbox-tools-');
const newWorkspace = () => scratch.newWorkspace();

function toolCall(tool: string, args: Record<string, unknown>, overrides: Partial<ToolCall> = {}): ToolCall {
  callNumber += 1;
  return {
    callId: `call-${callNumber}`,
    trajectoryId: 'sandbox-tools-test',
    tool,
    arguments: args,
    policy: { network: false },
    ...overrides,
  };
}

function runTool(
  workspace: string,
  tool: string,
  args: Record<string, unknown>,
  overrides: Partial<ToolCall> = {},
): Promise<ToolResult> {
  return runSandboxTool(toolCall(tool, args, overrides), workspace, new AbortController().signal);
}

describe('bubblewrap', () => {
  it('is usable on this host (a server refuses to start otherwise)', async () => {
    assert.deepEqual(await checkBubblewrap(), { usable: true });
  });
});

describe('bash tool', () => {
  it('returns stdout, then a [stderr] section', async () => {
    const result = await runTool(await newWorkspace(), 'bash', { command: 'echo out; echo err >&2' });
    assert.equal(result.success, true);
    assert.equal(result.output, 'out\n\n[stderr]\nerr\n');
    assert.equal(result.error, undefined);
    assert.equal(result.metadata.exitCode, 0);
    assert.equal(result.metadata.truncated, false);
    assert.equal(typeof result.metadata.durationMs, 'number');
  });

  it('fails with "Exit code: N" on a non-zero exit and keeps the output', async () => {
    const result = await runTool(await newWorkspace(), 'bash', { command: 'echo partial; exit 3' });
    assert.equal(result.success, false);
    assert.equal(result.error, 'Exit code: 3');
    assert.equal(result.output, 'partial\n');
    assert.equal(result.metadata.exitCode, 3);
  });

  it('runs as an unprivileged user in /workspace, writable, with its files visible on the host', async () => {
    const workspace = await newWorkspace();
    const result = await runTool(workspace, 'bash', {
      command: 'pwd; id -u; echo made-inside > inside.txt && echo written',
    });
    assert.equal(result.output, '/workspace\n65534\nwritten\n');
    assert.equal(await readFile(path.join(workspace, 'inside.txt'), 'utf8'), 'made-inside\n');
  });

  it('keeps the environment of the server out of commands, /proc/1/environ included', async () => {
    const secret = `secret-${randomUUID()}`;
    process.env.AGENTS_TEST_SECRET = secret;
    try {
      const result = await runTool(await newWorkspace(), 'bash', {
        command: "env; tr '\\0' '\\n' < /proc/1/environ",
      });
      assert.equal(result.success, true);
      assert.match(result.output, /^HOME=\/workspace$/m);
      assert.ok(!result.output.includes(secret), 'the secret leaked into the sandbox');
      assert.ok(!result.output.includes('AGENTS_TEST_SECRET'), 'the secret variable leaked into the sandbox');
    } finally {
      delete process.env.AGENTS_TEST_SECRET;
    }
  });

  it('gives each command a private /tmp, hiding the host /tmp both ways', async () => {
    const hostOnly = path.join(os.tmpdir(), `agents-host-only-${randomUUID()}`);
    const innerName = `agents-inner-${randomUUID()}`;
    await writeFile(hostOnly, 'host');
    try {
      const result = await runTool(await newWorkspace(), 'bash', {
        command: `test -e /tmp/${path.basename(hostOnly)} && echo visible || echo hidden; echo inner > /tmp/${innerName}`,
      });
      assert.equal(result.output, 'hidden\n');
      await assert.rejects(stat(path.join(os.tmpdir(), innerName)), { code: 'ENOENT' });
    } finally {
      await rm(hostOnly, { force: true });
    }
  });

  it('mounts the system folders read-only', async () => {
    const result = await runTool(await newWorkspace(), 'bash', {
      command:
        'touch /usr/bin/sandbox-probe 2>/dev/null || echo usr-refused; mkdir /probe 2>/dev/null || echo root-refused',
    });
    assert.equal(result.output, 'usr-refused\nroot-refused\n');
  });

  describe('network', () => {
    let server: Server;
    let port: number;
    let connections = 0;

    before(async () => {
      server = createServer((socket) => {
        connections += 1;
        socket.destroy();
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as { port: number }).port;
    });

    after(async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    });

    it('cannot reach a listener on the host loopback without the network policy', async () => {
      const connectionsBefore = connections;
      const result = await runTool(await newWorkspace(), 'bash', {
        command: `echo hello > /dev/tcp/127.0.0.1/${port} && echo connected`,
      });
      assert.equal(result.success, false);
      assert.ok(!result.output.startsWith('connected'), result.output);
      assert.match(result.output, /Connection refused/);
      assert.equal(connections, connectionsBefore);
    });

    it('cannot reach a listener on the host loopback when the policy allows the network', async () => {
      const connectionsBefore = connections;
      const result = await runTool(
        await newWorkspace(),
        'bash',
        {
          command: [
            `echo hello > /dev/tcp/127.0.0.1/${port} && echo connected`,
            `curl -sS -m 10 --noproxy '' -x "$HTTP_PROXY" http://127.0.0.1:${port}/`,
          ].join('; '),
        },
        { policy: { network: true } },
      );
      assert.ok(!result.output.startsWith('connected'), result.output);
      assert.match(result.output, /Connection refused/);
      assert.match(
        result.output,
        new RegExp(`^Blocked by the sandbox's network policy: 127\\.0\\.0\\.1:${port} is a loopback address`),
      );
      assert.deepEqual(result.metadata.networkRefused, [`127.0.0.1:${port} is a loopback address`]);
      assert.equal(connections, connectionsBefore);
    });
  });

  it('applies the process, memory, CPU, file size and open file limits', async () => {
    const result = await runTool(
      await newWorkspace(),
      'bash',
      { command: 'ulimit -u; ulimit -v; ulimit -t; ulimit -f; ulimit -n' },
      { timeoutS: 10 },
    );
    // 256 processes, 1 GiB in KiB, 10 s + 5 s margin, 100 MiB in KiB blocks, 1024 files.
    assert.equal(result.output, '256\n1048576\n15\n102400\n1024\n');
  });

  it('stops a file from growing past the file size limit', async () => {
    const workspace = await newWorkspace();
    const result = await runInBubblewrap('head -c 2M /dev/zero > big.bin', {
      workspace,
      timeoutS: 30,
      policy: { network: false },
      limits: { maxFileSizeBytes: 1024 * 1024 },
    });
    assert.notEqual(result.exitCode, 0);
    assert.equal((await stat(path.join(workspace, 'big.bin'))).size, 1024 * 1024);
  });

  it('contains a fork bomb: the call ends at its timeout, nothing is left, and the next call works', async () => {
    const workspace = await newWorkspace();
    const marker = `fork-bomb-${randomUUID()}`;
    // The busy loop keeps the command alive (without forking) while the bomb hits the process limit.
    const result = await runTool(
      workspace,
      'bash',
      { command: `:(){ :|:& };: ; while :; do :; done # ${marker}` },
      { timeoutS: 5 },
    );
    assert.equal(result.success, false);
    assert.equal(result.error, 'Command timed out after 5s');
    await waitForNoProcess(marker);
    const next = await runTool(workspace, 'bash', { command: 'echo still-alive' });
    assert.equal(next.output, 'still-alive\n');
  });

  it('stops a memory hog at the memory limit and keeps working afterwards', async () => {
    const workspace = await newWorkspace();
    const result = await runTool(workspace, 'bash', { command: 'head -c 2G /dev/zero | tail' });
    assert.equal(result.success, false);
    assert.equal(result.error, 'Exit code: 1');
    assert.match(result.output, /\[stderr\]\ntail: memory exhausted/);
    const next = await runTool(workspace, 'bash', { command: 'echo still-alive' });
    assert.equal(next.output, 'still-alive\n');
  });

  it('truncates an output flood at 50,000 characters with the marker and kills the command', async () => {
    const result = await runTool(await newWorkspace(), 'bash', { command: 'yes' });
    assert.equal(MAX_STREAM_CHARS, 50_000);
    assert.equal(result.output, `${'y\n'.repeat(MAX_STREAM_CHARS / 2)}\n${TRUNCATION_MARKER}`);
    assert.equal(result.success, false);
    assert.equal(result.error, 'Command killed: output over 500000 characters');
    assert.equal(result.metadata.truncated, true);
    assert.equal(result.metadata.timedOut, false);
  });

  it('times out an endless loop with "Command timed out after 2s" and leaves no process behind', async () => {
    const marker = `endless-loop-${randomUUID()}`;
    const result = await runTool(await newWorkspace(), 'bash', {
      command: `while :; do :; done # ${marker}`,
      timeout: 2,
    });
    assert.equal(result.success, false);
    assert.equal(result.error, 'Command timed out after 2s');
    assert.equal(result.metadata.exitCode, -1);
    assert.equal(result.metadata.timedOut, true);
    assert.deepEqual(await processesMatching(marker), []);
  });

  it('kills the command and its background processes when the signal aborts', async () => {
    const marker = `aborted-${randomUUID()}`;
    const controller = new AbortController();
    const running = runSandboxTool(
      toolCall('bash', { command: `(exec -a ${marker} sleep 300) & sleep 300 # ${marker}` }),
      await newWorkspace(),
      controller.signal,
    );
    // The background sleep runs under the marker as its name.
    await waitFor(
      'the command to start',
      async () => (await processesMatching(`^${marker}`)).length > 0,
      10_000,
    );
    controller.abort();
    await assert.rejects(running, { name: 'AbortError' });
    await waitForNoProcess(marker);
  });
});

describe('read_file and write_file tools', () => {
  it('writes a file, creating parent folders, reads it back, and commands may change it', async () => {
    const workspace = await newWorkspace();
    const written = await runTool(workspace, 'write_file', { path: 'notes/deep/a.txt', content: 'héllo\n' });
    assert.equal(written.success, true, written.error);
    assert.equal(written.output, 'Wrote 7 bytes to notes/deep/a.txt');
    assert.equal(await readFile(path.join(workspace, 'notes/deep/a.txt'), 'utf8'), 'héllo\n');

    const read = await runTool(workspace, 'read_file', { path: 'notes/deep/a.txt' });
    assert.equal(read.success, true, read.error);
    assert.equal(read.output, 'héllo\n');
    assert.equal(read.metadata.truncated, false);

    const changed = await runTool(workspace, 'bash', {
      command: 'echo more >> notes/deep/a.txt && cat notes/deep/a.txt && rm -r notes && echo removed',
    });
    assert.equal(changed.output, 'héllo\nmore\nremoved\n', changed.output);
  });

  it('takes absolute paths under /workspace as paths in the workspace', async () => {
    const workspace = await newWorkspace();
    const written = await runTool(workspace, 'write_file', {
      path: '/workspace/abs.txt',
      content: 'absolute',
    });
    assert.equal(written.success, true, written.error);
    const read = await runTool(workspace, 'read_file', { path: 'abs.txt' });
    assert.equal(read.output, 'absolute');
  });

  it('reads a window of a file with offset and limit, and flags what is left', async () => {
    const workspace = await newWorkspace();
    await writeFile(path.join(workspace, 'letters.txt'), 'abcdef');
    const window = await runTool(workspace, 'read_file', { path: 'letters.txt', offset: 2, limit: 3 });
    assert.equal(window.output, 'cde');
    assert.equal(window.metadata.truncated, true);
    assert.equal(window.metadata.nextOffset, 5);

    await writeFile(path.join(workspace, 'long.txt'), 'x'.repeat(MAX_FILE_CHARS + 1));
    const long = await runTool(workspace, 'read_file', { path: 'long.txt' });
    assert.equal(long.output.length, MAX_FILE_CHARS);
    assert.equal(long.metadata.truncated, true);
  });

  it('refuses ../../etc/passwd and /etc/passwd, for reading and writing', async () => {
    const workspace = await newWorkspace();
    for (const requested of ['../../etc/passwd', '/etc/passwd', '/workspace/../etc/passwd']) {
      const read = await runTool(workspace, 'read_file', { path: requested });
      assert.equal(read.success, false);
      assert.equal(read.error, ACCESS_DENIED_MESSAGE);
      const write = await runTool(workspace, 'write_file', { path: requested, content: 'x' });
      assert.equal(write.error, ACCESS_DENIED_MESSAGE);
    }
    const escape = await runTool(workspace, 'write_file', { path: '../escape.txt', content: 'x' });
    assert.equal(escape.error, 'Access denied: path outside workspace');
    await assert.rejects(stat(path.join(scratch.root, 'escape.txt')), { code: 'ENOENT' });
  });

  it('refuses a symlink in the workspace that points outside, for reading and writing', async () => {
    const workspace = await newWorkspace();
    const outsideFile = path.join(scratch.root, `outside-${randomUUID()}.txt`);
    const outsideFolder = path.join(scratch.root, `outside-${randomUUID()}`);
    await writeFile(outsideFile, 'outside secret');
    await mkdir(outsideFolder);
    await symlink(outsideFile, path.join(workspace, 'file-link'));
    await symlink(outsideFolder, path.join(workspace, 'folder-link'));
    await symlink('../..', path.join(workspace, 'relative-link'));

    const read = await runTool(workspace, 'read_file', { path: 'file-link' });
    assert.equal(read.error, ACCESS_DENIED_MESSAGE);
    assert.equal(read.output, '');
    const overwrite = await runTool(workspace, 'write_file', { path: 'file-link', content: 'replaced' });
    assert.equal(overwrite.error, ACCESS_DENIED_MESSAGE);
    assert.equal(await readFile(outsideFile, 'utf8'), 'outside secret');
    const through = await runTool(workspace, 'write_file', { path: 'folder-link/new.txt', content: 'x' });
    assert.equal(through.error, ACCESS_DENIED_MESSAGE);
    await assert.rejects(stat(path.join(outsideFolder, 'new.txt')), { code: 'ENOENT' });
    const relative = await runTool(workspace, 'read_file', { path: 'relative-link/etc/passwd' });
    assert.equal(relative.error, ACCESS_DENIED_MESSAGE);
  });

  it('follows links made by commands as the command sees them: inside /workspace yes, elsewhere no', async () => {
    const workspace = await newWorkspace();
    const made = await runTool(workspace, 'bash', {
      command:
        'echo target > target.txt && ln -s /workspace/target.txt inner-link && ln -s /etc/passwd etc-link',
    });
    assert.equal(made.success, true, made.output);
    const inner = await runTool(workspace, 'read_file', { path: 'inner-link' });
    assert.equal(inner.output, 'target\n');
    const etc = await runTool(workspace, 'read_file', { path: 'etc-link' });
    assert.equal(etc.error, ACCESS_DENIED_MESSAGE);
    assert.equal(await resolveInWorkspace(workspace, 'inner-link'), path.join(workspace, 'target.txt'));
  });

  it('answers a missing file and a folder with results, not exceptions', async () => {
    const workspace = await newWorkspace();
    await mkdir(path.join(workspace, 'folder'));
    const missing = await runTool(workspace, 'read_file', { path: 'missing.txt' });
    assert.equal(missing.success, false);
    assert.equal(missing.error, 'File not found: missing.txt');
    const folderRead = await runTool(workspace, 'read_file', { path: 'folder' });
    assert.equal(folderRead.error, 'Not a file: folder');
    const folderWrite = await runTool(workspace, 'write_file', { path: 'folder', content: 'x' });
    assert.equal(folderWrite.error, 'Not a file: folder');
  });

  it('refuses content over 100,000 characters without writing anything', async () => {
    const workspace = await newWorkspace();
    const result = await runTool(workspace, 'write_file', {
      path: 'big.txt',
      content: 'x'.repeat(MAX_FILE_CHARS + 1),
    });
    assert.equal(result.success, false);
    assert.equal(
      result.error,
      'Invalid arguments for tool write_file: content must be at most 100000 characters',
    );
    await assert.rejects(stat(path.join(workspace, 'big.txt')), { code: 'ENOENT' });
  });
});

describe('tool calls', () => {
  it('answers an unknown tool with "Unknown tool: X"', async () => {
    const result = await runTool(await newWorkspace(), 'teleport', {});
    assert.deepEqual(result, {
      callId: result.callId,
      success: false,
      output: '',
      error: 'Unknown tool: teleport',
      metadata: {},
    });
  });

  it('answers bad arguments with one line naming the tool and the field', async () => {
    const workspace = await newWorkspace();
    const missingPath = await runTool(workspace, 'write_file', { content: 'x' });
    assert.equal(missingPath.error, 'Invalid arguments for tool write_file: path is required');
    const wrongType = await runTool(workspace, 'bash', { command: 42 });
    assert.equal(wrongType.error, 'Invalid arguments for tool bash: command must be a string');
    const negative = await runTool(workspace, 'read_file', { path: 'a.txt', offset: -1 });
    assert.equal(negative.error, 'Invalid arguments for tool read_file: offset must be 0 or more');
  });
});
