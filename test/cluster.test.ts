import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Client, type WorkflowHandle } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { AgentsClient } from '../client/agents-client';
import { ensureSearchAttributes } from '../client/embedded-server';
import { parseHostPort } from '../common/host-port';
import type { AgentRunResult } from '../common/agent-run-types';
import type { ScriptedTurn } from '../common/agent-input';
import { dailyLedgerWorkflowId, usageQuery, utcDay } from '../common/daily-ledger';
import { assertOneLineFailure, runCli, spawnCli, startCli } from './helpers/cli';
import { TEST_SANDBOX_TOKEN } from './helpers/environment';
import { completedActivitiesOfType } from './helpers/history';
import { assertReplays } from './helpers/replay';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { startTestCluster, type TestCluster } from './helpers/temporal-cluster';
import { freePort } from './helpers/temporal-server';
import { stopProcess } from './helpers/processes';
import { waitFor } from './helpers/wait';

// The production shape: Temporal on PostgreSQL with each service a process of its own and two
// history hosts, two agents workers and two sandbox servers, each in its own process and home. Ten
// runs make tool calls, ask for approvals and pause on budgets while a worker is SIGKILLed, a
// history host is killed and restarted, and a sandbox server restarts; the tests after the first
// check what the runs left behind. Then, on the same cluster, the edges a user meets first: a
// namespace created moments before, IPv6 addresses, a worker started before its cluster answers.

const RUNS = 10;
const ITERATIONS = 5;
/** Tokens every model turn spends, so budgets pause and the daily ledger has charges to count. */
const TOKENS_PER_TURN = 100;
/** A session budget that pauses a run after its third iteration: two turns each, 100 tokens a turn. */
const PAUSING_SESSION_TOKENS = 550;

let cluster: TestCluster;
let agents: AgentsClient;
const scratch: string[] = [];
const processes: ChildProcess[] = [];

interface SandboxProcess {
  root: string;
  url: string;
  child: ChildProcess;
  port: number;
  home: string;
}
const sandboxes: SandboxProcess[] = [];
const workers: ChildProcess[] = [];

/** What the scenario left for the tests after it. */
interface FinishedRun {
  name: string;
  kind: 'approval' | 'budget' | 'plain';
  handle: WorkflowHandle;
  result: AgentRunResult;
}
let finished: FinishedRun[] = [];

/** The runs the scenario completed, failing the test that needs them when it did not. */
function finishedRuns(): FinishedRun[] {
  assert.equal(finished.length, RUNS, 'the scenario completed every run');
  return finished;
}
const scenarioSpan = { startedMs: 0, endedMs: 0 };

async function scratchFolder(prefix: string): Promise<string> {
  const folder = await mkdtemp(path.join(os.tmpdir(), prefix));
  scratch.push(folder);
  return folder;
}

/** `agents sandbox` on `port` over `root`, as a process of its own, until it is stopped. */
async function startSandboxProcess(sandbox: Omit<SandboxProcess, 'child' | 'url'>): Promise<SandboxProcess> {
  const child = await startCli(
    ['sandbox'],
    {
      ...cluster.environment(sandbox.home),
      AGENTS_SANDBOX_PORT: String(sandbox.port),
      AGENTS_SANDBOX_ROOT: sandbox.root,
      AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
    },
    /^Sandbox server on /,
  );
  processes.push(child);
  return { ...sandbox, child, url: `http://127.0.0.1:${sandbox.port}` };
}

/** `agents worker` on the cluster with both sandbox servers, in a home of its own (another machine). */
async function startWorkerProcess(): Promise<ChildProcess> {
  const child = await startCli(
    ['worker'],
    {
      ...cluster.environment(await scratchFolder('agents-cluster-worker-')),
      AGENTS_SANDBOX_URLS: sandboxes.map((sandbox) => sandbox.url).join(','),
      AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
    },
    /Worker polling/,
  );
  processes.push(child);
  workers.push(child);
  return child;
}

/** The iteration of an approval run whose tool call waits for a person. */
const APPROVED_ITERATION = 2;

/** The line an iteration's tool call appends; the permission rule asks for those starting `approved`. */
function lineOf(name: string, kind: FinishedRun['kind'], iteration: number): string {
  return kind === 'approval' && iteration === APPROVED_ITERATION
    ? `approved ${name}-${iteration}`
    : `${name}-${iteration}`;
}

