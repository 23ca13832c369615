/**
 * Benchmark: what the model path costs around an answer, and how fast the local model writes.
 *
 * Part 1 streams one OpenAI Chat Completions answer of `--chunks` content chunks (default 50) from a
 * local HTTP server on 127.0.0.1, one call at a time, `--calls` calls per path (default 200):
 *
 * - baseline: undici `request()` posting the provider's own request body over one keep-alive Agent
 *   and reading the whole event stream, nothing parsed;
 * - provider: `OpenAIModel.generate` on the worker's dispatcher: every chunk parsed and checked,
 *   text, tool calls and usage assembled;
 * - activity: agent runs of `--iterations` (default 10) on a Temporal dev server with an in-process
 *   worker, their model spec pointing at the same server, one run after another. Each `modelTurn` is
 *   timed from the history, scheduled → completed (and scheduled → started, the queue part), so the
 *   figure is the activity path (dispatch, transcript store, provider, heartbeats, completion), not
 *   the whole iteration. The worker's own provider is timed around each call, its share of that.
 *
 * Part 2 loads the local GGUF model, when it is installed, and runs `--local-runs` generations
 * (default 3) of the demo program's first turn through `LocalModel`, watching the event loop, then
 * the same prompt text and token budget through a raw `LlamaCompletion` without grammar, the
 * baseline. `--skip-local` skips it.
 * The counts can also be given as BENCH_MODEL_CALLS, BENCH_MODEL_CHUNKS, BENCH_MODEL_ITERATIONS and
 * BENCH_LOCAL_RUNS; argv wins over the environment.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { WorkflowHandle } from '@temporalio/client';
import { Agent, request as sendRequest } from 'undici';
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
import { ToolCatalog } from '../activities/tool-catalog';
import { AgentsClient, validateRunInput } from '../client/agents-client';
import { loadConfig } from '../client/config';
import { defaultLocalModelFile, modelsFolder } from '../client/local-model-install';
import { loadTemplate } from '../client/templates';
import { localModelSchema, openaiModelSchema, type OpenAIModelSpec } from '../common/agent-input';
import type { TranscriptMessage } from '../common/agent-run-types';
import { createModelDispatcher } from '../models/http';
import { LocalModel } from '../models/local-model';
import { chatHistory, transcriptPrompt } from '../models/local-model-prompt';
import type { ModelProvider, ModelRequest } from '../models/model-provider';
import { OpenAIModel } from '../models/openai-model';
import { buildIterationPrompt, buildSystemPrompt } from '../workflows/prompts';
import { ModelApiServer, openaiStream } from '../test/helpers/model-api-server';
import { TEST_TEMPLATE, uniqueName } from '../test/helpers/run-input';
import { startTestTemporal, type TestTemporal } from '../test/helpers/temporal-server';
import { startWorker, type RunningWorker } from '../test/helpers/worker';
import { createActivityDependencies } from '../worker/create-worker';

/** An environment variable nobody sets: a host that is not OpenAI's own needs no key. */
const UNSET_KEY_VARIABLE = 'BENCH_MODELS_UNSET_API_KEY';
/** Calls of each path's warm-up: connection setup, JIT, the first workflow tasks. */
const WARM_UP_CALLS = 5;
/** The local model's token budget, as the demo gives it. */
const LOCAL_MAX_TOKENS = 128;

const print = (line: string) => process.stdout.write(`${line}\n`);
const progress = (line: string) => process.stderr.write(`· ${line}\n`);

const benchOptionsSchema = z.object({
  calls: countSchema('--calls (BENCH_MODEL_CALLS)', 100_000).default(200),
  chunks: countSchema('--chunks (BENCH_MODEL_CHUNKS)', 10_000).default(50),
  iterations: countSchema('--iterations (BENCH_MODEL_ITERATIONS)', 1000).default(10),
  localRuns: countSchema('--local-runs (BENCH_LOCAL_RUNS)', 100).default(3),
  skipLocal: z.boolean().default(false),
});
type BenchOptions = z.infer<typeof benchOptionsSchema>;

/** Reads the options from argv, falling back on the environment, then on the defaults. */
function parseOptions(argv: string[], environment: NodeJS.ProcessEnv): BenchOptions {
  return parseBenchOptions(
    argv,
    environment,
    benchOptionsSchema,
    [
      { flag: 'calls', field: 'calls', variable: 'BENCH_MODEL_CALLS' },
      { flag: 'chunks', field: 'chunks', variable: 'BENCH_MODEL_CHUNKS' },
      { flag: 'iterations', field: 'iterations', variable: 'BENCH_MODEL_ITERATIONS' },
      { flag: 'local-runs', field: 'localRuns', variable: 'BENCH_LOCAL_RUNS' },
      { flag: 'skip-local', field: 'skipLocal', boolean: true },
    ],
    '--calls N --chunks K --iterations M --local-runs R [--skip-local]',
  );
}

