/**
 * Benchmark: what a tool call costs on its way from an agent run to bubblewrap and back.
 *
 * Three paths run the same small command (`echo ok`, the `bash` tool) at 1, 16 and 64 concurrent
 * trajectories, each trajectory one call after another:
 *
 * - bubblewrap: `runInBubblewrap` in this process, with the options the sandbox's `bash` tool passes
 *   (default timeout, limits and host identity, no network), one workspace per trajectory. It is the
 *   floor: a sandbox start per call, nothing around it. It runs again with `network: true`, the
 *   run's proxy and relay included, to show what the network costs a call.
 * - executor: the worker's `ToolExecutor` (default batch window and pool) sending calls prepared by
 *   `prepareCall` to a real `SandboxServer` on loopback, which stores every result and runs the
 *   calls through its lanes in bubblewrap. Timed per call around `execute`.
 * - workflow: the whole durable path. A Temporal dev server, an in-process worker whose tool executor
 *   talks to the same sandbox server, and agent runs whose scripted model plays a two-turn cycle
 *   (one `bash` call, then a text answer) with interval 0, so every iteration makes exactly one
 *   tool call. Each call is timed from the history: its `toolBatch` activity's scheduled event to
 *   its completed event (server time), so it includes handing the activity task to the worker.
 *   Calls per second are all tool calls over the wall time of the runs, model turns included.
 *
 * Ratios compare each path with bubblewrap at the same concurrency. Options: `--calls` (default 20)
 * per trajectory for bubblewrap and executor, `--iterations` (default 8) per run for workflow, and
 * `--concurrency` (default 1,16,64); or BENCH_TOOL_CALLS, BENCH_TOOL_ITERATIONS and
 * BENCH_TOOL_CONCURRENCY. argv wins over the environment.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import type { WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { z } from 'zod';
import {
  countSchema,
  describeMachine,
  eventTimeMs,
  formatRatio,
  formatTable,
  percentile,
  temporalVersion,
  parseBenchOptions,
} from './report';
import { prepareCall } from '../activities/tool-batch';
import { ToolExecutor, type SandboxEndpoint } from '../activities/tool-executor';
import { AgentsClient } from '../client/agents-client';
import type { ScriptedTurn } from '../common/agent-input';
import type { ModelToolCall } from '../common/agent-run-types';
import { handOverToSandbox, runInBubblewrap } from '../sandbox/bubblewrap';
import { clampTimeoutS, type SandboxPolicy, type ToolResult } from '../sandbox/tool-call';
import { startTestSandbox } from '../test/helpers/environment';
import { scriptedRun, uniqueName } from '../test/helpers/run-input';
import { startTestTemporal, type TestTemporal } from '../test/helpers/temporal-server';
import { startWorker, type RunningWorker } from '../test/helpers/worker';
import { createActivityDependencies } from '../worker/create-worker';

/** The command every call runs: as small as a command gets, so the figures are the path's own. */
const BENCH_COMMAND = 'echo ok';

/** What the command prints; anything else means the call did not run as it should. */
const BENCH_OUTPUT = 'ok';

/** The policy of every call, as a run's input gives it by default: no network. */
const BENCH_POLICY: SandboxPolicy = { network: false };

/**
 * The policy of the network-on scenario: the same command with the network on, which costs a proxy
 * per call on the host and a relay started (and waited for) inside the sandbox.
 */
const BENCH_NETWORK_POLICY: SandboxPolicy = { network: true };

/**
 * The model's script, played in a cycle: a turn calling `bash`, then a turn answering with text,
 * which ends the iteration. So iteration k is model calls 2k and 2k + 1 around one tool batch.
 */
const BENCH_TURNS: Array<Partial<ScriptedTurn>> = [
  { text: 'Checking the workspace.', toolCalls: [{ tool: 'bash', arguments: { command: BENCH_COMMAND } }] },
  { text: 'The workspace answers.' },
];

/** Calls of the warm-up: the first sandbox start, connection setup and the first workflow tasks. */
const WARM_UP_CALLS = 3;

/** Concurrency levels as a comma-separated list: "1,16,64". */
const concurrencySchema = z.preprocess(
  (value) => (typeof value === 'string' ? value.split(',').map((level) => level.trim()) : value),
  z
    .array(countSchema('each --concurrency (BENCH_TOOL_CONCURRENCY) level', 256))
    .min(1, '--concurrency (BENCH_TOOL_CONCURRENCY) needs at least one level'),
);

const benchOptionsSchema = z.object({
  calls: countSchema('--calls (BENCH_TOOL_CALLS)', 10_000).default(20),
  iterations: countSchema('--iterations (BENCH_TOOL_ITERATIONS)', 1000).default(8),
  concurrency: concurrencySchema.default([1, 16, 64]),
});
type BenchOptions = z.infer<typeof benchOptionsSchema>;

