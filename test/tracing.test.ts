import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
  type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import type { HistoryAndWorkflowId } from '@temporalio/client';
import { makeWorkflowExporter } from '@temporalio/interceptors-opentelemetry/lib/worker';
import { temporal as proto } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { Resource } from '@opentelemetry/resources';
import type { ToolBatchInput } from '../activities/tool-batch';
import { AgentsClient, workflowIdFor } from '../client/agents-client';
import { OtlpHttpSpanExporter, otlpSettingsFromEnvironment } from '../worker/otlp-exporter';
import { loadWorkflowBundle } from '../worker/workflow-bundle';
import { assertOneLineFailure, runCli, startCli } from './helpers/cli';
import { startTestSandbox, TEST_SANDBOX_TOKEN } from './helpers/environment';
import { scheduledInputs } from './helpers/history';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { freePort, startTestTemporal, type TestTemporal } from './helpers/temporal-server';
import { stopProcess } from './helpers/processes';
import { waitFor } from './helpers/wait';

/** One span as a collector received it, IDs in hex and attributes as plain values. */
interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  attributes: Record<string, string | number | boolean>;
  serviceName: string;
}

/** The parts of OTLP's protobuf messages the receiver reads, as protobufjs's `toObject` gives them. */
interface OtlpAttribute {
  key: string;
  value: { stringValue?: string; intValue?: string; boolValue?: boolean; doubleValue?: number };
}
interface ExportTraceServiceRequest {
  resourceSpans?: Array<{
    resource?: { attributes?: OtlpAttribute[] };
    scopeSpans?: Array<{
      spans?: Array<{
        traceId: string;
        spanId: string;
        parentSpanId?: string;
        name: string;
        attributes?: OtlpAttribute[];
      }>;
    }>;
  }>;
}
interface MessageType {
  decode(body: Uint8Array): unknown;
  toObject(message: unknown, options: { longs: StringConstructor; bytes: StringConstructor }): unknown;
}

/* eslint-disable-next-line @typescript-eslint/no-require-imports -- protobufjs's generated root has no types */
const otlpRoot = require('@opentelemetry/otlp-transformer/build/src/generated/root') as {
  opentelemetry: { proto: { collector: { trace: { v1: { ExportTraceServiceRequest: MessageType } } } } };
};
const exportRequestType = otlpRoot.opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest;

function attributeValues(attributes: OtlpAttribute[] = []): Record<string, string | number | boolean> {
  return Object.fromEntries(
    attributes.map(({ key, value }) => [
      key,
      value.stringValue ??
        (value.intValue === undefined ? undefined : Number(value.intValue)) ??
        value.boolValue ??
        value.doubleValue ??
        '',
    ]),
  );
}

const hex = (base64: string | undefined) => Buffer.from(base64 ?? '', 'base64').toString('hex');

/** An OTLP/HTTP collector of traces on a free loopback port: it decodes protobuf and keeps every span. */
class TraceReceiver {
  readonly spans: ReceivedSpan[] = [];
  requests = 0;
  readonly contentTypes = new Set<string>();
  private readonly server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      this.requests += 1;
      this.contentTypes.add(`${request.method} ${request.url} ${request.headers['content-type']}`);
      const decoded = exportRequestType.toObject(exportRequestType.decode(Buffer.concat(chunks)), {
        longs: String,
        bytes: String,
      }) as ExportTraceServiceRequest;
      for (const resourceSpans of decoded.resourceSpans ?? []) {
        const serviceName = String(attributeValues(resourceSpans.resource?.attributes)['service.name']);
        for (const scope of resourceSpans.scopeSpans ?? []) {
          for (const span of scope.spans ?? []) {
            this.spans.push({
              traceId: hex(span.traceId),
              spanId: hex(span.spanId),
              parentSpanId: hex(span.parentSpanId),
              name: span.name,
              attributes: attributeValues(span.attributes),
              serviceName,
            });
          }
        }
      }
      response.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });

  async listen(): Promise<string> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** The one span named `name`, failing when there is not exactly one. */
  only(name: string): ReceivedSpan {
    const found = this.spans.filter((span) => span.name === name);
    assert.equal(found.length, 1, `one span ${name}, got ${found.length}: ${this.names().join(', ')}`);
    return found[0]!;
  }

  names(): string[] {
    return this.spans.map((span) => span.name);
  }

  /** The names of `span`'s ancestors, nearest first, as far as the received spans reach. */
  ancestorsOf(span: ReceivedSpan): string[] {
    const names: string[] = [];
    for (let current = span; current.parentSpanId !== '';) {
      const parent = this.spans.find((candidate) => candidate.spanId === current.parentSpanId);
      if (parent === undefined) {
        names.push(`missing ${current.parentSpanId}`);
        break;
      }
      names.push(parent.name);
      current = parent;
    }
    return names;
  }

  async close(): Promise<void> {
    this.server.close();
    this.server.closeAllConnections();
    await once(this.server, 'close');
  }
}

