import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { access, mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { loadConfig } from '../client/config';
import { formatBytes, parseByteSize } from '../sandbox/byte-size';
import { SandboxServer } from '../sandbox/sandbox-server';
import type { SandboxTotals } from '../sandbox/sandbox-watchdog';
import { closeStatefulSessions, liveStatefulSessions } from '../sandbox/stateful-sessions';
import type { ToolResult } from '../sandbox/tool-call';
import { runSandboxTool } from '../sandbox/tools';
import { measureWorkspaceBytes } from '../sandbox/workspace-quota';
import { waitFor } from './helpers/wait';

/**
 * The totals a sandbox server holds each trajectory to, attacked on real bubblewrap through a real
 * server: a workspace filled past its disk quota, a process tree whose processes each stay under
 * RLIMIT_AS but together pass the memory limit (in `bash`, `bash_stateful` and a background writer
 * in `tmux` between calls), more stateful sessions than the cap, and a `write_file` past the quota.
 * Each is stopped and told why, and the server stays healthy.
 */

const MIB = 1024 * 1024;
const TOTALS: SandboxTotals = { diskQuotaBytes: 64 * MIB, memoryLimitBytes: 256 * MIB, maxSessions: 2 };
const DISK_QUOTA_MESSAGE =
  /^Command killed: the workspace is over its disk quota \(\d+\.\d MiB used of 64\.0 MiB\): delete files to go on/;
const MEMORY_MESSAGE = /^Command killed: its processes used over 256\.0 MiB of memory/;
/**
 * The overshoot the disk watchdog allows for: what a sandbox writes in one sampling interval
 * (250 ms on a small workspace) at the page cache's speed, with room to spare on a loaded machine.
 */
const STATED_DISK_OVERSHOOT_BYTES = 1024 * MIB;
const TOKEN = 'quota-test-token-0123456789';

// Registered first, so the sessions close before the server and its folder go.
after(async () => {
  await closeStatefulSessions();
});

let server: SandboxServer;
let baseUrl: string;
let root: string;

before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'agents-sandbox-quotas-'));
  server = new SandboxServer({
    root,
    token: TOKEN,
    lanes: 4,
    runTool: (call, workspace, signal) => runSandboxTool(call, workspace, signal, 'bubblewrap', TOTALS),
  });
  baseUrl = `http://127.0.0.1:${await server.listen(0)}`;
});

after(async () => {
  await server.close();
  await rm(root, { recursive: true, force: true });
});

async function execute(
  trajectoryId: string,
  tool: string,
  args: Record<string, unknown>,
  timeoutS = 60,
): Promise<ToolResult> {
  const response = await request(`${baseUrl}/execute`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
    body: JSON.stringify({ callId: randomUUID(), trajectoryId, tool, arguments: args, timeoutS }),
  });
  const text = await response.body.text();
  assert.equal(response.statusCode, 200, text);
  return JSON.parse(text) as ToolResult;
}

function bash(trajectoryId: string, command: string): Promise<ToolResult> {
  return execute(trajectoryId, 'bash', { command });
}

