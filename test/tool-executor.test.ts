import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ToolExecutor, type SandboxEndpoint } from '../activities/tool-executor';
import { SandboxServer } from '../sandbox/sandbox-server';
import type { ToolCall } from '../sandbox/tool-call';
import { runSandboxTool } from '../sandbox/tools';
import { uniqueName } from './helpers/run-input';

const TOKEN = 'executor-test-token';
let root: string;
const servers: SandboxServer[] = [];
const endpoints: SandboxEndpoint[] = [];

function bash(trajectoryId: string, command: string, timeoutS = 30): ToolCall {
  return {
    callId: uniqueName('call'),
    trajectoryId,
    tool: 'bash',
    arguments: { command },
    timeoutS,
    policy: { network: false },
  };
}

describe('the tool executor', () => {
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'agents-executor-'));
    // The sandbox user must be able to walk down to the servers' workspaces below this folder.
    await chmod(root, 0o711);
    for (const name of ['a', 'b']) {
      const server = new SandboxServer({
        root: path.join(root, name),
        token: TOKEN,
        lanes: 8,
        runTool: runSandboxTool,
      });
      servers.push(server);
      endpoints.push({ url: `http://127.0.0.1:${await server.listen(0)}`, token: TOKEN });
    }
  });

  after(async () => {
    await Promise.all(servers.map((server) => server.close()));
    await rm(root, { recursive: true, force: true });
  });

  it('sends the calls of many runs in a few batches', async () => {
    const executor = new ToolExecutor({ endpoints: endpoints.slice(0, 1) });
    try {
      const results = await Promise.all(
        Array.from({ length: 40 }, (_, index) => executor.execute(bash(uniqueName('many'), `echo ${index}`))),
      );
      assert.deepEqual(
        results.map((result) => result.output.trim()),
        Array.from({ length: 40 }, (_, index) => String(index)),
      );
      const stats = executor.stats();
      assert.equal(stats.calls, 40);
      assert.ok(stats.batches < 40, `40 calls went out in ${stats.batches} batches`);
      assert.equal(stats.latencyMs.count, 40);
      assert.equal(
        Object.values(stats.histogram).reduce((sum, count) => sum + count, 0),
        40,
      );
    } finally {
      await executor.close();
    }
  });

  it('flushes a full batch at once without waiting for the window', async () => {
    const executor = new ToolExecutor({ endpoints: endpoints.slice(0, 1), windowMs: 60_000, maxBatch: 3 });
    try {
      const results = await Promise.all(
        [1, 2, 3].map((index) => executor.execute(bash(uniqueName('full'), `echo ${index}`))),
      );
      assert.equal(results.length, 3);
      assert.equal(executor.stats().batches, 1);
    } finally {
      await executor.close();
    }
  });

  it('lets a quick call finish before a slow one, in the same batch and in a later one', async () => {
    const executor = new ToolExecutor({ endpoints: endpoints.slice(0, 1) });
    try {
      const finished: string[] = [];
      const track = (label: string, call: ToolCall) =>
        executor.execute(call).then(() => finished.push(label));
      const slow = track('slow', bash(uniqueName('slow'), 'sleep 3'));
      const sameBatch = track('same batch', bash(uniqueName('quick'), 'true', 5));
      await sameBatch;
      const laterBatch = track('later batch', bash(uniqueName('quick'), 'true'));
      await Promise.all([slow, laterBatch]);
      assert.deepEqual(finished, ['same batch', 'later batch', 'slow']);
    } finally {
      await executor.close();
    }
  });

  it('spreads trajectories over the servers and every executor sends a trajectory to the same one', async () => {
    const first = new ToolExecutor({ endpoints });
    const second = new ToolExecutor({ endpoints });
    try {
      const trajectories = Array.from({ length: 30 }, () => uniqueName('spread'));
      const chosen = trajectories.map((trajectory) => first.serverFor(trajectory).url);
      assert.ok(new Set(chosen).size === 2, 'both servers receive trajectories');
      assert.deepEqual(
        trajectories.map((trajectory) => second.serverFor(trajectory).url),
        chosen,
      );
      const trajectory = trajectories[0]!;
      await first.execute(bash(trajectory, 'echo remembered > note'));
      const read = await second.execute(bash(trajectory, 'cat note'));
      assert.equal(read.output.trim(), 'remembered');
    } finally {
      await Promise.all([first.close(), second.close()]);
    }
  });
});
