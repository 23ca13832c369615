/**
 * Benchmark: what runs awaiting approval cost a worker, and how fast they finish once approved.
 *
 * The real parts: a Temporal dev server, a sandbox server in this process (real bubblewrap, the
 * approved command runs in it), and the worker as a child process (`agents worker`, the command a
 * deployment runs), so its memory and CPU are its own: VmRSS from /proc/<pid>/status, user plus
 * system time from /proc/<pid>/stat. Only the model is scripted: its first answer calls `bash` in
 * permission mode `ask`, so every run stops in `awaiting_approval`; its second answer ends the run.
 *
 * `--runs` (default 1000) runs are started with bounded concurrency and waited for until the
 * visibility store shows every one awaiting approval; the worker's idle figures are taken before,
 * once it has settled for `--quiet-s` seconds after bundling the workflows. The worker is then watched over a quiet window
 * of `--quiet-s` seconds (default 30) while nothing happens but the runs waiting. Then every run is
 * approved with a `permission` signal, as fast as the client sends them, and the completion of each
 * run (its close time on the server) is measured from the moment its approval was sent. The worker's
 * RSS is printed idle, while the runs wait, while they complete and after, each beside the 300 MB
 * goal, with its anonymous and file-backed parts: the growth per waiting run is anonymous memory.
 */
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { meanSegments, pathAfterSignal } from './history-profile';
import {
  countSchema,
  describeMachine,
  formatRatio,
  formatTable,
  parseBenchOptions,
  percentile,
  temporalVersion,
} from './report';
import { AgentsClient, workflowIdFor } from '../client/agents-client';
import type { ScriptedTurn } from '../common/agent-input';
import { WORKFLOW_TYPE } from '../common/constants';
import { permissionSignal } from '../common/messages';
import { SandboxServer } from '../sandbox/sandbox-server';
import { runSandboxTool } from '../sandbox/tools';
import { startCli } from '../test/helpers/cli';
import { scriptedRun, uniqueName } from '../test/helpers/run-input';
import { startTestTemporal, type TestTemporal } from '../test/helpers/temporal-server';

/** The goals the figures are printed beside; "~0 % CPU" is read as at most 1 % of one core. */
const GOALS = { rssMb: 300, cpuPercent: 1, completionS: 60 } as const;

/** A figure over its goal, as "×0.8 ✓" when within it, "×2.1 ✗" when not. */
const againstGoal = (measured: number, goal: number) =>
  `${formatRatio(measured / goal)} ${measured <= goal ? '✓' : '✗'}`;

/** The model: one command that needs a person's approval, then an answer that ends the iteration. */
const APPROVAL_TURNS: Array<Partial<ScriptedTurn>> = [
  {
    text: 'Asking to list the workspace.',
    toolCalls: [{ tool: 'bash', arguments: { command: 'echo approved', timeout: 20 } }],
    delayMs: 0,
  },
  { text: 'Read the output. Done.', delayMs: 0 },
];

/** How long a request stays open: far beyond the benchmark, so none times out on its own. */
const APPROVAL_TIMEOUT_S = 6 * 3600;

/** Runs whose histories are read for the breakdown after approval. */
const PROFILED_RUNS = 100;

/** Token of the benchmark's sandbox server, handed to the worker through its environment. */
const SANDBOX_TOKEN = 'bench-approvals-sandbox-token';

const benchOptionsSchema = z.object({
  runs: countSchema('--runs (BENCH_RUNS)', 10_000).default(1000),
  quietS: countSchema('--quiet-s (BENCH_QUIET_S)', 3600).default(30),
  concurrency: countSchema('--concurrency (BENCH_CONCURRENCY)', 500).default(20),
});
type BenchOptions = z.infer<typeof benchOptionsSchema>;

function parseOptions(argv: string[], environment: NodeJS.ProcessEnv): BenchOptions {
  return parseBenchOptions(
    argv,
    environment,
    benchOptionsSchema,
    [
      { flag: 'runs', field: 'runs', variable: 'BENCH_RUNS' },
      { flag: 'quiet-s', field: 'quietS', variable: 'BENCH_QUIET_S' },
      { flag: 'concurrency', field: 'concurrency', variable: 'BENCH_CONCURRENCY' },
    ],
    '--runs N --quiet-s S --concurrency C',
  );
}

