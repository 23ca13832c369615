/**
 * Benchmark: what durability costs per iteration of an agent run.
 *
 * The durable path is the real thing: a Temporal dev server, an in-process agents worker, and runs
 * started with `AgentsClient.start`, whose scripted model answers at once (`delayMs: 0`) and whose
 * interval is 0, so every millisecond between two iterations is orchestration: the workflow task,
 * scheduling the model activity, the activity with its transcript file, its completion, the next
 * workflow task. It is read from the iteration records the `iterations` query returns: the gap
 * between consecutive records' `startedAt` (workflow time, millisecond precision), and for the
 * first iteration its own duration.
 *
 * The baseline is the same iteration without Temporal, in this process: the same prompt builder,
 * the same `ScriptedModel` with the same script, the transcript kept in memory and the same record
 * builder. It is the floor the durable loop could reach, so the ratio between them is the price of
 * durability alone, not of the model (which a real agent would wait for in both cases).
 *
 * The baseline is no target anyone can meet, so a second table sets the durable figures beside
 * honest anchors (see ./peers/index.ts): the physical floor, one fsync'd SQLite commit (WAL,
 * synchronous=FULL) on the same disk, and two durable-execution peers playing the same turns in
 * both scenarios: LangGraph checkpointing every step in SQLite with `durability="sync"`, and DBOS
 * checkpointing every step in a PostgreSQL the bench starts itself. `--no-peers` leaves them out.
 *
 * Scenario A is one run of `--iterations` (default 100); scenario B is `--runs` (default 50)
 * concurrent runs of `--concurrent-iterations` (default 20). The same options can be given as
 * BENCH_ITERATIONS, BENCH_CONCURRENT_ITERATIONS and BENCH_RUNS; argv wins over the environment.
 */
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import {
  countSchema,
  describeMachine,
  formatRatio,
  formatTable,
  ITERATION_TURNS,
  percentile,
  temporalVersion,
  parseBenchOptions,
} from './report';
import { ScriptedModel } from '../models/scripted-model';
import { AgentsClient, validateRunInput } from '../client/agents-client';
import type { AgentRunInput } from '../common/agent-input';
import type { IterationRecord, TranscriptMessage } from '../common/agent-run-types';
import { iterationsQuery } from '../common/messages';
import { buildIterationRecord } from '../workflows/iteration-record';
import { buildIterationPrompt, buildSystemPrompt } from '../workflows/prompts';
import { scriptedRun, uniqueName } from '../test/helpers/run-input';
import { startTestTemporal, type TestTemporal } from '../test/helpers/temporal-server';
import { startWorker, type RunningWorker } from '../test/helpers/worker';
import { isUnavailable, measurePeers, type PeerResults, type PeerShape } from './peers/index';
import { peerTurnSchema } from './peers/peer-protocol';

/** Iterations of the warm-up run, which pays for the first workflow task and connection setup. */
const WARM_UP_ITERATIONS = 3;

/** fsync'd commits (and appends) the floor is measured over. */
const FLOOR_COMMITS = 200;

const benchOptionsSchema = z.object({
  // The `iterations` query returns at most 10,000 records at once.
  iterations: countSchema('--iterations (BENCH_ITERATIONS)', 10_000).default(100),
  concurrentIterations: countSchema('--concurrent-iterations (BENCH_CONCURRENT_ITERATIONS)', 10_000).default(
    20,
  ),
  runs: countSchema('--runs (BENCH_RUNS)', 1000).default(50),
  skipPeers: z.boolean().default(false),
});
type BenchOptions = z.infer<typeof benchOptionsSchema>;

/** Reads the options from argv, falling back on the environment, then on the defaults. */
function parseOptions(argv: string[], environment: NodeJS.ProcessEnv): BenchOptions {
  return parseBenchOptions(
    argv,
    environment,
    benchOptionsSchema,
    [
      { flag: 'iterations', field: 'iterations', variable: 'BENCH_ITERATIONS' },
      {
        flag: 'concurrent-iterations',
        field: 'concurrentIterations',
        variable: 'BENCH_CONCURRENT_ITERATIONS',
      },
      { flag: 'runs', field: 'runs', variable: 'BENCH_RUNS' },
      { flag: 'no-peers', field: 'skipPeers', boolean: true },
    ],
    '--iterations M --concurrent-iterations M2 --runs N --no-peers',
  );
}

/** Per-iteration times of one path of one scenario, and its throughput. */
interface PathFigures {
  iterationMs: number[];
  totalIterations: number;
  wallClockS: number;
}