/** Per-call times of one path, and its throughput over the wall time they took. */
interface PathFigures {
  callMs: number[];
  wallClockS: number;
}

/** Times `calls` calls, one after another. */
async function measureCalls(calls: number, callOnce: (call: number) => Promise<void>): Promise<PathFigures> {
  const callMs: number[] = [];
  const began = performance.now();
  for (let call = 0; call < calls; call += 1) {
    const callBegan = performance.now();
    await callOnce(call);
    callMs.push(performance.now() - callBegan);
  }
  return { callMs, wallClockS: (performance.now() - began) / 1000 };
}

/** The model turns of finished runs: scheduled → completed, scheduled → started, and ledger calls. */
interface ActivityFigures {
  total: PathFigures;
  queueMs: number[];
  ledgerCalls: number;
}

/** Reads a finished run's `modelTurn` activities from its history, into `figures`. */
async function readModelTurns(handle: WorkflowHandle, figures: ActivityFigures): Promise<number> {
  const scheduledAt = new Map<string, number>();
  const startedAt = new Map<string, number>();
  let turns = 0;
  for (const event of (await handle.fetchHistory()).events ?? []) {
    const type = event.activityTaskScheduledEventAttributes?.activityType?.name;
    if (type === 'dailyUsage') figures.ledgerCalls += 1;
    if (type === 'modelTurn') scheduledAt.set(String(event.eventId), eventTimeMs(event));
    const started = event.activityTaskStartedEventAttributes;
    if (started != null && scheduledAt.has(String(started.scheduledEventId))) {
      // A retried turn would time its retries, not the path.
      if ((started.attempt ?? 1) > 1) throw new Error(`a model turn of ${handle.workflowId} was retried`);
      startedAt.set(String(started.scheduledEventId), eventTimeMs(event));
    }
    const scheduledId = String(event.activityTaskCompletedEventAttributes?.scheduledEventId);
    const began = scheduledAt.get(scheduledId);
    if (event.activityTaskCompletedEventAttributes == null || began === undefined) continue;
    turns += 1;
    figures.total.callMs.push(eventTimeMs(event) - began);
    figures.queueMs.push((startedAt.get(scheduledId) ?? began) - began);
  }
  return turns;
}

/** Runs of `iterations`, one after another, until `calls` model turns are done. */
async function measureActivity(
  agents: AgentsClient,
  spec: OpenAIModelSpec,
  calls: number,
  iterations: number,
): Promise<ActivityFigures> {
  const figures: ActivityFigures = { total: { callMs: [], wallClockS: 0 }, queueMs: [], ledgerCalls: 0 };
  for (let done = 0; done < calls; done += iterations) {
    const began = performance.now();
    const handle = await agents.start(
      validateRunInput({
        name: uniqueName('bench-models'),
        template: { name: 'test-program', source: 'file', content: TEST_TEMPLATE },
        intervalS: 0,
        maxIterations: iterations,
        model: spec,
        permissions: { mode: 'auto-approve' },
        // The answer never changes, which the stagnation guard would end the run for.
        guards: { stagnationWindow: 0 },
        budgets: { sessionTokens: 0, sessionCostUsd: 0, dailyTokens: 0, dailyCostUsd: 0 },
      }),
    );
    const result = await handle.result();
    figures.total.wallClockS += (performance.now() - began) / 1000;
    const turns = await readModelTurns(handle, figures);
    if (result.exitReason !== 'max_iterations' || turns !== iterations) {
      throw new Error(`run ${handle.workflowId}: ${result.exitReason} after ${turns} of ${iterations} turns`);
    }
  }
  return figures;
}

/** A provider timed around each `generate`: its share of the model activity, heartbeats included. */
function timedProvider(provider: ModelProvider, callMs: number[]): ModelProvider {
  return {
    provider: provider.provider,
    async generate(request) {
      const began = performance.now();
      try {
        return await provider.generate(request);
      } finally {
        callMs.push(performance.now() - began);
      }
    },
    close: async () => provider.close?.(),
  };
}

