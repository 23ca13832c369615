import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { temporal as proto } from '@temporalio/proto';
import { NativeConnection, Worker } from '@temporalio/worker';
import type { ModelTurnInput } from '../activities';
import { Notifier } from '../activities/notifier';
import { AgentsClient } from '../client/agents-client';
import type { OpenAIModelSpec } from '../common/agent-input';
import { DAILY_LEDGER_HEARTBEAT_TIMEOUT_S, TASK_QUEUE } from '../common/constants';
import { chargeSignal, dailyLedgerWorkflowId, usageQuery, utcDay } from '../common/daily-ledger';
import type { AgentNotification } from '../common/notification';
import type { IterationRecord } from '../common/agent-run-types';
import { createModelDispatcher } from '../models/http';
import type { ModelProvider } from '../models/model-provider';
import { OpenAIModel } from '../models/openai-model';
import { ScriptedModel } from '../models/scripted-model';
import type { ToolResult } from '../sandbox/tool-call';
import { createActivityDependencies } from '../worker/create-worker';
import { loadWorkflowBundle } from '../worker/workflow-bundle';
import { dailyBudgetLedger } from '../workflows/daily-ledger';
import { startCli } from './helpers/cli';
import { TEST_SANDBOX_TOKEN } from './helpers/environment';
import { completedActivitiesOfType, finalAttempts } from './helpers/history';
import { ModelApiServer, openaiModelOf, openaiStream } from './helpers/model-api-server';
import { processesMatching, stopProcess, waitForNoProcess } from './helpers/processes';
import { assertReplays } from './helpers/replay';
import { scriptedRun, TEST_TEMPLATE, uniqueName } from './helpers/run-input';
import { freePort, startTestTemporal, type TestTemporal } from './helpers/temporal-server';
import { waitFor } from './helpers/wait';
import { startWorker, type RunningWorker } from './helpers/worker';

/**
 * Crashes in the middle of a call, seen from the outside: a sandbox server killed while a command
 * runs, a worker killed while it reads the daily ledger, a notice whose delivery is retried. The
 * run must say what happened and stall no longer than a heartbeat timeout.
 */

/** What the model reads at the top of a result whose command ran a second time. */
const RERUN_LINE = '[the sandbox server stopped during this command; it ran again from the start]';

/** The key the in-process workers' OpenAI provider reads; the model server ignores it. */
const KEY_VARIABLE = 'AGENTS_TEST_MODEL_KEY';

const PENDING_STARTED = proto.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED;
const HEARTBEAT_TIMEOUT = proto.api.enums.v1.TimeoutType.TIMEOUT_TYPE_HEARTBEAT;

let temporal: TestTemporal;
let agents: AgentsClient;
let sandboxRoot: string;
const processes: ChildProcess[] = [];
const workers: RunningWorker[] = [];
const modelServers: ModelApiServer[] = [];
/** Runs of this file, replayed by its last test. */
const startedWorkflowIds: string[] = [];

/** Starts `agents sandbox` on `port` with the file's root, as an operator runs it. */
async function startSandboxProcess(port: number): Promise<ChildProcess> {
  const child = await startCli(
    ['sandbox', '--port', String(port)],
    {
      ...process.env,
      AGENTS_HOME: temporal.home,
      AGENTS_SANDBOX_ROOT: sandboxRoot,
      AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
    },
    /^Sandbox server on /,
  );
  processes.push(child);
  return child;
}

/** Starts `agents worker` against the file's server, with tool calls going to `sandboxUrl`. */
async function startWorkerProcess(sandboxUrl = ''): Promise<ChildProcess> {
  const child = await startCli(
    ['worker'],
    {
      ...temporal.environment,
      AGENTS_SANDBOX_URLS: sandboxUrl,
      AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
    },
    /Worker polling/,
  );
  processes.push(child);
  return child;
}

/** An in-process worker of the file's server; `sandboxUrl` gives it a tool executor. */
async function startInProcessWorker(
  options: { sandboxUrl?: string; notifier?: Notifier } = {},
): Promise<RunningWorker> {
  const sandboxes =
    options.sandboxUrl === undefined ? [] : [{ url: options.sandboxUrl, token: TEST_SANDBOX_TOKEN }];
  const dependencies = createActivityDependencies(temporal.home, sandboxes);
  dependencies.models = new Map<string, ModelProvider>([
    ['scripted', new ScriptedModel()],
    ['openai', new OpenAIModel({ dispatcher: createModelDispatcher(), env: { [KEY_VARIABLE]: 'sk-test' } })],
  ]);
  if (options.notifier !== undefined) {
    await dependencies.notifier.close();
    dependencies.notifier = options.notifier;
  }
  const worker = await startWorker(temporal, dependencies);
  workers.push(worker);
  return worker;
}

