import path from 'node:path';
import { Client } from '@temporalio/client';
import { NativeConnection, Runtime, Worker, type NativeConnectionOptions } from '@temporalio/worker';
import { log } from '@temporalio/activity';
import { createActivities, type ActivityDependencies } from '../activities';
import { McpHttpSessions } from '../activities/mcp-http-sessions';
import { McpTools } from '../activities/mcp-tools';
import { createDailyLedgerActivities } from '../activities/daily-ledger';
import { createAgentMetrics } from '../activities/metrics';
import { Notifier } from '../activities/notifier';
import { ScriptedModel } from '../models/scripted-model';
import { ToolExecutor, type SandboxEndpoint } from '../activities/tool-executor';
import { ToolServerClient } from '../activities/tool-server-client';
import { TranscriptStore } from '../activities/transcript-store';
import { AnthropicModel } from '../models/anthropic-model';
import { createModelDispatcher } from '../models/http';
import { LocalModel } from '../models/local-model';
import { OpenAIModel } from '../models/openai-model';
import type { ModelProvider, ModelProviders } from '../models/model-provider';
import { TASK_QUEUE } from '../common/constants';
import type { McpServer } from '../common/mcp-servers';
import { clientTracingInterceptors, startTracing, workerTracingOptions } from './tracing';
import { loadWorkflowBundle } from './workflow-bundle';

/** Every model provider this worker offers; local models are looked up in `$AGENTS_HOME/models`. */
export function createModelProviders(home: string): ModelProviders {
  // One connection pool for every remote model call of this worker.
  const dispatcher = createModelDispatcher();
  return new Map<string, ModelProvider>([
    ['scripted', new ScriptedModel()],
    ['openai', new OpenAIModel({ dispatcher })],
    ['anthropic', new AnthropicModel({ dispatcher })],
    ['local', new LocalModel({ modelsFolder: path.join(home, 'models') })],
  ]);
}

/** Frees what the providers hold: loaded local models, open connections. */
export async function closeModelProviders(models: ModelProviders): Promise<void> {
  await Promise.all([...models.values()].map(async (provider) => provider.close?.()));
}

/**
 * The real dependencies of the activities, rooted in `$AGENTS_HOME`; tool calls go to the given
 * sandbox servers, and fail with a clear result when there are none.
 */
export function createActivityDependencies(
  home: string,
  sandboxes: SandboxEndpoint[] = [],
  toolServer?: { url: string; token: string },
  mcpServers: McpServer[] = [],
): ActivityDependencies {
  const tools = sandboxes.length === 0 ? undefined : new ToolExecutor({ endpoints: sandboxes });
  return {
    models: createModelProviders(home),
    transcripts: new TranscriptStore(path.join(home, 'transcripts')),
    notifier: new Notifier({
      home,
      log: (level, message, fields) => {
        Runtime.instance().logger[level](message, fields);
      },
    }),
    ...(tools === undefined ? {} : { tools }),
    ...(toolServer === undefined ? {} : { externalTools: new ToolServerClient(toolServer) }),
    mcp: new McpTools({
      workerServers: mcpServers,
      http: new McpHttpSessions(),
      sandbox: tools,
      warn: (message) => {
        log.warn(message);
      },
    }),
    // A no-op unless the Runtime was installed with a metrics exporter (AGENTS_METRICS).
    metrics: createAgentMetrics(() => Runtime.instance().metricMeter),
  };
}

/** Closes what `createActivityDependencies` opened. */
export async function closeActivityDependencies(dependencies: ActivityDependencies): Promise<void> {
  await dependencies.mcp?.close();
  await dependencies.tools?.close();
  await dependencies.externalTools?.close();
  await dependencies.notifier.close();
  await closeModelProviders(dependencies.models);
}

export interface AgentsWorkerOptions {
  connectionOptions: NativeConnectionOptions;
  namespace: string;
  home: string;
  identity?: string;
  /** The sandbox servers for tool calls. */
  sandboxes?: SandboxEndpoint[];
  /** The external tool server for other tools. */
  toolServer?: { url: string; token: string };
  /** The MCP servers every run on this worker has (`AGENTS_MCP_SERVERS`). */
  mcpServers?: McpServer[];
  /** Overrides the activities' dependencies (tests). */
  dependencies?: ActivityDependencies;
}

/** A worker of task queue `agents` with its own connection, to run and then close. */
export interface AgentsWorker {
  worker: Worker;
  connection: NativeConnection;
  /** Runs until `worker.shutdown()`, then closes the connection. */
  run(): Promise<void>;
}

/** Creates the agents worker: the `agentRun` workflow and its activities on task queue `agents`. */
export async function createAgentsWorker(options: AgentsWorkerOptions): Promise<AgentsWorker> {
  // Traces go out only when an OTLP endpoint is set; a bad setting fails here, before connecting.
  const tracing = startTracing(process.env, 'durable-agents-worker', (message) => {
    Runtime.instance().logger.warn(message);
  });
  const connection = await NativeConnection.connect(options.connectionOptions);
  const given =
    options.dependencies ??
    createActivityDependencies(options.home, options.sandboxes, options.toolServer, options.mcpServers);
  // The daily ledgers are workflows of the same namespace, reached over the worker's own connection.
  const client = new Client({
    connection,
    namespace: options.namespace,
    ...(tracing === undefined ? {} : { interceptors: clientTracingInterceptors() }),
  });
  const dependencies: ActivityDependencies = {
    ...given,
    ledger: given.ledger ?? createDailyLedgerActivities(() => client),
  };
  try {
    const worker = await Worker.create({
      connection,
      namespace: options.namespace,
      taskQueue: TASK_QUEUE,
      workflowBundle: await loadWorkflowBundle(path.join(options.home, 'cache'), {
        traced: tracing !== undefined,
      }),
      activities: createActivities(dependencies),
      ...(tracing === undefined ? {} : workerTracingOptions(tracing)),
      shutdownGraceTime: '5s',
      // A stop reaches a streaming model turn in the answer to its next heartbeat; sent at most each
      // second (not 0.8 × the heartbeat timeout), the turn hangs up, and reports its tokens, within ~1 s.
      maxHeartbeatThrottleInterval: '1s',
      ...(options.identity === undefined ? {} : { identity: options.identity }),
    });
    return {
      worker,
      connection,
      async run() {
        // The tool executor's counters and latency histogram, in the worker's log every 5 minutes
        // when tools were called, and once more at shutdown.
        let reportedCalls = 0;
        const reportTools = () => {
          const stats = dependencies.tools?.stats();
          if (stats === undefined || stats.calls === reportedCalls) return;
          reportedCalls = stats.calls;
          Runtime.instance().logger.info('Tool executor', { ...stats });
        };
        const reporter = setInterval(reportTools, 5 * 60_000).unref();
        try {
          await worker.run();
        } finally {
          clearInterval(reporter);
          reportTools();
          // Dependencies passed in belong to the caller, who closes them.
          if (options.dependencies === undefined) await closeActivityDependencies(dependencies);
          await connection.close();
          await tracing?.flush();
        }
      },
    };
  } catch (error) {
    await connection.close();
    throw error;
  }
}