/** A scenario's run input: the bench script, back to back, `iterations` long. */
function benchRunInput(prefix: string, iterations: number): AgentRunInput {
  return validateRunInput(
    scriptedRun(uniqueName(prefix), ITERATION_TURNS, {
      intervalS: 0,
      maxIterations: iterations,
      // Every call is charged to the shared daily ledger and every iteration checks it, as in a
      // real run, with limits no benchmark reaches.
      budgets: { sessionTokens: 0, sessionCostUsd: 0, dailyTokens: 1_000_000_000, dailyCostUsd: 1_000_000 },
    }),
  );
}

/**
 * The orchestration time of each iteration of a durable run, in ms: the first iteration's duration,
 * then the gaps between consecutive starts. With no interval an iteration starts in the workflow
 * task that records the previous one, so each gap is one full durable round trip.
 */
function orchestrationTimesMs(records: IterationRecord[]): number[] {
  const starts = records.map((record) => Date.parse(record.startedAt));
  const first = records[0];
  if (first === undefined) return [];
  const firstDurationMs = Date.parse(first.timestamp) - Date.parse(first.startedAt);
  return [firstDurationMs, ...starts.slice(1).map((start, index) => start - (starts[index] ?? start))];
}

/** Starts `runs` agent runs of `iterations` at once, waits for all, then reads their records. */
async function measureDurable(
  agents: AgentsClient,
  prefix: string,
  runs: number,
  iterations: number,
): Promise<PathFigures> {
  const began = performance.now();
  const finished = await Promise.all(
    Array.from({ length: runs }, async () => {
      const handle = await agents.start(benchRunInput(prefix, iterations));
      return { handle, result: await handle.result() };
    }),
  );
  const wallClockS = (performance.now() - began) / 1000;
  for (const { handle, result } of finished) {
    if (result.exitReason !== 'max_iterations' || result.iterations !== iterations) {
      throw new Error(
        `run ${handle.workflowId} ended with ${result.exitReason} after ${result.iterations} of ${iterations} iterations`,
      );
    }
  }
  // Read after the clock stopped: querying a closed run replays it, which is not iteration cost.
  const records = await Promise.all(finished.map(({ handle }) => handle.query(iterationsQuery)));
  return {
    iterationMs: records.flatMap(orchestrationTimesMs),
    totalIterations: runs * iterations,
    wallClockS,
  };
}

/** One non-durable agent loop: what `agentRun` does per iteration, minus Temporal. */
async function runBaselineLoop(input: AgentRunInput, model: ScriptedModel): Promise<number[]> {
  if (input.model.provider !== 'scripted') throw new Error('the baseline plays the scripted model');
  const spec = input.model;
  const systemPrompt = buildSystemPrompt(input.template.content);
  const transcript: TranscriptMessage[] = [];
  const records: IterationRecord[] = [];
  const signal = new AbortController().signal;
  const iterationMs: number[] = [];
  for (let iteration = 1; iteration <= (input.maxIterations ?? 0); iteration += 1) {
    const began = performance.now();
    const startedAtMs = Date.now();
    transcript.push({ role: 'user', content: buildIterationPrompt(transcript.length > 0, input.args) });
    const response = await model.generate({
      spec,
      systemPrompt,
      messages: transcript,
      tools: [],
      callIndex: iteration - 1,
      attempt: 1,
      signal,
      onProgress: () => undefined,
    });
    transcript.push({ role: 'assistant', content: response.text });
    records.push(
      buildIterationRecord({
        iteration,
        startedAtMs,
        endedAtMs: Date.now(),
        text: response.text,
        status: 'ok',
        tokensIn: response.usage.inputTokens,
        tokensOut: response.usage.outputTokens,
        costUsd: response.costUsd,
      }),
    );
    iterationMs.push(performance.now() - began);
  }
  return iterationMs;
}

/** Runs `loops` baseline loops of `iterations` concurrently on one event loop. */
async function measureBaseline(prefix: string, loops: number, iterations: number): Promise<PathFigures> {
  const model = new ScriptedModel();
  const inputs = Array.from({ length: loops }, () => benchRunInput(prefix, iterations));
  const began = performance.now();
  const perLoop = await Promise.all(inputs.map((input) => runBaselineLoop(input, model)));
  const wallClockS = (performance.now() - began) / 1000;
  return { iterationMs: perLoop.flat(), totalIterations: loops * iterations, wallClockS };
}