function openaiSpec(server: ModelApiServer): OpenAIModelSpec {
  return openaiModelOf(server, KEY_VARIABLE);
}

/** The results of every completed tool batch of the run, in order, decoded from its history. */
async function toolBatchResults(handle: WorkflowHandle): Promise<ToolResult[][]> {
  const events = (await handle.fetchHistory()).events ?? [];
  return completedActivitiesOfType(events, 'toolBatch').map((event) => {
    const payload = event.activityTaskCompletedEventAttributes?.result?.payloads?.[0];
    assert.ok(payload, 'a completed tool batch has a result');
    return defaultPayloadConverter.fromPayload<ToolResult[]>(payload);
  });
}

/** The workspace of the run named `name` on the file's sandbox root. */
async function workspaceOf(name: string): Promise<string> {
  const trajectories = path.join(sandboxRoot, 'trajectories');
  const [trajectory] = (await readdir(trajectories)).filter((entry) => entry.startsWith(`agent-${name}-`));
  assert.ok(trajectory, `a workspace of ${name}`);
  return path.join(trajectories, trajectory, 'workspace');
}

/** Whether the run's pending activity of `activityType` is running on a worker right now. */
async function activityRunning(handle: WorkflowHandle, activityType: string): Promise<boolean> {
  const description = await handle.describe();
  return (description.raw.pendingActivities ?? []).some(
    (activity) => activity.activityType?.name === activityType && activity.state === PENDING_STARTED,
  );
}