/** Part 1: the three paths against one local server; prints its table. */
async function benchRemote(options: BenchOptions): Promise<void> {
  const baselineAgent = new Agent({ keepAliveTimeout: 30_000 });
  const provider = new OpenAIModel({ dispatcher: createModelDispatcher() });
  let server: ModelApiServer | undefined;
  let temporal: TestTemporal | undefined;
  let worker: RunningWorker | undefined;
  try {
    delete process.env[UNSET_KEY_VARIABLE];
    const textPieces = Array.from({ length: options.chunks }, (_, index) => `word${index} `);
    server = (await ModelApiServer.start()).replyAlways({
      events: openaiStream({ textPieces, usage: { inputTokens: 600, outputTokens: options.chunks } }),
    });
    const spec = openaiModelSchema.parse({
      provider: 'openai',
      model: 'bench-model',
      baseUrl: `${server.url}/v1`,
      apiKeyEnv: UNSET_KEY_VARIABLE,
    });
    // The first turn of a run of the test program, as the model activity asks it.
    const turn: ModelRequest<OpenAIModelSpec> = {
      spec,
      systemPrompt: buildSystemPrompt(TEST_TEMPLATE),
      messages: [{ role: 'user', content: buildIterationPrompt(false, '') }],
      tools: await new ToolCatalog(undefined, () => undefined).definitions(),
      callIndex: 0,
      attempt: 1,
      signal: new AbortController().signal,
      onProgress: () => undefined,
    };
    const callProvider = async (call: number) => {
      const response = await provider.generate({ ...turn, callIndex: call });
      if (response.text !== textPieces.join('')) throw new Error('the provider assembled another text');
    };
    progress(`warming up: ${WARM_UP_CALLS} calls through the provider and the baseline`);
    await measureCalls(WARM_UP_CALLS, callProvider);
    // The baseline posts exactly the bytes the provider posted.
    const body = JSON.stringify(server.requests[0]?.body);
    const callBaseline = async () => {
      const response = await sendRequest(`${spec.baseUrl}/chat/completions`, {
        dispatcher: baselineAgent,
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body,
      });
      const text = await response.body.text();
      if (response.statusCode !== 200 || !text.includes('[DONE]')) throw new Error('a baseline call failed');
    };
    await measureCalls(WARM_UP_CALLS, callBaseline);
    progress(`baseline and provider: ${options.calls} calls each, ${options.chunks} chunks per answer`);
    const baseline = await measureCalls(options.calls, callBaseline);
    const direct = await measureCalls(options.calls, callProvider);

    progress('starting the Temporal dev server and an in-process worker (bundles the workflows)');
    temporal = await startTestTemporal();
    const dependencies = createActivityDependencies(temporal.home);
    const inWorkerMs: number[] = [];
    const models = new Map(dependencies.models);
    const workerProvider = models.get('openai');
    if (workerProvider !== undefined) models.set('openai', timedProvider(workerProvider, inWorkerMs));
    worker = await startWorker(temporal, { ...dependencies, models });
    const agents = new AgentsClient(temporal.client);
    progress(`activity: runs of ${options.iterations} iterations until ${options.calls} model turns`);
    await measureActivity(agents, spec, 2, 2);
    inWorkerMs.length = 0;
    const activity = await measureActivity(agents, spec, options.calls, options.iterations);

    /** A table row; sub-rows of the activity have no throughput of their own. */
    const row = (name: string, callMs: number[], wallClockS: number | undefined, ratios = true) => {
      const ratio = (fraction: number) =>
        ratios ? formatRatio(percentile(callMs, fraction) / percentile(baseline.callMs, fraction)) : '-';
      return [
        name,
        String(callMs.length),
        percentile(callMs, 0.5).toFixed(2),
        percentile(callMs, 0.99).toFixed(2),
        wallClockS === undefined ? '-' : (callMs.length / wallClockS).toFixed(0),
        ratio(0.5),
        ratio(0.99),
      ];
    };
    print('');
    print(
      `Part 1 · model-activity overhead (${options.chunks}-chunk Chat Completions stream from 127.0.0.1)`,
    );
    print(
      formatTable(
        ['path', 'calls', 'p50 ms', 'p99 ms', 'calls/s', 'p50 ratio', 'p99 ratio'],
        [
          row('baseline: undici request(), whole body', baseline.callMs, baseline.wallClockS, false),
          row('provider: OpenAIModel.generate', direct.callMs, direct.wallClockS),
          row('activity: modelTurn scheduled → completed', activity.total.callMs, activity.total.wallClockS),
          row('  of which scheduled → started (queue)', activity.queueMs, undefined, false),
          row('  of which OpenAIModel.generate in it', inWorkerMs, undefined),
        ],
      ),
    );
    print('');
    print('ratio = path percentile / baseline percentile. baseline, provider: client-side time per call.');
    print('activity: history event times (server clock), one run at a time, interval 0, no tool calls;');
    print('queue: near 0 when the server hands the activity to the worker in its reply to the workflow');
    print('task that scheduled it (eager dispatch). calls/s = model turns / wall time of the runs.');
    print(
      "generate in it: the worker's provider timed around each call; it heartbeats at most every 200 ms.",
    );
    const { ledgerCalls } = activity;
    if (ledgerCalls === 0) print('daily ledger: not called with daily limits 0.');
    else {
      const iterations = activity.total.callMs.length;
      print(`daily ledger: ${ledgerCalls} calls in ${iterations} iterations, though the daily limits`);
      print('are 0: every run charges its spend, and RunBudget.refreshDaily skips the call only when');
      print('there is nothing to charge and no daily limit. The calls are outside the timed activity.');
    }
  } finally {
    await worker?.stop();
    await temporal?.close();
    await provider.close();
    await baselineAgent.close();
    await server?.close();
  }
}