/** Runs `task` over `items` with at most `limit` under way at once. */
async function forEachBounded<T>(items: T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const item = items[next] as T;
      next += 1;
      await task(item);
    }
  });
  await Promise.all(lanes);
}

/**
 * Where a process's resident memory is, from /proc/<pid>/smaps_rollup: anonymous memory (the V8
 * heaps of the main and workflow threads, the SDK's Rust core, malloc) against file-backed pages
 * (the node binary, the core bridge's shared library, other mapped code).
 */
interface MemoryComposition {
  anonymousBytes: number;
  fileBytes: number;
}

/** The composition of the worker's RSS now, or nothing where the kernel has no smaps_rollup. */
async function sampleComposition(pid: number): Promise<MemoryComposition | undefined> {
  try {
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(rollup)?.[1] ?? 0);
    const anonymousBytes = kb('Anonymous') * 1024;
    return { anonymousBytes, fileBytes: kb('Rss') * 1024 - anonymousBytes };
  } catch {
    // Kernels before 4.14 have no smaps_rollup: the composition is left out.
    return undefined;
  }
}

/** A process's resident memory and CPU time so far, from /proc. */
interface ProcessSample {
  rssBytes: number;
  cpuS: number;
}

/** Clock ticks per second of /proc/<pid>/stat's times. */
async function clockTicks(): Promise<number> {
  try {
    const { stdout } = await promisify(execFile)('getconf', ['CLK_TCK']);
    return Number(stdout.trim()) || 100;
  } catch {
    return 100;
  }
}

async function sampleProcess(pid: number, ticksPerSecond: number): Promise<ProcessSample> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? Number.NaN);
  // The command name, in parentheses, may hold spaces: fields are counted after its closing one.
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return { rssBytes: rssKb * 1024, cpuS: ticks / ticksPerSecond };
}

/** The worker's figures over a window: peak and last RSS, and its CPU share of one core. */
interface WindowFigures {
  peakRssBytes: number;
  lastRssBytes: number;
  cpuPercent: number;
  seconds: number;
}

/** Samples the worker each second until `done` resolves (or for `seconds` when given). */
async function watchWorker(
  pid: number,
  ticksPerSecond: number,
  until: { seconds: number } | { done: Promise<unknown> },
  onSecond: (elapsedS: number, sample: ProcessSample) => void = () => undefined,
): Promise<WindowFigures> {
  const first = await sampleProcess(pid, ticksPerSecond);
  const began = performance.now();
  let finished = false;
  if ('done' in until) void until.done.finally(() => (finished = true));
  let last = first;
  let peakRssBytes = first.rssBytes;
  for (let second = 1; ; second += 1) {
    if ('seconds' in until ? second > until.seconds : finished) break;
    // A measurement window, not a wait for a condition: the samples are the point.
    await sleep(Math.max(0, began + second * 1000 - performance.now()));
    last = await sampleProcess(pid, ticksPerSecond);
    peakRssBytes = Math.max(peakRssBytes, last.rssBytes);
    onSecond(second, last);
  }
  const seconds = (performance.now() - began) / 1000;
  return {
    peakRssBytes,
    lastRssBytes: last.rssBytes,
    cpuPercent: ((last.cpuS - first.cpuS) / seconds) * 100,
    seconds,
  };
}

/** How many agent runs the visibility store shows matching `filter` (a list query). */
async function countRuns(temporal: TestTemporal, filter: string): Promise<number> {
  const { count } = await temporal.client.workflow.count(`WorkflowType = '${WORKFLOW_TYPE}' AND ${filter}`);
  return count;
}

/** Polls `probe` until it returns true, printing progress, failing after `timeoutS`. */
async function waitUntil(
  description: string,
  timeoutS: number,
  probe: () => Promise<{ done: boolean; progress: string }>,
  progress: (line: string) => void,
): Promise<void> {
  const deadline = Date.now() + timeoutS * 1000;
  let lastPrinted = 0;
  while (Date.now() < deadline) {
    const answer = await probe();
    if (answer.done) return;
    if (Date.now() - lastPrinted >= 5000) {
      progress(`${description}: ${answer.progress}`);
      lastPrinted = Date.now();
    }
    await sleep(250);
  }
  throw new Error(`Timed out after ${timeoutS} s waiting for ${description}`);
}