describe('crashes in the middle of a call', () => {
  before(async () => {
    temporal = await startTestTemporal();
    agents = new AgentsClient(temporal.client);
    sandboxRoot = await mkdtemp(path.join(os.tmpdir(), 'agents-crash-sandbox-'));
  });

  afterEach(async () => {
    for (const worker of workers.splice(0)) await worker.stop();
    for (const child of processes.splice(0)) await stopProcess(child);
    for (const server of modelServers.splice(0)) await server.close();
  });

  after(async () => {
    await temporal?.close();
    await rm(sandboxRoot, { recursive: true, force: true });
  });

  it('runs a command again when its sandbox server was killed mid-call, and the model and the history say so', async () => {
    const port = await freePort();
    const sandboxUrl = `http://127.0.0.1:${port}`;
    const firstServer = await startSandboxProcess(port);
    await startInProcessWorker({ sandboxUrl });
    const marker = uniqueName('rerun-marker');
    const command = `echo started >> runs; sleep 5; echo done # ${marker}`;
    const model = await ModelApiServer.start();
    modelServers.push(model);
    model.reply(
      {
        events: openaiStream({
          toolCalls: [{ id: 'call_1', name: 'bash', argumentPieces: [JSON.stringify({ command })] }],
        }),
      },
      { events: openaiStream({ textPieces: ['Checked the output.'] }) },
    );
    const name = uniqueName('sandbox-crash');
    const handle = await agents.start({
      name,
      template: { name: 'test-program', source: 'file', content: TEST_TEMPLATE },
      model: openaiSpec(model),
      intervalS: 0,
      maxIterations: 1,
      permissions: { mode: 'auto-approve' },
      guards: { stagnationWindow: 0 },
    });
    startedWorkflowIds.push(handle.workflowId);

    await waitFor('the command to be running', async () => (await processesMatching(marker)).length > 0);
    await stopProcess(firstServer);
    // The command died with its server: it left the first line of `runs` and nothing more.
    await waitForNoProcess(marker);
    await startSandboxProcess(port);

    const result = await waitFor('the run to complete', () => handle.result(), 90_000);
    assert.equal(result.exitReason, 'max_iterations');

    // The model read, at the top of the result, that the command ran again from the start.
    assert.equal(model.requests.length, 2);
    const messages = (model.requests[1]?.body as { messages: Array<{ role: string; content: unknown }> })
      .messages;
    const toolMessage = messages.find((message) => message.role === 'tool');
    assert.equal(toolMessage?.content, `${RERUN_LINE}\ndone\n`);

    // The history's result says it too, and the tool batch was retried to get it.
    const [batch] = await toolBatchResults(handle);
    assert.equal(batch?.length, 1);
    assert.equal(batch?.[0]?.success, true);
    assert.equal(batch?.[0]?.metadata.rerun, true);
    assert.equal(batch?.[0]?.metadata.exitCode, 0);
    const [attempt] = await finalAttempts(handle, 'toolBatch');
    assert.ok((attempt ?? 0) >= 2, 'the tool batch was retried after the server stopped');
    // And it is true: the command's first step ran twice.
    assert.equal(await readFile(path.join(await workspaceOf(name), 'runs'), 'utf8'), 'started\nstarted\n');
  });

  it('does not mark a command as run again when only the worker was killed: the sandbox ran it once', async () => {
    const port = await freePort();
    const sandboxUrl = `http://127.0.0.1:${port}`;
    await startSandboxProcess(port);
    const firstWorker = await startWorkerProcess(sandboxUrl);
    const marker = uniqueName('once-marker');
    const name = uniqueName('worker-crash');
    const handle = await agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'appending',
            toolCalls: [
              { tool: 'bash', arguments: { command: `echo started >> runs; sleep 3 # ${marker}` } },
            ],
          },
          { text: 'appended' },
        ],
        { maxIterations: 1 },
      ),
    );
    startedWorkflowIds.push(handle.workflowId);
    await waitFor('the command to be running', async () => (await processesMatching(marker)).length > 0);
    await stopProcess(firstWorker);
    await startInProcessWorker({ sandboxUrl });

    const result = await waitFor('the run to complete', () => handle.result(), 90_000);
    assert.equal(result.exitReason, 'max_iterations');
    const [attempt] = await finalAttempts(handle, 'toolBatch');
    assert.ok((attempt ?? 0) >= 2, 'the tool batch was retried on the new worker');
    const [batch] = await toolBatchResults(handle);
    assert.equal(batch?.[0]?.success, true);
    assert.equal(batch?.[0]?.metadata.rerun, undefined);
    assert.doesNotMatch(batch?.[0]?.output ?? '', /ran again/);
    assert.equal(await readFile(path.join(await workspaceOf(name), 'runs'), 'utf8'), 'started\n');
  });

  it('retries a daily-ledger read lost with a killed worker after the heartbeat timeout, and the run goes on', async () => {
    // Today's ledger lives on a task queue of its own, whose worker the test starts and stops: while
    // none polls it, a charge waits in the ledger and every read of the ledger waits behind it.
    const heldQueue = 'held-ledger';
    const ledgerId = dailyLedgerWorkflowId(utcDay(Date.now()));
    const ledger = temporal.client.workflow.getHandle(ledgerId);
    await ledger.terminate('the test holds today’s ledger').catch((error: unknown) => {
      if (!(error instanceof WorkflowNotFoundError)) throw error;
    });
    await temporal.client.workflow.start(dailyBudgetLedger, {
      workflowId: ledgerId,
      taskQueue: heldQueue,
      args: [],
    });
    const bundle = await loadWorkflowBundle(path.join(temporal.home, 'cache'));
    const startLedgerWorker = async () => {
      const connection = await NativeConnection.connect({ address: temporal.config.temporal.address });
      const worker = await Worker.create({
        connection,
        namespace: temporal.config.temporal.namespace,
        taskQueue: heldQueue,
        workflowBundle: bundle,
      });
      const running = worker.run().finally(() => connection.close());
      return async () => {
        worker.shutdown();
        await running;
      };
    };
    const stopFirstLedgerWorker = await startLedgerWorker();
    await ledger.query(usageQuery, {});
    await stopFirstLedgerWorker();
    await ledger.signal(chargeSignal, { chargeId: 'held-by-the-test', tokens: 0, costUsd: 0 });

    let stopLedgerWorker: (() => Promise<void>) | undefined;
    try {
      const firstWorker = await startWorkerProcess();
      const name = uniqueName('ledger-crash');
      const handle = await agents.start(
        scriptedRun(name, [{ text: 'after the ledger' }], { maxIterations: 1 }),
      );
      startedWorkflowIds.push(handle.workflowId);
      await waitFor('the daily-ledger read to be running', () => activityRunning(handle, 'dailyUsage'));
      await stopProcess(firstWorker);
      await startInProcessWorker();

      // The read is retried on the new worker because its heartbeat stopped, not after its 30 s bound.
      await waitFor(
        'the read to be retried after its heartbeat timed out',
        async () => {
          const description = await handle.describe();
          return (description.raw.pendingActivities ?? []).some(
            (activity) =>
              activity.activityType?.name === 'dailyUsage' &&
              (activity.attempt ?? 0) >= 2 &&
              activity.lastFailure?.timeoutFailureInfo?.timeoutType === HEARTBEAT_TIMEOUT,
          );
        },
        60_000,
      );
      stopLedgerWorker = await startLedgerWorker();

      const result = await waitFor('the run to complete', () => handle.result(), 90_000);
      assert.equal(result.exitReason, 'max_iterations');
      const [record] = await agents.iterations(name);
      assert.equal(record?.summary, 'after the ledger');
      const events = (await handle.fetchHistory()).events ?? [];
      assert.ok(completedActivitiesOfType(events, 'dailyUsage').length >= 1, 'the retried read completed');
      const scheduled = events.filter(
        (event) => event.activityTaskScheduledEventAttributes?.activityType?.name === 'dailyUsage',
      );
      assert.ok(scheduled.length >= 1);
      for (const event of scheduled) {
        const heartbeatTimeout = event.activityTaskScheduledEventAttributes?.heartbeatTimeout;
        assert.equal(Number(heartbeatTimeout?.seconds ?? 0), DAILY_LEDGER_HEARTBEAT_TIMEOUT_S);
      }
    } finally {
      await stopLedgerWorker?.();
      // Later runs read and charge a ledger of today on the agents' task queue, as always.
      await ledger.terminate('the test releases today’s ledger').catch(() => undefined);
      await temporal.client.workflow.start(dailyBudgetLedger, {
        workflowId: ledgerId,
        taskQueue: TASK_QUEUE,
        args: [],
      });
    }
  });

  it('writes log.jsonl in iteration order when the notice of an earlier iteration is retried', async () => {
    const name = uniqueName('notice-order');
    /** The sinks as the worker has them, except that the first attempt of iteration 1's notice fails. */
    class FirstAttemptFails extends Notifier {
      override async deliver(notification: AgentNotification): Promise<void> {
        if (notification.record?.iteration === 1 && Context.current().info.attempt === 1)
          throw new Error('the notice of iteration 1 fails its first attempt');
        return super.deliver(notification);
      }
    }
    await startInProcessWorker({
      notifier: new FirstAttemptFails({ home: temporal.home, log: () => undefined }),
    });
    const handle = await agents.start(
      scriptedRun(name, [{ text: 'one' }, { text: 'two' }, { text: 'three' }], { maxIterations: 3 }),
    );
    startedWorkflowIds.push(handle.workflowId);
    const result = await waitFor('the run to complete', () => handle.result(), 60_000);
    assert.equal(result.iterations, 3);

    const events = (await handle.fetchHistory()).events ?? [];
    // The notice goes out on its own (notify) or with the next model turn, which then delivers it first.
    const firstIterationNotice = events.find((event) => {
      const attributes = event.activityTaskScheduledEventAttributes;
      const payload = attributes?.input?.payloads?.[0];
      if (payload == null) return false;
      if (attributes?.activityType?.name === 'notify')
        return defaultPayloadConverter.fromPayload<AgentNotification>(payload).record?.iteration === 1;
      if (attributes?.activityType?.name !== 'modelTurn') return false;
      const turn = defaultPayloadConverter.fromPayload<ModelTurnInput>(payload);
      return (turn.notices ?? []).some((notice) => notice.record?.iteration === 1);
    });
    const started = events.find(
      (event) =>
        String(event.activityTaskStartedEventAttributes?.scheduledEventId) ===
        String(firstIterationNotice?.eventId),
    );
    assert.equal(
      started?.activityTaskStartedEventAttributes?.attempt,
      2,
      'the notice of iteration 1 was retried',
    );
    const log = await readFile(path.join(temporal.home, 'logs', name, 'log.jsonl'), 'utf8');
    const lines = log
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as IterationRecord);
    assert.deepEqual(
      lines.map((line) => [line.iteration, line.summary]),
      [
        [1, 'one'],
        [2, 'two'],
        [3, 'three'],
      ],
    );
  });

  it('replays every history of this file without a determinism error', async () => {
    const histories = await assertReplays(temporal, startedWorkflowIds);
    assert.equal(histories.length, startedWorkflowIds.length);
  });
});