/** Reads the options from argv, falling back on the environment, then on the defaults. */
function parseOptions(argv: string[], environment: NodeJS.ProcessEnv): BenchOptions {
  return parseBenchOptions(
    argv,
    environment,
    benchOptionsSchema,
    [
      { flag: 'calls', field: 'calls', variable: 'BENCH_TOOL_CALLS' },
      { flag: 'iterations', field: 'iterations', variable: 'BENCH_TOOL_ITERATIONS' },
      { flag: 'concurrency', field: 'concurrency', variable: 'BENCH_TOOL_CONCURRENCY' },
    ],
    '--calls N --iterations M --concurrency 1,16,64',
  );
}

/** Per-call times of one path at one concurrency, and its throughput. */
interface PathFigures {
  callMs: number[];
  totalCalls: number;
  wallClockS: number;
}

/** Runs `trajectories` loops at once, each timing `calls` calls one after another. */
async function measureLoops(
  trajectories: number,
  calls: number,
  callOnce: (trajectory: number, call: number) => Promise<void>,
): Promise<PathFigures> {
  const began = performance.now();
  const perTrajectory = await Promise.all(
    Array.from({ length: trajectories }, async (_, trajectory) => {
      const callMs: number[] = [];
      for (let call = 0; call < calls; call += 1) {
        const callBegan = performance.now();
        await callOnce(trajectory, call);
        callMs.push(performance.now() - callBegan);
      }
      return callMs;
    }),
  );
  const wallClockS = (performance.now() - began) / 1000;
  return { callMs: perTrajectory.flat(), totalCalls: trajectories * calls, wallClockS };
}

/** Throws unless a call ran the bench command and printed what it should. */
function checkResult(result: ToolResult): void {
  if (!result.success || result.output.trim() !== BENCH_OUTPUT) {
    throw new Error(`tool call ${result.callId} failed: ${result.error ?? JSON.stringify(result.output)}`);
  }
}

/** The bench command as the model asks for it. */
function benchToolCall(id: string): ModelToolCall {
  return { id, tool: 'bash', arguments: { command: BENCH_COMMAND } };
}

/**
 * Raw sandbox starts: one workspace per trajectory under `root`, made reachable for the sandbox's
 * user as the server makes its own, and the options `runSandboxTool` gives a `bash` call.
 */
async function measureBubblewrap(
  root: string,
  trajectories: number,
  calls: number,
  policy: SandboxPolicy = BENCH_POLICY,
): Promise<PathFigures> {
  const runFolder = await mkdtemp(path.join(root, `c${trajectories}-`));
  await chmod(runFolder, 0o711);
  const workspaces = await Promise.all(
    Array.from({ length: trajectories }, async (_, trajectory) => {
      const workspace = path.join(runFolder, `trajectory-${trajectory}`);
      await mkdir(workspace);
      await handOverToSandbox(workspace);
      return workspace;
    }),
  );
  return measureLoops(trajectories, calls, async (trajectory) => {
    const result = await runInBubblewrap(BENCH_COMMAND, {
      workspace: workspaces[trajectory] ?? runFolder,
      timeoutS: clampTimeoutS(undefined),
      policy,
    });
    if (result.exitCode !== 0 || result.stdout.trim() !== BENCH_OUTPUT) {
      throw new Error(`bubblewrap exited with ${result.exitCode}: ${result.stderr.trim().split('\n')[0]}`);
    }
  });
}

/** Calls through the tool executor to the sandbox server, each trajectory a workspace of its own there. */
async function measureExecutor(
  executor: ToolExecutor,
  prefix: string,
  trajectories: number,
  calls: number,
): Promise<PathFigures> {
  const trajectoryIds = Array.from({ length: trajectories }, () => uniqueName(prefix));
  return measureLoops(trajectories, calls, async (trajectory, call) => {
    const trajectoryId = trajectoryIds[trajectory] ?? prefix;
    const callId = `${trajectoryId}:${call}:0`;
    const prepared = prepareCall(trajectoryId, BENCH_POLICY, callId, benchToolCall(`call_${call}`));
    if ('success' in prepared) throw new Error(`the bench call was refused: ${prepared.error ?? ''}`);
    checkResult(await executor.execute(prepared));
  });
}

/**
 * The `toolBatch` activities of a finished run, each from its scheduled to its completed event in
 * ms, after checking that each ran the bench command once and successfully.
 */