const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(0)} MB`;

/** A worker RSS figure beside the memory goal. */
const rssRow = (label: string, bytes: number) => [
  label,
  mb(bytes),
  `≤ ${GOALS.rssMb} MB`,
  againstGoal(bytes / 1024 / 1024, GOALS.rssMb),
];

/** The anonymous and file-backed parts of the RSS sampled just before, as two indented rows. */
const compositionRows = (composition: MemoryComposition | undefined) =>
  composition === undefined
    ? []
    : [
        ['  of it anonymous (V8 heaps, Rust core, malloc)', mb(composition.anonymousBytes), '', ''],
        ['  of it file-backed (node, core bridge, code)', mb(composition.fileBytes), '', ''],
      ];

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Runs the benchmark and prints its figures; resolves to the exit code. */
async function main(argv: string[]): Promise<number> {
  const print = (line: string) => process.stdout.write(`${line}\n`);
  const progress = (line: string) => process.stderr.write(`· ${line}\n`);
  const verbose = argv.includes('--verbose');
  const benchBegan = performance.now();
  let temporal: TestTemporal | undefined;
  let sandbox: SandboxServer | undefined;
  let sandboxRoot: string | undefined;
  let worker: ChildProcess | undefined;
  try {
    const options = parseOptions(argv, process.env);
    const loadBefore = os.loadavg()[0] ?? 0;
    const ticksPerSecond = await clockTicks();
    progress('starting the Temporal dev server and a sandbox server');
    temporal = await startTestTemporal();
    sandboxRoot = await mkdtemp(path.join(os.tmpdir(), 'agents-bench-sandbox-'));
    sandbox = new SandboxServer({
      root: sandboxRoot,
      token: SANDBOX_TOKEN,
      lanes: 8,
      runTool: runSandboxTool,
    });
    const sandboxPort = await sandbox.listen(0);

    progress('starting the worker in a child process (`agents worker`, bundles the workflows)');
    worker = await startCli(
      ['worker'],
      {
        ...temporal.environment,
        AGENTS_SANDBOX_URLS: `http://127.0.0.1:${sandboxPort}`,
        AGENTS_SANDBOX_TOKEN: SANDBOX_TOKEN,
      },
      /Worker polling/,
    );
    const workerPid = worker.pid;
    if (workerPid === undefined) throw new Error('the worker process has no pid');
    // It has just bundled the workflows; what that left behind is not what a worker costs idle.
    progress(`letting the idle worker settle for ${options.quietS} s`);
    await watchWorker(workerPid, ticksPerSecond, { seconds: options.quietS });
    const idle = await sampleProcess(workerPid, ticksPerSecond);
    const idleComposition = await sampleComposition(workerPid);

    const agents = new AgentsClient(temporal.client);
    const names = Array.from({ length: options.runs }, () => uniqueName('bench-approval'));
    progress(`starting ${options.runs} runs, ${options.concurrency} at a time`);
    const startBegan = performance.now();
    let started = 0;
    await forEachBounded(names, options.concurrency, async (name) => {
      await agents.start(
        scriptedRun(name, APPROVAL_TURNS, {
          maxIterations: 1,
          permissions: { mode: 'ask', timeoutS: APPROVAL_TIMEOUT_S },
        }),
      );
      started += 1;
      if (started % 100 === 0) progress(`started ${started} of ${options.runs}`);
    });
    await waitUntil(
      'every run to await approval',
      600,
      async () => {
        const waiting = await countRuns(temporal as TestTemporal, `AgentState = 'awaiting_approval'`);
        return { done: waiting === options.runs, progress: `${waiting} of ${options.runs}` };
      },
      progress,
    );
    const startToWaitingMs = performance.now() - startBegan;

    // Read before the quiet window: a query is a worker's task.
    progress('reading the pending request of every run');
    const requests = new Map<string, string>();
    await forEachBounded(names, options.concurrency, async (name) => {
      const [request] = (await agents.status(name)).pendingPermissions;
      if (request === undefined) throw new Error(`run ${name} has no pending request`);
      requests.set(name, request.requestId);
    });

    progress(`quiet window: ${options.quietS} s with ${options.runs} runs waiting`);
    const quiet = await watchWorker(workerPid, ticksPerSecond, { seconds: options.quietS }, (second) => {
      if (second % 10 === 0) progress(`quiet window: ${second} of ${options.quietS} s`);
    });
    const waitingComposition = await sampleComposition(workerPid);

    progress(`approving ${options.runs} runs`);
    const approvedAt = new Map<string, number>();
    const approvals = forEachBounded(names, Math.max(options.concurrency, 50), async (name) => {
      approvedAt.set(workflowIdFor(name), Date.now());
      await temporal?.client.workflow
        .getHandle(workflowIdFor(name))
        .signal(permissionSignal, { requestId: requests.get(name) ?? '', approve: true, by: 'bench' });
    });
    const approvalBegan = Date.now();
    let approvalsSentMs = 0;
    const drained = (async () => {
      await approvals;
      approvalsSentMs = Date.now() - approvalBegan;
      await waitUntil(
        'every run to complete',
        900,
        async () => {
          const open = await countRuns(temporal as TestTemporal, `ExecutionStatus = 'Running'`);
          return { done: open === 0, progress: `${options.runs - open} of ${options.runs} closed` };
        },
        progress,
      );
    })();
    const drain = await watchWorker(workerPid, ticksPerSecond, { done: drained });
    await drained;
    const after = await sampleProcess(workerPid, ticksPerSecond);
    const afterComposition = await sampleComposition(workerPid);

    const latencies: Array<{ workflowId: string; ms: number }> = [];
    const statuses = new Map<string, number>();
    let lastCloseMs = 0;
    for await (const execution of temporal.client.workflow.list({
      query: `WorkflowType = '${WORKFLOW_TYPE}'`,
    })) {
      statuses.set(execution.status.name, (statuses.get(execution.status.name) ?? 0) + 1);
      const sent = approvedAt.get(execution.workflowId);
      const closed = execution.closeTime?.getTime();
      if (sent === undefined || closed === undefined) continue;
      latencies.push({ workflowId: execution.workflowId, ms: closed - sent });
      lastCloseMs = Math.max(lastCloseMs, closed);
    }
    const latenciesMs = latencies.map((latency) => latency.ms);
    const completed = statuses.get('COMPLETED') ?? 0;

    // Where the time after an approval went, from the histories of runs spread over the latencies.
    const sorted = [...latencies].sort((a, b) => a.ms - b.ms);
    const sampleSize = Math.min(PROFILED_RUNS, sorted.length);
    const sample = Array.from(
      { length: sampleSize },
      (_, index) => sorted[Math.floor((index * sorted.length) / sampleSize)] as (typeof sorted)[number],
    );
    progress(`reading the histories of ${sampleSize} runs`);
    const paths: Array<ReturnType<typeof pathAfterSignal>> = [];
    await forEachBounded(sample, options.concurrency, async ({ workflowId }) => {
      const history = await temporal?.client.workflow.getHandle(workflowId).fetchHistory();
      paths.push(pathAfterSignal(history?.events ?? []));
    });
    const meanPathMs = paths.reduce((sum, path) => sum + path.totalMs, 0) / Math.max(1, paths.length);
    const pathSegments = meanSegments(paths.map((path) => path.segments));
    const untracedMs = meanPathMs - pathSegments.reduce((sum, segment) => sum + segment.ms, 0);
    const others = [...statuses].filter(([status]) => status !== 'COMPLETED');

    const runs = options.runs.toLocaleString('en-US');
    print(`durable-agents · ${runs} runs awaiting approval`);
    print(`machine:  ${describeMachine()}`);
    print(`temporal: ${await temporalVersion()} (dev server, SQLite file)`);
    print(
      `options:  --runs ${options.runs} --quiet-s ${options.quietS} --concurrency ${options.concurrency}`,
    );
    // Other processes on the machine slow every figure but memory: the load average says how busy it was.
    print(
      `load:     1-minute load average ${loadBefore.toFixed(1)} at the start, ${(os.loadavg()[0] ?? 0).toFixed(1)} at the end, on ${os.cpus().length} cores`,
    );
    print('');
    print(
      formatTable(
        ['figure', 'measured', 'goal', 'of goal'],
        [
          rssRow('worker RSS, idle before the runs', idle.rssBytes),
          ...compositionRows(idleComposition),
          rssRow(`worker RSS while ${runs} runs wait (peak)`, quiet.peakRssBytes),
          ...compositionRows(waitingComposition),
          [
            'worker RSS per waiting run, over idle',
            `${((quiet.peakRssBytes - idle.rssBytes) / options.runs / 1024 / 1024).toFixed(2)} MB`,
            // What is left of the goal once the idle worker is paid for, shared by the runs.
            `≤ ${Math.max(0, (GOALS.rssMb - idle.rssBytes / 1024 / 1024) / options.runs).toFixed(2)} MB`,
            '',
          ],
          [
            `worker CPU while they wait (${quiet.seconds.toFixed(0)} s window)`,
            `${quiet.cpuPercent.toFixed(2)} %`,
            `≤ ${GOALS.cpuPercent} %`,
            againstGoal(quiet.cpuPercent, GOALS.cpuPercent),
          ],
          [`time to start ${runs} runs until all await approval`, seconds(startToWaitingMs), '', ''],
          [`time to send ${runs} approvals`, seconds(approvalsSentMs), '', ''],
          ['completion after approval, p50', seconds(percentile(latenciesMs, 0.5)), '', ''],
          ['completion after approval, p99', seconds(percentile(latenciesMs, 0.99)), '', ''],
          ['completion after approval, max', seconds(Math.max(...latenciesMs)), '', ''],
          [
            'all complete, from the first approval sent',
            seconds(lastCloseMs - approvalBegan),
            `≤ ${GOALS.completionS} s`,
            againstGoal((lastCloseMs - approvalBegan) / 1000, GOALS.completionS),
          ],
          rssRow('worker RSS while they complete (peak)', drain.peakRssBytes),
          rssRow('worker RSS after all completed', after.rssBytes),
          ...compositionRows(afterComposition),
          ['worker CPU while they complete', `${drain.cpuPercent.toFixed(0)} %`, '', ''],
          [
            'runs completed',
            `${completed.toLocaleString('en-US')} of ${runs}`,
            others.length === 0
              ? 'all'
              : `all (${others.map(([status, count]) => `${count} ${status}`).join(', ')})`,
            '',
          ],
        ],
      ),
    );
    print('');
    print(
      `after an approval, on each run's critical path (mean of ${paths.length} runs spread over the latencies):`,
    );
    print(
      formatTable(
        ['segment', 'mean ms', 'share'],
        [
          ...pathSegments.map((segment) => [
            segment.label,
            segment.ms.toFixed(0),
            `${((segment.ms / meanPathMs) * 100).toFixed(0)} %`,
          ]),
          ['(not traced)', untracedMs.toFixed(0), `${((untracedMs / meanPathMs) * 100).toFixed(0)} %`],
          ['signal received to run closed', meanPathMs.toFixed(0), '100 %'],
        ],
      ),
    );
    print('');
    print('worker: `agents worker` in a child process; RSS = VmRSS, CPU = utime + stime over the');
    print('        window as a share of one core; anonymous and file-backed from smaps_rollup.');
    print("        Completion = the run's close time on the server");
    print('        minus the moment its approval signal was sent; each approved command runs in');
    print('        bubblewrap on a sandbox server in the benchmark process.');
    print(`total time: ${((performance.now() - benchBegan) / 1000).toFixed(1)} s`);
    return 0;
  } catch (error) {
    if (verbose) console.error(error);
    process.stderr.write(`bench:approvals: ${(error as Error).message.split('\n')[0]}\n`);
    return 1;
  } finally {
    if (worker !== undefined && worker.exitCode === null) {
      const exited = new Promise((resolve) => worker?.once('exit', resolve));
      worker.kill('SIGTERM');
      await exited;
    }
    await sandbox?.close();
    await temporal?.close();
    if (sandboxRoot !== undefined) await rm(sandboxRoot, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench:approvals: ${(error as Error).message.split('\n')[0]}\n`);
    process.exit(1);
  },
);