/** Unset tracing variables of the test's own environment, so a child traces only when told to. */
const NO_TRACING = {
  OTEL_EXPORTER_OTLP_ENDPOINT: '',
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: '',
  OTEL_SERVICE_NAME: '',
};

let temporal: TestTemporal;
let agents: AgentsClient;
let sandbox: Awaited<ReturnType<typeof startTestSandbox>>;
let receiver: TraceReceiver;
let endpoint: string;
let scratch: string;
const workers: ChildProcess[] = [];
/** The runs of these tests, replayed on both bundles by the last test. */
const runs: string[] = [];

/** The environment of an `agents` process of these tests, traced when `traced`. */
function environmentOf(traced: boolean): NodeJS.ProcessEnv {
  return {
    ...temporal.environment,
    ...NO_TRACING,
    AGENTS_SANDBOX_URLS: sandbox.endpoint.url,
    AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
    ...(traced ? { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: '100' } : {}),
  };
}

async function startWorkerProcess(traced: boolean): Promise<ChildProcess> {
  const child = await startCli(['worker'], environmentOf(traced), /Worker polling/);
  workers.push(child);
  return child;
}

/** Stops a worker as Ctrl-C does, letting it finish and flush. */
async function stopWorkerProcess(child: ChildProcess): Promise<void> {
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  await exited;
}

/** A script of two turns: a bash call, then an answer that ends the turn. */
const TOOL_THEN_ANSWER = [
  {
    text: 'Listing.',
    usage: { inputTokens: 120, outputTokens: 7 },
    toolCalls: [{ tool: 'bash', arguments: { command: 'echo traced' } }],
  },
  { text: 'Done.', usage: { inputTokens: 150, outputTokens: 3 } },
];

/** `agents start` of a one-iteration run playing {@link TOOL_THEN_ANSWER}, from a (traced) CLI. */
async function startFromCli(prefix: string, traced: boolean): Promise<string> {
  const name = uniqueName(prefix);
  runs.push(name);
  const script = path.join(scratch, `${name}.json`);
  await writeFile(script, JSON.stringify(TOOL_THEN_ANSWER));
  const started = await runCli(
    [
      ...['start', name, '--template', 'demo', '--model', `scripted:${script}`, '--max-iterations', '1'],
      ...['--interval', '0', '--permission-mode', 'auto-approve'],
    ],
    environmentOf(traced),
  );
  assert.equal(started.code, 0, started.stderr);
  return name;
}

/**
 * The run's result once it completed, failing at the deadline: `result()` alone would wait forever
 * for a run whose workflow task keeps failing.
 */
async function completedResult(name: string, timeoutMs = 90_000): Promise<{ exitReason: string }> {
  const handle = temporal.client.workflow.getHandle(workflowIdFor(name));
  await waitFor(
    `${name} to complete`,
    async () => (await handle.describe()).status.name === 'COMPLETED',
    timeoutMs,
  );
  return (await handle.result()) as { exitReason: string };
}

/** Whether any activity the run scheduled carries the OpenTelemetry interceptors' trace header. */
async function activitiesCarryTraceHeader(name: string): Promise<boolean> {
  const history = await temporal.client.workflow.getHandle(workflowIdFor(name)).fetchHistory();
  return (history.events ?? []).some(
    (event) => event.activityTaskScheduledEventAttributes?.header?.fields?.['_tracer-data'] !== undefined,
  );
}