function iterationsPerSecond(figures: PathFigures): number {
  return figures.totalIterations / figures.wallClockS;
}

/** One line of the results table. */
interface ScenarioResult {
  scenario: string;
  shape: PeerShape;
  durable: PathFigures;
  baseline: PathFigures;
}

function renderTable(results: ScenarioResult[]): string {
  const header = [
    'scenario',
    'iterations',
    'durable p50 ms',
    'durable p99 ms',
    'durable it/s',
    'baseline p50 ms',
    'baseline p99 ms',
    'baseline it/s',
    'overhead ratio (p50)',
    'throughput ratio',
  ];
  const rows = results.map(({ scenario, durable, baseline }) => [
    scenario,
    String(durable.totalIterations),
    percentile(durable.iterationMs, 0.5).toFixed(0),
    percentile(durable.iterationMs, 0.99).toFixed(0),
    iterationsPerSecond(durable).toFixed(1),
    percentile(baseline.iterationMs, 0.5).toFixed(3),
    percentile(baseline.iterationMs, 0.99).toFixed(3),
    iterationsPerSecond(baseline).toFixed(0),
    formatRatio(percentile(durable.iterationMs, 0.5) / percentile(baseline.iterationMs, 0.5)),
    formatRatio(iterationsPerSecond(baseline) / iterationsPerSecond(durable)),
  ]);
  return formatTable(header, rows);
}

/** Milliseconds with the digits that matter at their size: 2.31, 15.2, 150. */
function formatMs(ms: number): string {
  return ms < 10 ? ms.toFixed(2) : ms < 100 ? ms.toFixed(1) : ms.toFixed(0);
}

/**
 * The second part: a table per scenario of durable-agents and then each anchor, with durable p50 ÷
 * the anchor's p50, and the anchor's throughput ÷ durable-agents' where the anchor has one. Anchors
 * that could not be measured come back as lines saying why.
 */
function renderAnchors(results: ScenarioResult[], peers: PeerResults): { tables: string[]; notes: string[] } {
  const header = ['path', 'p50 ms', 'p99 ms', 'it/s', 'durable p50 ÷ p50', 'it/s ÷ durable it/s'];
  const notes = new Set<string>();
  const floor = peers.floor;
  if (isUnavailable(floor)) notes.add(`floor: not measured: ${floor.unavailable}`);
  const tables = results.map(({ scenario, durable }, index) => {
    const durableP50 = percentile(durable.iterationMs, 0.5);
    const row = (path: string, samples: number[], throughput?: number) => [
      path,
      formatMs(percentile(samples, 0.5)),
      formatMs(percentile(samples, 0.99)),
      throughput === undefined ? '-' : throughput.toFixed(1),
      formatRatio(durableP50 / percentile(samples, 0.5)),
      throughput === undefined ? '-' : formatRatio(throughput / iterationsPerSecond(durable)),
    ];
    const rows = [row('durable-agents', durable.iterationMs, iterationsPerSecond(durable))];
    if (!isUnavailable(floor)) {
      rows.push(row(`floor: fsync'd SQLite commit`, floor.commitMs));
      rows.push(row(`floor: fsync'd append`, floor.appendMs));
    }
    for (const [name, figures] of [
      ['LangGraph', peers.langGraph[index]],
      ['DBOS', peers.dbos[index]],
    ] as const) {
      if (figures === undefined) continue;
      if (isUnavailable(figures)) notes.add(`${name}: not measured: ${figures.unavailable}`);
      else rows.push(row(name, figures.iterationMs, figures.totalIterations / figures.wallClockS));
    }
    return `${scenario}\n${formatTable(header, rows)}`;
  });
  return { tables, notes: [...notes] };
}

/** The versions of the floor's SQLite and of the peers that ran, one line. */
function peerVersions(peers: PeerResults): string {
  const versions = [...peers.langGraph, ...peers.dbos].flatMap((figures) =>
    isUnavailable(figures) ? [] : [figures.version],
  );
  if (!isUnavailable(peers.floor)) versions.unshift(`floor SQLite ${peers.floor.sqlite}`);
  return [...new Set(versions)].join(' · ');
}