/**
 * The turns of one run: each iteration appends a line naming the run and the iteration to
 * `calls.log` in its workspace, then says so.
 */
function turnsOf(name: string, kind: FinishedRun['kind']): Array<Partial<ScriptedTurn>> {
  const usage = { inputTokens: TOKENS_PER_TURN, outputTokens: 0 };
  return Array.from({ length: ITERATIONS }, (_, index) => {
    const iteration = index + 1;
    return [
      {
        text: `Writing line ${iteration}.`,
        usage,
        delayMs: 300,
        toolCalls: [
          { tool: 'bash', arguments: { command: `echo ${lineOf(name, kind, iteration)} >> calls.log` } },
        ],
      },
      { text: `Wrote line ${iteration}.`, usage },
    ];
  }).flat();
}

/** Every `calls.log` under a sandbox root, with what it holds. */
async function callLogs(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true });
  const logs = entries.filter((entry) => path.basename(entry) === 'calls.log');
  return Promise.all(logs.map((entry) => readFile(path.join(root, entry), 'utf8')));
}

// One cluster for the file: it takes about a minute to start.
before(async () => {
  cluster = await startTestCluster();
  agents = new AgentsClient(cluster.client);
});

after(async () => {
  for (const child of processes) await stopProcess(child);
  await cluster?.close();
  for (const folder of scratch) await rm(folder, { recursive: true, force: true });
});