async function toolBatchTimesMs(handle: WorkflowHandle): Promise<number[]> {
  const history = await handle.fetchHistory();
  const scheduledAt = new Map<string, number>();
  const timesMs: number[] = [];
  for (const event of history.events ?? []) {
    const scheduled = event.activityTaskScheduledEventAttributes;
    if (scheduled?.activityType?.name === 'toolBatch') {
      scheduledAt.set(String(event.eventId), eventTimeMs(event));
      continue;
    }
    const completed = event.activityTaskCompletedEventAttributes;
    if (completed === null || completed === undefined) continue;
    // Completions of other activities (the model turns) have no entry.
    const began = scheduledAt.get(String(completed.scheduledEventId));
    if (began === undefined) continue;
    const payload = completed.result?.payloads?.[0];
    const results = payload === undefined ? [] : defaultPayloadConverter.fromPayload<ToolResult[]>(payload);
    if (results.length !== 1)
      throw new Error(`a tool batch of ${handle.workflowId} had ${results.length} results`);
    results.forEach(checkResult);
    timesMs.push(eventTimeMs(event) - began);
  }
  return timesMs;
}

/** Starts `runs` agent runs of `iterations` at once, waits for all, then reads their tool batches. */
async function measureWorkflow(
  agents: AgentsClient,
  prefix: string,
  runs: number,
  iterations: number,
): Promise<PathFigures> {
  const began = performance.now();
  const finished = await Promise.all(
    Array.from({ length: runs }, async () => {
      const handle = await agents.start(
        scriptedRun(uniqueName(prefix), BENCH_TURNS, { intervalS: 0, maxIterations: iterations }),
      );
      return { handle, result: await handle.result() };
    }),
  );
  const wallClockS = (performance.now() - began) / 1000;
  const callMs: number[] = [];
  for (const { handle, result } of finished) {
    if (result.exitReason !== 'max_iterations' || result.iterations !== iterations) {
      throw new Error(
        `run ${handle.workflowId} ended with ${result.exitReason} after ${result.iterations} of ${iterations} iterations`,
      );
    }
    const timesMs = await toolBatchTimesMs(handle);
    if (timesMs.length !== iterations) {
      throw new Error(
        `run ${handle.workflowId} made ${timesMs.length} tool calls in ${iterations} iterations`,
      );
    }
    callMs.push(...timesMs);
  }
  return { callMs, totalCalls: runs * iterations, wallClockS };
}

/** The lanes of the sandbox server: calls it runs at once, across all trajectories. */
async function sandboxLanes(endpoint: SandboxEndpoint): Promise<number> {
  const response = await fetch(`${endpoint.url}/health`, {
    headers: { authorization: `Bearer ${endpoint.token}` },
  });
  const parsed = z.object({ lanes: z.number() }).safeParse(await response.json());
  if (!parsed.success) throw new Error(`the sandbox server's /health answered without lanes`);
  return parsed.data.lanes;
}

function callsPerSecond(figures: PathFigures): number {
  return figures.totalCalls / figures.wallClockS;
}

/** One concurrency level: the three paths measured side by side. */
interface LevelResult {
  concurrency: number;
  bubblewrap: PathFigures;
  /** The same raw sandbox starts with the network on. */
  bubblewrapNetwork: PathFigures;
  executor: PathFigures;
  workflow: PathFigures;
}

function renderTable(results: LevelResult[]): string {
  const header = [
    'scenario',
    'concurrency',
    'calls',
    'p50 ms',
    'p99 ms',
    'calls/s',
    'p50 ratio',
    'throughput ratio',
  ];
  const rows = results.flatMap(({ concurrency, bubblewrap, bubblewrapNetwork, executor, workflow }) => {
    const row = (scenario: string, figures: PathFigures) => [
      scenario,
      String(concurrency),
      String(figures.totalCalls),
      percentile(figures.callMs, 0.5).toFixed(1),
      percentile(figures.callMs, 0.99).toFixed(1),
      callsPerSecond(figures).toFixed(1),
      figures === bubblewrap
        ? '-'
        : formatRatio(percentile(figures.callMs, 0.5) / percentile(bubblewrap.callMs, 0.5)),
      figures === bubblewrap ? '-' : formatRatio(callsPerSecond(bubblewrap) / callsPerSecond(figures)),
    ];
    return [
      row('c: raw bubblewrap', bubblewrap),
      row('d: raw bubblewrap, network on', bubblewrapNetwork),
      row('a: tool executor → sandbox server', executor),
      row('b: workflow (toolBatch activity)', workflow),
    ];
  });
  return formatTable(header, rows);
}

/** The version line of bwrap, which every path starts once per call. */
async function bubblewrapVersion(): Promise<string> {
  const { stdout } = await promisify(execFile)('bwrap', ['--version']);
  return stdout.trim();
}

/** The 1, 5 and 15 minute load averages: other work on the machine shows here. */
function describeLoad(): string {
  return os
    .loadavg()
    .map((load) => load.toFixed(2))
    .join(' ');
}

