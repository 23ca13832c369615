import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { temporal as proto } from '@temporalio/proto';
import { AgentsClient } from '../client/agents-client';
import { startCli } from './helpers/cli';
import { startTestSandbox, TEST_SANDBOX_TOKEN } from './helpers/environment';
import { completedActivitiesOfType, scheduledModelTurns } from './helpers/history';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { startTestTemporal, testTemporalBinary, type TestTemporal } from './helpers/temporal-server';
import { promisify } from 'node:util';
import { stopProcess } from './helpers/processes';
import { waitFor } from './helpers/wait';

let temporal: TestTemporal;
let agents: AgentsClient;
const workers: ChildProcess[] = [];
let otherMachineHome: string;
let sandbox: Awaited<ReturnType<typeof startTestSandbox>> | undefined;

async function startWorkerProcess(home: string): Promise<ChildProcess> {
  const child = await startCli(
    ['worker'],
    {
      ...temporal.environment,
      AGENTS_HOME: home,
      AGENTS_SANDBOX_URLS: sandbox?.endpoint.url ?? '',
      AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
    },
    /Worker polling/,
  );
  workers.push(child);
  return child;
}

describe('crashes during a run', () => {
  before(async () => {
    temporal = await startTestTemporal();
    agents = new AgentsClient(temporal.client);
    otherMachineHome = await mkdtemp(path.join(os.tmpdir(), 'agents-other-machine-'));
    sandbox = await startTestSandbox();
  });

  // Each test has only its own workers, so the one it kills is the one running its run.
  afterEach(async () => {
    for (const worker of workers.splice(0)) await stopProcess(worker);
  });

  after(async () => {
    await temporal?.close();
    await rm(otherMachineHome, { recursive: true, force: true });
    await sandbox?.server.close();
    if (sandbox !== undefined) await rm(sandbox.root, { recursive: true, force: true });
  });

  it('a worker killed during a model call is replaced and the run completes with every iteration recorded once', async () => {
    const first = await startWorkerProcess(temporal.home);
    const name = uniqueName('crash');
    const handle = await agents.start(
      scriptedRun(name, [{ text: 'one' }, { text: 'two', delayMs: 3000 }, { text: 'three' }], {
        maxIterations: 3,
      }),
    );
    await waitFor('the second model turn to be running', async () => {
      const description = await handle.describe();
      const turn = description.raw.pendingActivities?.[0];
      const started = turn?.state === proto.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED;
      return started && (await agents.status(name)).iteration === 2;
    });

    first.kill('SIGKILL');
    await once(first, 'exit');
    // The replacement runs on "another machine": a home without the first worker's conversation store.
    await startWorkerProcess(otherMachineHome);

    const result = await waitFor('the run to complete', () => handle.result(), 90_000);
    assert.equal(result.exitReason, 'max_iterations');
    assert.equal(result.iterations, 3);

    const records = await agents.iterations(name);
    assert.deepEqual(
      records.map((record) => [record.iteration, record.status, record.summary]),
      [
        [1, 'ok', 'one'],
        [2, 'ok', 'two'],
        [3, 'ok', 'three'],
      ],
    );

    const events = (await handle.fetchHistory()).events ?? [];
    const completedTurns = completedActivitiesOfType(events, 'modelTurn');
    assert.equal(completedTurns.length, 3, 'each model turn completed exactly once');
    const retriedAfterHeartbeatTimeout = events.some(
      (event) =>
        (event.activityTaskStartedEventAttributes?.attempt ?? 0) >= 2 &&
        event.activityTaskStartedEventAttributes?.lastFailure?.timeoutFailureInfo?.timeoutType ===
          proto.api.enums.v1.TimeoutType.TIMEOUT_TYPE_HEARTBEAT,
    );
    assert.ok(retriedAfterHeartbeatTimeout, 'the killed call was retried after its heartbeat timed out');
    // The new worker lacked the conversation, so the workflow sent it whole once, then only deltas again.
    const turns = await scheduledModelTurns(handle);
    assert.deepEqual(
      turns.map((turn) => turn.input.full?.messages.length),
      [0, undefined, 2, undefined],
    );
  });

  it('a dev server killed and restarted on its SQLite file carries the run on', async () => {
    await startWorkerProcess(temporal.home);
    const name = uniqueName('server-crash');
    const handle = await agents.start(
      scriptedRun(name, [{ text: 'before' }, { text: 'after' }], { intervalS: 2, maxIterations: 2 }),
    );
    await waitFor('the first iteration', async () => (await agents.status(name)).state === 'sleeping');

    await temporal.stopServer({ crash: true });
    await temporal.restartServer();

    const result = await waitFor('the run to complete after the restart', () => handle.result(), 90_000);
    assert.equal(result.exitReason, 'max_iterations');
    const records = await agents.iterations(name);
    assert.deepEqual(
      records.map((record) => [record.iteration, record.summary]),
      [
        [1, 'before'],
        [2, 'after'],
      ],
    );
  });

  it('a worker killed while a tool call runs is replaced and the command runs exactly once', async () => {
    const first = await startWorkerProcess(temporal.home);
    const name = uniqueName('tool-crash');
    const handle = await agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'appending',
            toolCalls: [{ tool: 'bash', arguments: { command: 'sleep 3; echo x >> log' } }],
          },
          { text: 'appended' },
        ],
        { maxIterations: 1 },
      ),
    );
    await waitFor('the tool batch to be running', async () => {
      const description = await handle.describe();
      const activity = description.raw.pendingActivities?.[0];
      return (
        activity?.activityType?.name === 'toolBatch' &&
        activity.state === proto.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
      );
    });

    first.kill('SIGKILL');
    await once(first, 'exit');
    await startWorkerProcess(temporal.home);

    const result = await waitFor('the run to complete', () => handle.result(), 90_000);
    assert.equal(result.exitReason, 'max_iterations');
    const events = (await handle.fetchHistory()).events ?? [];
    const retried = events.some((event) => (event.activityTaskStartedEventAttributes?.attempt ?? 0) >= 2);
    assert.ok(retried, 'the tool batch was retried on the new worker');
    const trajectories = path.join(sandbox!.root, 'trajectories');
    const [trajectory] = (await readdir(trajectories)).filter((entry) => entry.startsWith(`agent-${name}-`));
    assert.equal(await readFile(path.join(trajectories, trajectory!, 'workspace', 'log'), 'utf8'), 'x\n');
  });

  it('a run awaiting approval survives a worker SIGKILL and a server restart, is approved with `temporal workflow signal`, and completes', async () => {
    const first = await startWorkerProcess(temporal.home);
    const name = uniqueName('approval-crash');
    const handle = await agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'asking',
            toolCalls: [{ tool: 'bash', arguments: { command: 'echo approved >> approvals' } }],
          },
          { text: 'done' },
        ],
        { maxIterations: 1, permissions: { mode: 'ask' } },
      ),
    );
    const waiting = await waitFor('the run to await approval', async () => {
      const status = await agents.status(name);
      return status.state === 'awaiting_approval' ? status : undefined;
    });
    const requestId = waiting.pendingPermissions[0]?.requestId;
    assert.match(requestId ?? '', /^pr_[0-9a-f]{16}$/);

    first.kill('SIGKILL');
    await once(first, 'exit');
    await temporal.stopServer({ crash: true });
    await temporal.restartServer();

    // The decision needs no worker: it is a signal, stored in the history until one comes.
    const input = JSON.stringify({ requestId, approve: true, by: 'operator' });
    await promisify(execFile)(await testTemporalBinary(), [
      'workflow',
      'signal',
      '--address',
      temporal.config.temporal.address,
      '--workflow-id',
      handle.workflowId,
      '--name',
      'permission',
      '--input',
      input,
    ]);
    await startWorkerProcess(otherMachineHome);

    const result = await waitFor('the run to complete after approval', () => handle.result(), 90_000);
    assert.equal(result.exitReason, 'max_iterations');
    const [record] = await agents.iterations(name);
    assert.equal(record?.status, 'permission');
    const trajectories = path.join(sandbox!.root, 'trajectories');
    const [trajectory] = (await readdir(trajectories)).filter((entry) => entry.startsWith(`agent-${name}-`));
    assert.equal(
      await readFile(path.join(trajectories, trajectory!, 'workspace', 'approvals'), 'utf8'),
      'approved\n',
    );
    const events = (await handle.fetchHistory()).events ?? [];
    const signal = events.find(
      (event) => event.workflowExecutionSignaledEventAttributes?.signalName === 'permission',
    );
    assert.match(
      signal?.workflowExecutionSignaledEventAttributes?.identity ?? '',
      /./,
      'the signal names who sent it',
    );
  });
});