/** One generation of the local model: its time, tokens, heartbeats and what the event loop felt. */
interface Generation {
  wallMs: number;
  inputTokens: number;
  outputTokens: number;
  /** The provider's `onProgress` calls; a raw generation has none. */
  progressCalls?: number;
  loopMaxMs: number;
  loopP99Ms: number;
}

type Counts = Pick<Generation, 'inputTokens' | 'outputTokens' | 'progressCalls'>;

/** Runs `runs` generations one after another, timing each and watching the event loop's delay. */
async function measureGenerations(runs: number, generate: (run: number) => Promise<Counts>) {
  const generations: Generation[] = [];
  for (let run = 0; run < runs; run += 1) {
    const histogram = monitorEventLoopDelay({ resolution: 1 });
    histogram.enable();
    const began = performance.now();
    const counts = await generate(run);
    const wallMs = performance.now() - began;
    histogram.disable();
    generations.push({
      ...counts,
      wallMs,
      loopMaxMs: histogram.max / 1e6,
      loopP99Ms: histogram.percentile(99) / 1e6,
    });
  }
  return generations;
}

const tokensPerSecond = (generation: Generation) => generation.outputTokens / (generation.wallMs / 1000);

/** The median rate of the generations after the first, which alone evaluates the whole prompt. */
const warmRate = (generations: Generation[]) =>
  percentile(generations.slice(generations.length > 1 ? 1 : 0).map(tokensPerSecond), 0.5);