describe('OpenTelemetry tracing', () => {
  before(async () => {
    temporal = await startTestTemporal();
    agents = new AgentsClient(temporal.client);
    sandbox = await startTestSandbox();
    receiver = new TraceReceiver();
    endpoint = await receiver.listen();
    scratch = await mkdtemp(path.join(os.tmpdir(), 'agents-tracing-'));
  });

  afterEach(async () => {
    for (const worker of workers.splice(0)) await stopProcess(worker);
  });

  after(async () => {
    await temporal?.close();
    await receiver?.close();
    await sandbox?.server.close();
    if (sandbox !== undefined) await rm(sandbox.root, { recursive: true, force: true });
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
  });

  it('traces a run started from the CLI in one trace: workflow, activities, the model call and the tool call', async () => {
    await startWorkerProcess(true);
    const name = await startFromCli('traced', true);
    const handle = temporal.client.workflow.getHandle(workflowIdFor(name));
    assert.equal((await completedResult(name)).exitReason, 'max_iterations');

    // The run's span ends with the run, and reaches the collector in the worker's next batch.
    await waitFor('the run span', () => receiver.spans.some((span) => span.name === 'RunWorkflow:agentRun'));
    const start = receiver.only('StartWorkflow:agentRun');
    const run = receiver.only('RunWorkflow:agentRun');
    const toolBatch = receiver.only('RunActivity:toolBatch');
    const toolCall = receiver.only('execute_tool bash');
    const modelCalls = receiver.spans.filter((span) => span.name === 'chat scripted');
    const modelTurns = receiver.spans.filter((span) => span.name === 'RunActivity:modelTurn');
    assert.equal(modelCalls.length, 2, receiver.names().join(', '));
    assert.equal(modelTurns.length, 2);

    // One trace, begun by the CLI's start.
    const traced = [start, run, toolBatch, toolCall, ...modelCalls, ...modelTurns];
    assert.deepEqual(new Set(traced.map((span) => span.traceId)), new Set([start.traceId]));
    assert.equal(start.parentSpanId, '');
    assert.equal(start.serviceName, 'durable-agents-cli');
    assert.equal(run.serviceName, 'durable-agents-worker');
    assert.equal(toolCall.serviceName, 'durable-agents-worker');
    assert.deepEqual(receiver.ancestorsOf(toolCall), [
      'RunActivity:toolBatch',
      'StartActivity:toolBatch',
      'RunWorkflow:agentRun',
      'StartWorkflow:agentRun',
    ]);
    for (const modelCall of modelCalls) {
      assert.deepEqual(receiver.ancestorsOf(modelCall), [
        'RunActivity:modelTurn',
        'StartActivity:modelTurn',
        'RunWorkflow:agentRun',
        'StartWorkflow:agentRun',
      ]);
    }

    // Our spans' attributes: the model call's tokens as the script reported them, the tool call's callId.
    const byInputTokens = (span: ReceivedSpan) => Number(span.attributes['gen_ai.usage.input_tokens']);
    assert.deepEqual(
      modelCalls
        .sort((first, second) => byInputTokens(first) - byInputTokens(second))
        .map((span) => [
          span.attributes['gen_ai.provider.name'],
          span.attributes['gen_ai.usage.input_tokens'],
          span.attributes['gen_ai.usage.output_tokens'],
          span.attributes['agents.model.outcome'],
        ]),
      [
        ['scripted', 120, 7, 'answered'],
        ['scripted', 150, 3, 'answered'],
      ],
    );
    const [batch] = await scheduledInputs<ToolBatchInput>(handle, 'toolBatch');
    assert.equal(toolCall.attributes['gen_ai.tool.name'], 'bash');
    assert.equal(toolCall.attributes['agents.tool.call_id'], batch?.calls[0]?.callId);
    assert.equal(toolCall.attributes['agents.tool.outcome'], 'success');
    // The run span names the run, and carries none of its data (memo, last result) beside.
    assert.deepEqual(Object.keys(run.attributes).sort(), [
      'attempt',
      'namespace',
      'runId',
      'taskQueue',
      'workflowId',
      'workflowType',
    ]);
    assert.equal(run.attributes.workflowId, workflowIdFor(name));
    assert.equal(toolBatch.attributes.temporalWorkflowId, workflowIdFor(name));
    assert.ok(
      [...receiver.contentTypes].every((line) => line === 'POST /v1/traces application/x-protobuf'),
      [...receiver.contentTypes].join('; '),
    );
  });

  it('keeps a pending request ID when the run moves from a traced worker to an untraced one', async () => {
    const traced = await startWorkerProcess(true);
    const name = uniqueName('moves');
    runs.push(name);
    await agents.start(
      scriptedRun(name, TOOL_THEN_ANSWER, { maxIterations: 1, permissions: { mode: 'ask' } }),
    );
    const asked = await waitFor('the bash call to await approval', async () => {
      const status = await agents.status(name);
      return status.state === 'awaiting_approval' ? status.pendingPermissions[0]?.requestId : undefined;
    });
    await stopWorkerProcess(traced);
    await startWorkerProcess(false);

    // The untraced worker rebuilds the run from its history: the same request, by the same ID.
    const status = await waitFor('the untraced worker to answer', () => agents.status(name), 60_000);
    assert.deepEqual(
      status.pendingPermissions.map((request) => request.requestId),
      [asked],
    );
    await agents.decide(name, { requestId: asked, approve: true });
    assert.equal((await completedResult(name, 60_000)).exitReason, 'max_iterations');
    // The approved call ran on the untraced worker and the model answered after it.
    const [record] = await agents.iterations(name);
    assert.deepEqual([record?.status, record?.summary], ['permission', 'Listing.\nDone.']);
  });

  it('sends nothing and adds no trace headers without an OTLP endpoint', async () => {
    await startWorkerProcess(false);
    const requestsBefore = receiver.requests;
    const name = await startFromCli('untraced', false);
    assert.equal((await completedResult(name)).exitReason, 'max_iterations');
    assert.equal(receiver.requests, requestsBefore, 'no request reached the collector');
    assert.equal(await activitiesCarryTraceHeader(name), false);
    assert.equal(await activitiesCarryTraceHeader(runs[0]!), true, 'the traced run carried them');
  });

  it('refuses an OTLP endpoint that is not a URL with one line', async () => {
    const environment = { ...environmentOf(false), OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'collector:4318' };
    const worker = await runCli(['worker'], environment, 60_000);
    assertOneLineFailure(
      worker,
      /OTEL_EXPORTER_OTLP_TRACES_ENDPOINT 'collector:4318': an http:\/\/ or https:\/\/ URL/,
    );
    const status = await runCli(['list'], environment, 60_000);
    assertOneLineFailure(
      status,
      /OTEL_EXPORTER_OTLP_TRACES_ENDPOINT 'collector:4318': an http:\/\/ or https:\/\/ URL/,
    );
  });

  it('replays recorded and traced histories on the traced and the untraced bundle, exporting nothing', async () => {
    const fixtures = path.join(__dirname, 'fixtures', 'histories');
    const recorded: HistoryAndWorkflowId[] = await Promise.all(
      (await readdir(fixtures))
        .filter((file) => file.endsWith('.json'))
        .map(async (file) => ({
          workflowId: path.basename(file, '.json'),
          history: proto.api.history.v1.History.fromObject(
            JSON.parse(await readFile(path.join(fixtures, file), 'utf8')) as Record<string, unknown>,
          ),
        })),
    );
    assert.equal(runs.length, 3, 'the runs of the tests above');
    const ofTheseTests = await Promise.all(
      runs.map(async (name) => ({
        workflowId: workflowIdFor(name),
        history: await temporal.client.workflow.getHandle(workflowIdFor(name)).fetchHistory(),
      })),
    );
    const exported: ReadableSpan[] = [];
    const recordingProcessor = {
      onStart: () => {},
      onEnd: (span: ReadableSpan) => exported.push(span),
      forceFlush: async () => {},
      shutdown: async () => {},
    } satisfies SpanProcessor;
    const cache = path.join(temporal.home, 'cache');
    for (const traced of [true, false]) {
      const bundle = await loadWorkflowBundle(cache, { traced });
      const options = {
        workflowBundle: bundle,
        sinks: { exporter: makeWorkflowExporter(recordingProcessor, new Resource({})) },
      };
      let replayed = 0;
      for await (const result of Worker.runReplayHistories(options, [...recorded, ...ofTheseTests])) {
        assert.equal(
          result.error,
          undefined,
          `${traced ? 'traced' : 'untraced'} ${result.workflowId}: ${String(result.error)}`,
        );
        replayed += 1;
      }
      assert.equal(replayed, recorded.length + ofTheseTests.length);
    }
    assert.equal(exported.length, 0, 'a replay exports no spans');
  });
});