describe('a Temporal cluster on PostgreSQL: two history hosts, two workers, two sandbox servers', () => {
  before(async () => {
    const setup = await runCli(['setup'], cluster.environment(await scratchFolder('agents-cluster-setup-')));
    assert.equal(setup.code, 0, setup.stderr);
    for (let index = 0; index < 2; index += 1) {
      sandboxes.push(
        await startSandboxProcess({
          root: await scratchFolder('agents-cluster-sandbox-'),
          home: await scratchFolder('agents-cluster-sandbox-home-'),
          port: await freePort(),
        }),
      );
    }
    await startWorkerProcess();
    await startWorkerProcess();
  });

  after(async () => {
    for (const child of processes.splice(0)) await stopProcess(child);
  });

  it('completes ten runs with tool calls, approvals and budget pauses through a worker SIGKILL, a history host killed and restarted, and a sandbox server restart', async () => {
    const kinds: Array<FinishedRun['kind']> = Array.from({ length: RUNS }, (_, index) =>
      index < 3 ? 'approval' : index < 6 ? 'budget' : 'plain',
    );
    scenarioSpan.startedMs = Date.now();
    const runs = await Promise.all(
      kinds.map(async (kind) => {
        const name = uniqueName(`cluster-${kind}`);
        const handle = await agents.start(
          scriptedRun(name, turnsOf(name, kind), {
            maxIterations: ITERATIONS,
            permissions: { mode: 'auto-approve', rules: [{ action: 'ask', match: 'bash(echo approved*)' }] },
            ...(kind === 'budget' ? { budgets: { sessionTokens: PAUSING_SESSION_TOKENS } } : {}),
          }),
        );
        return { name, kind, handle };
      }),
    );

    // A person at the CLI: approves what waits for approval, raises the budget of what paused.
    let allDone = false;
    const decided = { approvals: 0, resumes: 0 };
    const person = (async () => {
      while (!allDone) {
        for (const { name } of runs) {
          const status = await agents.status(name).catch(() => undefined);
          if (status?.state === 'awaiting_approval') {
            for (const request of status.pendingPermissions) {
              await agents.decide(name, { requestId: request.requestId, approve: true, by: 'reviewer' });
              decided.approvals += 1;
            }
          } else if (status?.state === 'paused_budget') {
            await agents.resume(name, { budgets: { sessionTokens: 100_000 } });
            decided.resumes += 1;
          }
        }
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    })();

    // The iterations the runs have begun, summed. A query can fail for a while after its run's
    // worker was killed (it goes to that worker's queue first): such a run counts as not begun.
    const progressOf = async () => {
      const iterations = await Promise.all(
        runs.map(async ({ name }) => (await agents.status(name).catch(() => undefined))?.iteration ?? 0),
      );
      return iterations.reduce((sum, iteration) => sum + iteration, 0);
    };

    try {
      // Faults, one after the other, each once the runs are visibly under way.
      await waitFor('the runs to be under way', async () => (await progressOf()) >= RUNS, 120_000);
      const [firstWorker] = workers;
      assert.ok(firstWorker);
      await stopProcess(firstWorker);

      const beforeHistoryKill = await progressOf();
      await cluster.kill('history-1');
      await waitFor(
        'the runs to progress with one history host',
        async () => (await progressOf()) > beforeHistoryKill,
        120_000,
      );
      await cluster.restart('history-1');

      const [, secondSandbox] = sandboxes;
      assert.ok(secondSandbox);
      await stopProcess(secondSandbox.child, 'SIGTERM');
      sandboxes[1] = await startSandboxProcess(secondSandbox);
      // The killed worker's replacement, on another machine.
      await startWorkerProcess();

      const results = await waitFor(
        'every run to complete',
        () => Promise.all(runs.map(async (run) => ({ ...run, result: await run.handle.result() }))),
        300_000,
      );
      finished = results;
    } finally {
      allDone = true;
      await person;
    }
    scenarioSpan.endedMs = Date.now();

    for (const { name, result } of finished) {
      assert.equal(result.exitReason, 'max_iterations', name);
      assert.equal(result.iterations, ITERATIONS, name);
    }
    assert.ok(decided.approvals >= 3, `every approval run was approved (${decided.approvals})`);
    assert.ok(decided.resumes >= 3, `every budget run was resumed (${decided.resumes})`);
  });

  it('recorded every iteration once and completed every model turn once', async () => {
    for (const { name, kind, handle } of finishedRuns()) {
      const records = await agents.iterations(name);
      assert.deepEqual(
        records.map((record) => [record.iteration, record.status]),
        Array.from({ length: ITERATIONS }, (_, index) => [
          index + 1,
          // The iteration that waited for a person says so.
          kind === 'approval' && index + 1 === APPROVED_ITERATION ? 'permission' : 'ok',
        ]),
        name,
      );
      const events = (await handle.fetchHistory()).events ?? [];
      assert.equal(completedActivitiesOfType(events, 'modelTurn').length, ITERATIONS * 2, name);
    }
  });

  it('ran every tool call once, each run on one sandbox server only', async () => {
    const logsByServer = await Promise.all(sandboxes.map(async (sandbox) => callLogs(sandbox.root)));
    for (const { name, kind } of finishedRuns()) {
      const holding = logsByServer
        .map((logs) => logs.find((log) => log.includes(`${name}-1\n`)))
        .filter((log): log is string => log !== undefined);
      assert.equal(holding.length, 1, `${name}'s workspace is on one server`);
      assert.deepEqual(
        holding[0],
        Array.from({ length: ITERATIONS }, (_, index) => `${lineOf(name, kind, index + 1)}\n`).join(''),
        `${name}: each call ran once, in order`,
      );
    }
    const used = logsByServer.filter((logs) => logs.length > 0).length;
    assert.equal(used, 2, 'the runs were spread over both sandbox servers');
  });

  it('finds the runs by AgentState on PostgreSQL visibility', async () => {
    const names = finishedRuns()
      .map((run) => run.name)
      .sort();
    const listed = await waitFor('visibility to show every run stopped', async () => {
      const listings = await agents.list({ state: 'stopped' });
      const ours = listings.map((listing) => listing.name).filter((name) => names.includes(name));
      return ours.length === names.length ? ours.sort() : undefined;
    });
    assert.deepEqual(listed, names);
    const count = await cluster.client.workflow.count(
      `AgentState = 'stopped' AND AgentIteration = ${ITERATIONS}`,
    );
    assert.equal(count.count, RUNS);
  });

  it('counted every charge in the daily ledger', async () => {
    const spent = finishedRuns().reduce(
      (sum, { result }) => sum + result.usage.inputTokens + result.usage.outputTokens,
      0,
    );
    assert.equal(spent, RUNS * ITERATIONS * 2 * TOKENS_PER_TURN);
    // The runs may have spanned midnight UTC: every ledger of the hours they ran counts.
    const days = new Set([utcDay(scenarioSpan.startedMs), utcDay(scenarioSpan.endedMs)]);
    let tokens = 0;
    for (const day of days) {
      const usage = await cluster.client.workflow.getHandle(dailyLedgerWorkflowId(day)).query(usageQuery);
      tokens += usage.tokens;
    }
    assert.equal(tokens, spent);
  });

  it('exports a run whole with agents export', async () => {
    const run = finishedRuns().find((candidate) => candidate.kind === 'approval');
    assert.ok(run);
    const exported = await runCli(
      ['export', run.name],
      cluster.environment(await scratchFolder('agents-cli-')),
    );
    assert.equal(exported.code, 0, exported.stderr);
    const entries = exported.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { kind: string; outcome?: string; approved?: boolean });
    const kinds = entries.map((entry) => entry.kind);
    assert.equal(kinds.filter((kind) => kind === 'tool_call').length, ITERATIONS);
    assert.equal(kinds.filter((kind) => kind === 'tool_result').length, ITERATIONS);
    assert.ok(kinds.includes('permission_requested'), kinds.join(','));
    assert.ok(kinds.includes('permission_decided'), kinds.join(','));
    assert.equal(entries.at(-1)?.kind, 'run_ended');
    assert.equal(entries.at(-1)?.outcome, 'completed');
  });

  it('replays every recorded history with the workflow code', async () => {
    const home = await scratchFolder('agents-cluster-replay-');
    await assertReplays(
      { client: cluster.client, home },
      finishedRuns().map((run) => run.handle.workflowId),
    );
  });
});