/** Runs the benchmark and prints its figures; resolves to the exit code. */
async function main(argv: string[]): Promise<number> {
  const print = (line: string) => process.stdout.write(`${line}\n`);
  const progress = (line: string) => process.stderr.write(`· ${line}\n`);
  const verbose = argv.includes('--verbose');
  const benchBegan = performance.now();
  const loadBefore = describeLoad();
  let temporal: TestTemporal | undefined;
  let worker: RunningWorker | undefined;
  let sandbox: Awaited<ReturnType<typeof startTestSandbox>> | undefined;
  let executor: ToolExecutor | undefined;
  let bubblewrapRoot: string | undefined;
  try {
    const options = parseOptions(argv, process.env);
    progress('starting a sandbox server, the Temporal dev server and an in-process worker');
    bubblewrapRoot = await mkdtemp(path.join(os.tmpdir(), 'bench-tools-'));
    await chmod(bubblewrapRoot, 0o711);
    sandbox = await startTestSandbox();
    executor = new ToolExecutor({ endpoints: [sandbox.endpoint] });
    temporal = await startTestTemporal();
    worker = await startWorker(temporal, createActivityDependencies(temporal.home, [sandbox.endpoint]));
    const agents = new AgentsClient(temporal.client);

    progress(`warming up: ${WARM_UP_CALLS} calls on each path`);
    await measureBubblewrap(bubblewrapRoot, 1, WARM_UP_CALLS);
    await measureBubblewrap(bubblewrapRoot, 1, WARM_UP_CALLS, BENCH_NETWORK_POLICY);
    await measureExecutor(executor, 'bench-tools-warm-up', 1, WARM_UP_CALLS);
    await measureWorkflow(agents, 'bench-tools-warm-up', 1, WARM_UP_CALLS);

    const results: LevelResult[] = [];
    for (const concurrency of options.concurrency) {
      progress(
        `concurrency ${concurrency}: ${options.calls} calls per trajectory, ${options.iterations} iterations per run`,
      );
      results.push({
        concurrency,
        bubblewrap: await measureBubblewrap(bubblewrapRoot, concurrency, options.calls),
        bubblewrapNetwork: await measureBubblewrap(
          bubblewrapRoot,
          concurrency,
          options.calls,
          BENCH_NETWORK_POLICY,
        ),
        executor: await measureExecutor(executor, `bench-tools-c${concurrency}`, concurrency, options.calls),
        workflow: await measureWorkflow(
          agents,
          `bench-tools-c${concurrency}`,
          concurrency,
          options.iterations,
        ),
      });
    }

    print('durable-agents · tool-call latency and throughput');
    print(`machine:  ${describeMachine()}`);
    print(`load:     ${loadBefore} before, ${describeLoad()} after (1, 5, 15 min)`);
    print(`temporal: ${await temporalVersion()} (dev server, SQLite file)`);
    print(
      `sandbox:  ${await bubblewrapVersion()} · server with ${await sandboxLanes(sandbox.endpoint)} lanes`,
    );
    print(
      `options:  --calls ${options.calls} --iterations ${options.iterations} --concurrency ${options.concurrency.join(',')}`,
    );
    print(`command:  bash \`${BENCH_COMMAND}\`, no network, default timeout and limits`);
    print('');
    print(renderTable(results));
    print('');
    print('c: runInBubblewrap in this process, one workspace per trajectory, calls one after another.');
    print(
      'd: c with network: true: a proxy on a Unix socket per call, the relay started inside and waited for.',
    );
    print('a: ToolExecutor.execute (default batch window) → POST /batch → SandboxServer lanes → bubblewrap.');
    print('b: agent runs on the dev server, one bash call per iteration (interval 0, scripted model);');
    print('   latency = toolBatch activity scheduled → completed (history event times); calls/s = all');
    print('   tool calls / wall time of the runs, their two model turns per iteration included.');
    print('p50 ratio = scenario p50 / bubblewrap p50; throughput ratio = bubblewrap calls/s / scenario');
    print('calls/s; both at the same concurrency.');
    print(`total time: ${((performance.now() - benchBegan) / 1000).toFixed(1)} s`);
    return 0;
  } catch (error) {
    if (verbose) console.error(error);
    process.stderr.write(`bench:tools: ${(error as Error).message.split('\n')[0]}\n`);
    return 1;
  } finally {
    await worker?.stop();
    await temporal?.close();
    await executor?.close();
    await sandbox?.server.close();
    if (sandbox !== undefined) await rm(sandbox.root, { recursive: true, force: true });
    if (bubblewrapRoot !== undefined) await rm(bubblewrapRoot, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench:tools: ${(error as Error).message.split('\n')[0]}\n`);
    process.exit(1);
  },
);