async function assertHealthy(): Promise<void> {
  const response = await request(`${baseUrl}/health`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(response.statusCode, 200);
  assert.equal(((await response.body.json()) as { status: string }).status, 'ok');
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

function workspaceOf(trajectoryId: string): string {
  return path.join(root, 'trajectories', trajectoryId, 'workspace');
}

/** Writes 1 MiB files for ever (each far under RLIMIT_FSIZE), in the workspace. */
const FILE_WRITER = 'i=0; while :; do head -c 1048576 /dev/zero > "fill-$i"; i=$((i + 1)); done';

/** Eight processes holding 64 MiB each: 512 MiB in all, each far under RLIMIT_AS (1 GiB). */
const MEMORY_HOGS =
  'for i in 1 2 3 4 5 6 7 8; do python3 -c "import time; b = b\'x\' * (64 << 20); time.sleep(120)" & done; wait';

describe('the disk quota of a workspace', () => {
  it('kills a bash call that writes files past the quota, says why, and bounds the overshoot', async () => {
    const trajectoryId = `disk-${randomUUID()}`;
    const result = await bash(trajectoryId, FILE_WRITER);
    assert.equal(result.success, false);
    assert.match(result.error ?? '', DISK_QUOTA_MESSAGE);
    assert.equal((result.metadata.limitExceeded as { kind: string }).kind, 'disk-quota');
    const used = await measureWorkspaceBytes(workspaceOf(trajectoryId));
    assert.ok(used > TOTALS.diskQuotaBytes, `the writer got past the quota (${formatBytes(used)})`);
    assert.ok(
      used < TOTALS.diskQuotaBytes + STATED_DISK_OVERSHOOT_BYTES,
      `usage ${formatBytes(used)} stays within the stated overshoot`,
    );
    await assertHealthy();
  });

  it('lets a call that starts over the quota delete files, and kills one that writes more', async () => {
    const trajectoryId = `disk-over-${randomUUID()}`;
    assert.match((await bash(trajectoryId, FILE_WRITER)).error ?? '', DISK_QUOTA_MESSAGE);

    const growing = await bash(trajectoryId, 'head -c 8388608 /dev/zero > more && sleep 60');
    assert.equal(growing.success, false);
    assert.match(growing.error ?? '', DISK_QUOTA_MESSAGE);

    const cleaned = await bash(trajectoryId, 'rm -f fill-* more && echo cleaned');
    assert.equal(cleaned.success, true, cleaned.error);
    assert.equal(cleaned.output, 'cleaned\n');
    assert.ok((await measureWorkspaceBytes(workspaceOf(trajectoryId))) < MIB);
    const after = await bash(trajectoryId, 'head -c 1048576 /dev/zero > small && echo written');
    assert.equal(after.success, true, after.error);
    await assertHealthy();
  });

  it('counts a sparse file by the blocks it takes and a filled one in full', async () => {
    const trajectoryId = `sparse-${randomUUID()}`;
    assert.equal((await bash(trajectoryId, 'true')).success, true);
    // 5 GB of apparent size; RLIMIT_FSIZE keeps a command from making one, so the host does.
    const huge = await open(path.join(workspaceOf(trajectoryId), 'huge-sparse'), 'w');
    await huge.truncate(5_000_000_000);
    await huge.close();
    const sparse = await bash(
      trajectoryId,
      'truncate -s 100M sparse-inside && sleep 1 && stat -c %s huge-sparse sparse-inside',
    );
    assert.equal(sparse.success, true, sparse.error);
    assert.equal(sparse.output, '5000000000\n104857600\n');

    const filled = await bash(trajectoryId, 'head -c 83886080 /dev/zero > filled && sleep 60');
    assert.equal(filled.success, false);
    assert.match(filled.error ?? '', DISK_QUOTA_MESSAGE);
    await assertHealthy();
  });

  it('counts files a process deleted but still holds open or mapped', async () => {
    const trajectoryId = `deleted-${randomUUID()}`;
    const opened = await bash(
      trajectoryId,
      'exec 3>hidden && rm hidden && head -c 83886080 /dev/zero >&3 && sleep 60',
    );
    assert.equal(opened.success, false);
    assert.match(opened.error ?? '', DISK_QUOTA_MESSAGE);

    const mapped = await bash(
      trajectoryId,
      `python3 -c "
import mmap, os, time
descriptor = os.open('mapped', os.O_RDWR | os.O_CREAT)
os.ftruncate(descriptor, 80 << 20)
view = mmap.mmap(descriptor, 80 << 20)
os.close(descriptor)
os.unlink('mapped')
view[:] = b'x' * (80 << 20)
time.sleep(60)
"`,
    );
    assert.equal(mapped.success, false);
    assert.match(mapped.error ?? '', DISK_QUOTA_MESSAGE);
    assert.ok((await measureWorkspaceBytes(workspaceOf(trajectoryId))) < MIB);
    await assertHealthy();
  });

  it('refuses a write_file that would cross the quota and leaves nothing behind', async () => {
    const trajectoryId = `write-${randomUUID()}`;
    // 40 KiB under the quota: room for a small file, not for the largest write_file.
    const filled = await bash(trajectoryId, `head -c ${64 * MIB - 40 * 1024} /dev/zero > nearly-full`);
    assert.equal(filled.success, true, filled.error);

    const refused = await execute(trajectoryId, 'write_file', {
      path: 'big.txt',
      content: 'x'.repeat(99_000),
    });
    assert.equal(refused.success, false);
    assert.match(
      refused.error ?? '',
      /^Write refused: it would take the workspace over its disk quota \(\d+\.\d MiB used of 64\.0 MiB, this write adds 96\.7 KiB\): delete files to go on$/,
    );
    const read = await execute(trajectoryId, 'read_file', { path: 'big.txt' });
    assert.equal(read.success, false);

    const small = await execute(trajectoryId, 'write_file', { path: 'small.txt', content: 'fits' });
    assert.equal(small.success, true, small.error);
    await assertHealthy();
  });
});

describe('the memory of a whole process tree', () => {
  it('kills a bash call whose processes together pass the limit, each under its own', async () => {
    const result = await bash(`memory-${randomUUID()}`, MEMORY_HOGS);
    assert.equal(result.success, false);
    assert.match(result.error ?? '', MEMORY_MESSAGE);
    assert.equal((result.metadata.limitExceeded as { kind: string }).kind, 'memory-limit');
    await assertHealthy();
  });

  it('tears a bash_stateful session down when its processes pass the limit, and the next call starts fresh', async () => {
    const trajectoryId = `memory-stateful-${randomUUID()}`;
    const hog = await execute(trajectoryId, 'bash_stateful', { command: MEMORY_HOGS });
    assert.equal(hog.success, false);
    assert.match(hog.error ?? '', MEMORY_MESSAGE);
    assert.equal(hog.metadata.sessionClosed, true);

    const next = await execute(trajectoryId, 'bash_stateful', { command: 'echo fresh' });
    assert.equal(next.success, true, next.error);
    assert.equal(next.output, 'fresh\n');
    assert.equal(next.metadata.sessionStarted, 'new');
    await closeStatefulSessions(trajectoryId);
    await assertHealthy();
  });

  it('counts what a session keeps in its memory-backed /tmp', async () => {
    const trajectoryId = `memory-tmpfs-${randomUUID()}`;
    // 200 MiB in /tmp and /dev/shm (each under its own 256 MiB) plus 64 MiB held by a process.
    const filled = await execute(trajectoryId, 'bash_stateful', {
      command:
        'head -c 104857600 /dev/zero > /tmp/a && head -c 104857600 /dev/zero > /dev/shm/b && echo filled',
    });
    assert.equal(filled.success, true, filled.error);
    const hog = await execute(trajectoryId, 'bash_stateful', {
      command: 'python3 -c "import time; b = b\'x\' * (64 << 20); time.sleep(120)"',
    });
    assert.equal(hog.success, false);
    assert.match(hog.error ?? '', MEMORY_MESSAGE);
    await closeStatefulSessions(trajectoryId);
    await assertHealthy();
  });
});

describe('stateful sessions between calls', () => {
  it('tears a session down when a background writer in tmux fills the disk between calls, and says why', async () => {
    const trajectoryId = `tmux-writer-${randomUUID()}`;
    const started = await execute(trajectoryId, 'tmux', { action: 'start', session: 'writer' });
    assert.equal(started.success, true, started.error);
    const sent = await execute(trajectoryId, 'tmux', {
      action: 'send_keys',
      session: 'writer',
      keys: `${FILE_WRITER}\n`,
    });
    assert.equal(sent.success, true, sent.error);

    await waitFor('the watchdog to tear the session down', () => liveStatefulSessions() === 0);
    const used = await measureWorkspaceBytes(workspaceOf(trajectoryId));
    assert.ok(used < TOTALS.diskQuotaBytes + STATED_DISK_OVERSHOOT_BYTES, formatBytes(used));

    const next = await execute(trajectoryId, 'tmux', { action: 'capture', session: 'writer' });
    assert.equal(next.success, false);
    assert.match(next.error ?? '', /No tmux session 'writer'/);
    assert.match(
      next.error ?? '',
      /previous stateful session was closed between calls\. Command killed: the workspace is over its disk quota/,
    );
    assert.equal((next.metadata.previousSessionLimitExceeded as { kind: string }).kind, 'disk-quota');

    const cleaned = await bash(trajectoryId, 'rm -f fill-* && echo cleaned');
    assert.equal(cleaned.output, 'cleaned\n');
    await closeStatefulSessions(trajectoryId);
    await assertHealthy();
  });

  it('closes the longest-idle session for a session beyond the cap, tells its run, and refuses when all are busy', async () => {
    await closeStatefulSessions();
    const first = `cap-a-${randomUUID()}`;
    const second = `cap-b-${randomUUID()}`;
    const third = `cap-c-${randomUUID()}`;
    assert.equal((await execute(first, 'bash_stateful', { command: 'KEPT=first' })).success, true);
    assert.equal((await execute(second, 'tmux', { action: 'start', session: 'main' })).success, true);

    const admitted = await execute(third, 'bash_stateful', { command: 'echo hello' });
    assert.equal(admitted.success, true, admitted.error);
    assert.equal(admitted.output, 'hello\n');
    assert.equal(liveStatefulSessions(), 2);
    // The session used more recently is untouched.
    const kept = await execute(second, 'tmux', { action: 'capture', session: 'main' });
    assert.equal(kept.success, true, kept.error);

    const evicted = await execute(first, 'bash_stateful', { command: 'echo "${KEPT:-gone}"' });
    assert.equal(evicted.success, true, evicted.error);
    assert.match(
      evicted.output,
      /^\[The previous stateful session was closed between calls\. It was closed to make room for another session: this sandbox server runs at most 2 at once \(--max-sessions\), and it was the longest idle\]\ngone\n$/,
    );
    assert.equal(evicted.metadata.previousSessionEvicted, true);

    // Both live sessions busy: a third is refused, naming the cap.
    const busy = [first, second].map((trajectoryId) =>
      execute(trajectoryId, 'bash_stateful', { command: 'touch busy && sleep 5' }),
    );
    await waitFor('both sessions to be busy', async () => {
      const started = await Promise.all(
        [first, second].map((trajectoryId) => exists(path.join(workspaceOf(trajectoryId), 'busy'))),
      );
      return started.every(Boolean);
    });
    const refused = await execute(third, 'bash_stateful', { command: 'echo again' });
    assert.equal(refused.success, false);
    assert.match(
      refused.error ?? '',
      /^Too many stateful sessions: this sandbox server runs at most 2 at once \(--max-sessions\) and all of them are in use/,
    );
    for (const result of await Promise.all(busy)) assert.equal(result.success, true, result.error);
    await closeStatefulSessions();
    await assertHealthy();
  });
});

describe('sizes of the totals', () => {
  it('reads sizes as operators write them and refuses anything else', () => {
    assert.equal(parseByteSize('2GiB'), 2 * 1024 ** 3);
    assert.equal(parseByteSize('500MiB'), 500 * MIB);
    assert.equal(parseByteSize('2G'), 2 * 1024 ** 3);
    assert.equal(parseByteSize('1.5GB'), 1_500_000_000);
    assert.equal(parseByteSize('1048576'), MIB);
    for (const bad of ['', '0', '-1GiB', '2 parsecs', 'GiB', '1e9'])
      assert.equal(parseByteSize(bad), undefined);
    assert.equal(formatBytes(2 * 1024 ** 3), '2.0 GiB');
    assert.equal(formatBytes(64 * MIB), '64.0 MiB');
  });

  it('takes the totals from the environment and names what is accepted when one is wrong', () => {
    const { totals } = loadConfig({
      AGENTS_SANDBOX_DISK_QUOTA: '500MiB',
      AGENTS_SANDBOX_MEMORY_LIMIT: '1GiB',
      AGENTS_SANDBOX_MAX_SESSIONS: '4',
    }).sandbox;
    assert.deepEqual(totals, { diskQuotaBytes: 500 * MIB, memoryLimitBytes: 1024 * MIB, maxSessions: 4 });
    assert.deepEqual(loadConfig({}).sandbox.totals, {
      diskQuotaBytes: 2 * 1024 ** 3,
      memoryLimitBytes: 2 * 1024 ** 3,
      maxSessions: 16,
    });
    assert.throws(
      () => loadConfig({ AGENTS_SANDBOX_DISK_QUOTA: 'lots' }),
      /AGENTS_SANDBOX_DISK_QUOTA.*must be a number of bytes or a size such as 500MiB/,
    );
  });
});