/** Runs the benchmark and prints its figures; resolves to the exit code. */
async function main(argv: string[]): Promise<number> {
  const print = (line: string) => process.stdout.write(`${line}\n`);
  const progress = (line: string) => process.stderr.write(`· ${line}\n`);
  const verbose = argv.includes('--verbose');
  const benchBegan = performance.now();
  let temporal: TestTemporal | undefined;
  let worker: RunningWorker | undefined;
  try {
    const options = parseOptions(argv, process.env);
    progress('starting the Temporal dev server and an in-process worker (bundles the workflows)');
    temporal = await startTestTemporal();
    worker = await startWorker(temporal);
    const agents = new AgentsClient(temporal.client);

    progress(`warming up: one run of ${WARM_UP_ITERATIONS} iterations`);
    await measureDurable(agents, 'bench-warm-up', 1, WARM_UP_ITERATIONS);
    await measureBaseline('bench-warm-up', 1, WARM_UP_ITERATIONS);

    const results: ScenarioResult[] = [];
    progress(`scenario A: 1 run of ${options.iterations} iterations`);
    results.push({
      scenario: `A: 1 run × ${options.iterations}`,
      shape: { runs: 1, iterations: options.iterations },
      durable: await measureDurable(agents, 'bench-a', 1, options.iterations),
      baseline: await measureBaseline('bench-a', 1, options.iterations),
    });
    progress(`scenario B: ${options.runs} concurrent runs of ${options.concurrentIterations} iterations`);
    results.push({
      scenario: `B: ${options.runs} runs × ${options.concurrentIterations}`,
      shape: { runs: options.runs, iterations: options.concurrentIterations },
      durable: await measureDurable(agents, 'bench-b', options.runs, options.concurrentIterations),
      baseline: await measureBaseline('bench-b', options.runs, options.concurrentIterations),
    });

    let peers: PeerResults | undefined;
    if (!options.skipPeers) {
      const args = benchRunInput('bench-peers', 1).args;
      peers = await measurePeers({
        turns: ITERATION_TURNS.map((turn) => peerTurnSchema.parse(turn)),
        prompts: { first: buildIterationPrompt(false, args), next: buildIterationPrompt(true, args) },
        shapes: results.map(({ shape }) => shape),
        floorCommits: FLOOR_COMMITS,
        progress,
      });
    }

    print('durable-agents · per-iteration orchestration overhead');
    print(`machine:  ${describeMachine()}`);
    print(`temporal: ${await temporalVersion()} (dev server, SQLite file)`);
    print(
      `options:  --iterations ${options.iterations} --concurrent-iterations ${options.concurrentIterations} --runs ${options.runs}`,
    );
    print('');
    print(renderTable(results));
    print('');
    print('durable: gaps between consecutive iteration starts (workflow time, ms precision) of runs');
    print('         started with AgentsClient.start, scripted model with no delay, interval 0.');
    print('baseline: the same prompt, ScriptedModel call and record in an in-process loop, no Temporal.');
    print('overhead ratio = durable p50 / baseline p50; throughput ratio = baseline it/s / durable it/s.');
    if (peers !== undefined) {
      const { tables, notes } = renderAnchors(results, peers);
      print('');
      print('durable-agents beside the physical floor and its peers');
      const versions = peerVersions(peers);
      if (versions !== '') print(`versions: ${versions}`);
      for (const table of tables) print(`\n${table}`);
      for (const note of notes) print(note);
      print('');
      print(
        `floor: ${FLOOR_COMMITS} single-row SQLite commits (WAL, synchronous=FULL), each fsync'd before the`,
      );
      print("       next, and as many fsync'd appends of one record line, on the disk the databases use.");
      print('LangGraph: a StateGraph node per turn, SqliteSaver (WAL, synchronous=FULL), durability="sync";');
      print('       concurrent runs are threads of one Python process sharing the saver.');
      print(
        'DBOS: a workflow with a step per turn on a PostgreSQL 15 of its own (fsync, synchronous_commit on);',
      );
      print('       concurrent runs are workflows at once in one Node process.');
      print("Peers play the same turns; a sample runs from one step's start to the next's.");
      print("durable p50 ÷ p50 = how many times a durable-agents iteration takes the path's p50;");
      print("it/s ÷ durable it/s = how many times the path's throughput is durable-agents'.");
    }
    print(`total time: ${((performance.now() - benchBegan) / 1000).toFixed(1)} s`);
    return 0;
  } catch (error) {
    if (verbose) console.error(error);
    process.stderr.write(`bench:iterations: ${(error as Error).message.split('\n')[0]}\n`);
    return 1;
  } finally {
    await worker?.stop();
    await temporal?.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench:iterations: ${(error as Error).message.split('\n')[0]}\n`);
    process.exit(1);
  },
);