/** A namespace of the test's own, registered moments ago: what `agents setup` meets on a new cluster. */
async function freshNamespace(prefix: string): Promise<string> {
  const namespace = uniqueName(prefix);
  await cluster.connection.workflowService.registerNamespace({
    namespace,
    workflowExecutionRetentionPeriod: msToTs('1 day'),
  });
  return namespace;
}

/** A TCP relay on the IPv6 loopback to the frontend, so clients reach the cluster at `[::1]:port`. */
async function ipv6Relay(): Promise<{ address: string; close(): Promise<void> }> {
  const frontend = parseHostPort(cluster.address);
  assert.ok(frontend, cluster.address);
  const sockets = new Set<Socket>();
  const relay = createServer((inbound) => {
    const outbound = connect({ host: frontend.host, port: frontend.port });
    sockets.add(inbound).add(outbound);
    inbound.pipe(outbound).pipe(inbound);
    const end = () => {
      inbound.destroy();
      outbound.destroy();
    };
    inbound.once('error', end).once('close', end);
    outbound.once('error', end).once('close', end);
  });
  relay.listen(0, '::1');
  await once(relay, 'listening');
  const { port: relayPort } = relay.address() as AddressInfo;
  return {
    address: `[::1]:${relayPort}`,
    async close() {
      // Ends the worker's long-lived connections too, which would otherwise hold the relay open.
      const closed = once(relay, 'close');
      relay.close();
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

describe('cluster edges a user meets first', () => {
  after(async () => {
    for (const child of processes.splice(0)) await stopProcess(child);
  });

  it('agents setup on a namespace created moments ago returns once it serves the search attributes, so agents start right after succeeds', async () => {
    const namespace = await freshNamespace('setup-then-start');
    const environment = {
      ...cluster.environment(await scratchFolder('agents-cli-')),
      TEMPORAL_NAMESPACE: namespace,
    };
    const setup = await runCli(['setup'], environment);
    assert.equal(setup.code, 0, setup.stderr);
    assert.match(setup.stdout, /Registered search attributes in namespace/);
    const name = uniqueName('right-after-setup');
    const started = await runCli(
      ['start', name, '--template', 'demo', '--model', 'scripted', '--interval', '3600'],
      environment,
    );
    assert.equal(started.code, 0, started.stderr);
    assert.doesNotMatch(started.stderr, /does not serve/, 'setup had waited: start was not refused');
    const listed = await waitFor('the run to be listed by AgentName', async () => {
      const count = await new Client({ connection: cluster.connection, namespace }).workflow.count(
        `AgentName = '${name}'`,
      );
      return count.count === 1;
    });
    assert.ok(listed);
  });

  it('agents start right after the search attributes are added waits until the namespace serves them, saying why once', async () => {
    const namespace = await freshNamespace('start-waits');
    await waitFor('the namespace to be served', async () => {
      await cluster.connection.workflowService.describeNamespace({ namespace });
      return true;
    });
    // Added as `agents setup` adds them, without its wait.
    await ensureSearchAttributes(cluster.connection, namespace);
    const name = uniqueName('right-after-adding');
    const started = await runCli(
      ['start', name, '--template', 'demo', '--model', 'scripted', '--interval', '3600'],
      {
        ...cluster.environment(await scratchFolder('agents-cli-')),
        TEMPORAL_NAMESPACE: namespace,
      },
    );
    assert.equal(started.code, 0, started.stderr);
    const waits = started.stderr
      .split('\n')
      .filter((line) => /does not serve the agents' search attributes yet/.test(line));
    assert.ok(waits.length <= 1, `said once at most: ${started.stderr}`);
    assert.match(started.stdout, new RegExp(`Started agent ${name}`));
  });

  it('reaches the cluster and a sandbox server at bracketed IPv6 addresses', async () => {
    const relay = await ipv6Relay();
    try {
      const sandboxPort = await freePort();
      const sandboxRoot = await scratchFolder('agents-cluster-sandbox-v6-');
      const sandbox = await startCli(
        ['sandbox', '--host', '::1', '--port', String(sandboxPort)],
        {
          ...cluster.environment(await scratchFolder('agents-cluster-sandbox-home-')),
          AGENTS_SANDBOX_ROOT: sandboxRoot,
          AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
        },
        new RegExp(`^Sandbox server on http://\\[::1\\]:${sandboxPort}`),
      );
      processes.push(sandbox);
      const environment = {
        ...cluster.environment(await scratchFolder('agents-cluster-worker-v6-')),
        TEMPORAL_ADDRESS: relay.address,
        AGENTS_SANDBOX_URLS: `http://[::1]:${sandboxPort}`,
        AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
      };
      const worker = await startCli(
        ['worker'],
        environment,
        /Worker polling task queue 'agents' on \[::1\]:/,
      );
      processes.push(worker);
      const name = uniqueName('ipv6');
      const handle = await agents.start(
        scriptedRun(
          name,
          [
            {
              text: 'Writing.',
              toolCalls: [{ tool: 'bash', arguments: { command: 'echo over-ipv6 > note' } }],
            },
            { text: 'Done.' },
          ],
          { maxIterations: 1 },
        ),
      );
      assert.equal((await handle.result()).exitReason, 'max_iterations');
      const status = await runCli(['status', name], environment);
      assert.equal(status.code, 0, status.stderr);
      const notes = (await readdir(sandboxRoot, { recursive: true })).filter(
        (entry) => path.basename(entry) === 'note',
      );
      assert.equal(notes.length, 1, 'the tool call ran on the IPv6 sandbox server');
      assert.equal(await readFile(path.join(sandboxRoot, notes[0]!), 'utf8'), 'over-ipv6\n');
    } finally {
      await relay.close();
    }
  });

  it('a worker started while its cluster is down waits for it, says so, and polls once it answers', async () => {
    await cluster.kill('frontend');
    let worker: ChildProcess | undefined;
    try {
      const waiting = spawnCli(
        ['worker'],
        {
          ...cluster.environment(await scratchFolder('agents-cluster-early-worker-')),
          AGENTS_WORKER_CONNECT_TIMEOUT_S: '300',
        },
        300_000,
      );
      worker = waiting.child;
      processes.push(worker);
      await waitFor('the worker to say it waits', () =>
        /Waiting for Temporal at 127\.0\.0\.1:\d+ .*retrying for up to 300 s/.test(waiting.stdout),
      );
      assert.equal(worker.exitCode, null, 'still running while the cluster is down');
      await cluster.restart('frontend');
      await waitFor('the worker to poll', () => /Worker polling task queue/.test(waiting.stdout), 120_000);
      assert.equal(waiting.stdout.match(/Waiting for Temporal/g)?.length, 1, waiting.stdout);
    } finally {
      await cluster.restart('frontend').catch(() => undefined);
    }
  });

  it('a worker whose cluster never answers fails after its deadline with one line', async () => {
    const result = await runCli(['worker'], {
      ...cluster.environment(await scratchFolder('agents-cluster-lonely-worker-')),
      TEMPORAL_ADDRESS: `127.0.0.1:${await freePort()}`,
      AGENTS_WORKER_CONNECT_TIMEOUT_S: '3',
    });
    assert.match(result.stdout, /Waiting for Temporal at 127\.0\.0\.1:\d+ .*for up to 3 s/);
    assertOneLineFailure(result, /did not answer within 3 s \(AGENTS_WORKER_CONNECT_TIMEOUT_S\)/);
  });
});