describe('OTLP export settings and delivery', () => {
  it('posts to the traces endpoint as given, and under the base endpoint to /v1/traces', () => {
    const base = otlpSettingsFromEnvironment({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318/' }, 'x');
    assert.equal(base?.url, 'http://collector:4318/v1/traces');
    const both = otlpSettingsFromEnvironment(
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://traces.example.com/ingest',
      },
      'x',
    );
    assert.equal(both?.url, 'https://traces.example.com/ingest');
    assert.equal(otlpSettingsFromEnvironment({ OTEL_EXPORTER_OTLP_ENDPOINT: '' }, 'x'), undefined);
  });

  it('reads the service name, headers and protocol, and names the variable that does not parse', () => {
    const settings = otlpSettingsFromEnvironment(
      {
        OTEL_EXPORTER_OTLP_ENDPOINT: 'http://collector:4318',
        OTEL_EXPORTER_OTLP_HEADERS: 'api-key=a%20b, tenant=one',
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: 'tenant=two',
        OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
        OTEL_SERVICE_NAME: 'agents-eu',
      },
      'durable-agents-worker',
    );
    assert.deepEqual(settings?.headers, { 'api-key': 'a b', tenant: 'two' });
    assert.equal(settings?.protocol, 'http/json');
    assert.equal(settings?.serviceName, 'agents-eu');
    assert.equal(
      otlpSettingsFromEnvironment({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318' }, 'durable-agents-worker')
        ?.serviceName,
      'durable-agents-worker',
    );
    assert.throws(
      () =>
        otlpSettingsFromEnvironment(
          { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_HEADERS: 'no-value' },
          'x',
        ),
      /^OtlpSettingsError: OTEL_EXPORTER_OTLP_HEADERS 'no-value': 'no-value' is not a header; accepted: key=value pairs/,
    );
    assert.throws(
      () =>
        otlpSettingsFromEnvironment(
          { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' },
          'x',
        ),
      /OTEL_EXPORTER_OTLP_PROTOCOL 'grpc': accepted: http\/protobuf or http\/json/,
    );
  });

  it('drops the spans it cannot deliver, failing nothing, and says so once in a minute', async () => {
    const finished = new InMemorySpanExporter();
    const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(finished)] });
    provider.getTracer('test').startSpan('lost').end();
    // A port nothing listens on: the collector is down.
    const url = `http://127.0.0.1:${await freePort()}/v1/traces`;
    const logged: string[] = [];
    const exporter = new OtlpHttpSpanExporter(
      { url, headers: {}, protocol: 'http/protobuf', timeoutMs: 2_000, serviceName: 'x' },
      (message) => logged.push(message),
    );
    const exportOnce = () =>
      new Promise<ExportResult>((resolve) => exporter.export(finished.getFinishedSpans(), resolve));
    const results = [await exportOnce(), await exportOnce()];
    assert.deepEqual(
      results.map((result) => result.code),
      [ExportResultCode.FAILED, ExportResultCode.FAILED],
    );
    assert.equal(logged.length, 1, logged.join('\n'));
    assert.match(logged[0]!, new RegExp(`^Trace export to ${url} failed \\(.+\\); dropped 1 spans`));
    await exporter.shutdown();
    await provider.shutdown();
  });
});