/** Part 2: the local model through its provider, then raw; prints its table, or how to install it. */
async function benchLocal(options: BenchOptions): Promise<void> {
  const { home } = loadConfig(process.env);
  const file = defaultLocalModelFile(home);
  print('');
  print('Part 2 · local model tokens per second');
  if (!existsSync(file)) {
    print(`skipped: no model at ${file}; \`bin/agents demo\` installs it (Gemma 3 270M, 253 MB).`);
    return;
  }
  const threads = Math.max(1, os.availableParallelism() - 1);
  const systemPrompt = buildSystemPrompt(loadTemplate('demo', home).content);
  const tools = await new ToolCatalog(undefined, () => undefined).definitions();
  const messages: TranscriptMessage[] = [{ role: 'user', content: 'Begin the program.' }];
  const spec = localModelSchema.parse({ provider: 'local', model: file, maxOutputTokens: LOCAL_MAX_TOKENS });

  progress(`local model: loading ${file}, then ${options.localRuns} generations through LocalModel`);
  const provider = new LocalModel({ modelsFolder: modelsFolder(home) });
  let began = performance.now();
  let providerRuns: Generation[];
  let providerLoadMs: number;
  try {
    await provider.warmUp(spec);
    providerLoadMs = performance.now() - began;
    providerRuns = await measureGenerations(options.localRuns, async (run) => {
      let progressCalls = 0;
      const { usage } = await provider.generate({
        spec,
        systemPrompt,
        messages,
        tools,
        callIndex: run,
        attempt: 1,
        signal: new AbortController().signal,
        onProgress: () => (progressCalls += 1),
      });
      return { ...usage, progressCalls };
    });
  } finally {
    await provider.close();
  }

  progress(`raw baseline: ${options.localRuns} LlamaCompletion generations of the same prompt, no grammar`);
  const { getLlama, LlamaCompletion, LlamaLogLevel, resolveChatWrapper } = await import('node-llama-cpp');
  began = performance.now();
  const llama = await getLlama({ build: 'never', gpu: false, logLevel: LlamaLogLevel.error });
  let rawRuns: Generation[];
  let rawLoadMs: number;
  try {
    const model = await llama.loadModel({ modelPath: file });
    const context = await model.createContext({ contextSize: spec.contextTokens, threads });
    rawLoadMs = performance.now() - began;
    // The text the provider's model reads: its chat template applied, or the plain transcript.
    const prompt =
      model.fileInfo.metadata.tokenizer?.chat_template === undefined
        ? transcriptPrompt(systemPrompt, tools, messages)
        : resolveChatWrapper(model).generateContextState({
            chatHistory: chatHistory(systemPrompt, tools, messages),
          }).contextText;
    const inputTokens =
      typeof prompt === 'string' ? model.tokenize(prompt).length : prompt.tokenize(model.tokenizer).length;
    const completion = new LlamaCompletion({ contextSequence: context.getSequence() });
    rawRuns = await measureGenerations(options.localRuns, async () => {
      let outputTokens = 0;
      await completion.generateCompletion(prompt, {
        maxTokens: spec.maxOutputTokens,
        temperature: spec.temperature,
        onToken: (tokens) => (outputTokens += tokens.length),
      });
      return { inputTokens, outputTokens };
    });
  } finally {
    await llama.dispose();
  }

  const row = (name: string, generation: Generation) => [
    name,
    generation.wallMs.toFixed(0),
    String(generation.inputTokens),
    String(generation.outputTokens),
    tokensPerSecond(generation).toFixed(1),
    generation.progressCalls === undefined ? '-' : String(generation.progressCalls),
    generation.loopMaxMs.toFixed(1),
    generation.loopP99Ms.toFixed(1),
  ];
  print(`model:    ${file} · ${threads} thread(s) · ${spec.maxOutputTokens} tokens at most · temperature 0`);
  print(`prompt:   demo template as the system prompt, ${tools.length} tools, "Begin the program."`);
  print(
    `load:     provider ${providerLoadMs.toFixed(0)} ms (warmUp), raw ${rawLoadMs.toFixed(0)} ms (getLlama, loadModel, createContext)`,
  );
  print('');
  print(
    formatTable(
      ['generation', 'wall ms', 'in tok', 'out tok', 'tok/s', 'onProgress', 'loop max ms', 'loop p99 ms'],
      [
        ...providerRuns.map((generation, index) => row(`provider #${index + 1}`, generation)),
        ...rawRuns.map((generation, index) => row(`raw #${index + 1}`, generation)),
      ],
    ),
  );
  const providerRate = warmRate(providerRuns);
  const rawRate = warmRate(rawRuns);
  print('');
  print(
    `tok/s, median after #1: provider ${providerRate.toFixed(1)}, raw ${rawRate.toFixed(1)}; provider ÷ raw ${formatRatio(providerRate / rawRate)}`,
  );
  print(
    "provider: LocalModel.generate (its prompt format, the tools' JSON grammar); raw: LlamaCompletion on the",
  );
  print('same prompt text and token budget, no grammar. tok/s = output tokens / wall time; #1 evaluates the');
  print('whole prompt, later generations find it in the context already, so the ratio uses those. The');
  print('provider also stops when its JSON answer is complete. onProgress: heartbeats (a token, a second).');
  print('loop: event loop delay during the generation (monitorEventLoopDelay, 1 ms resolution).');
}

/** Runs the benchmark and prints its figures; resolves to the exit code. */
async function main(argv: string[]): Promise<number> {
  const verbose = argv.includes('--verbose');
  const benchBegan = performance.now();
  try {
    const options = parseOptions(argv, process.env);
    print('durable-agents · model-activity overhead and local model speed');
    print(`machine:  ${describeMachine()} · ${os.availableParallelism()} usable cores`);
    print(`temporal: ${await temporalVersion()} (dev server, SQLite file)`);
    print(
      `load:     ${os
        .loadavg()
        .map((load) => load.toFixed(2))
        .join(' ')} (1, 5, 15 min) at the start`,
    );
    print(
      `options:  --calls ${options.calls} --chunks ${options.chunks} --iterations ${options.iterations} --local-runs ${options.localRuns}${options.skipLocal ? ' --skip-local' : ''}`,
    );
    await benchRemote(options);
    if (!options.skipLocal) await benchLocal(options);
    print('');
    print(`total time: ${((performance.now() - benchBegan) / 1000).toFixed(1)} s`);
    return 0;
  } catch (error) {
    if (verbose) console.error(error);
    process.stderr.write(`bench:models: ${(error as Error).message.split('\n')[0]}\n`);
    return 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench:models: ${(error as Error).message.split('\n')[0]}\n`);
    process.exit(1);
  },
);
