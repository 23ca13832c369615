import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { IllegalStateError } from '@temporalio/common';
import { Runtime, TransportError, type LogLevel } from '@temporalio/worker';
import { TASK_QUEUE } from '../../common/constants';
import { loadOrCreateToken } from '../../sandbox/token';
import { isStdioServer } from '../../common/mcp-servers';
import { createAgentsWorker } from '../../worker/create-worker';
import {
  metricsAddressFromEnvironment,
  prometheusTelemetry,
  type MetricsAddress,
} from '../../worker/metrics';
import { createWorkerLogger } from '../../worker/worker-logger';
import type { AgentsConfig } from '../config';
import { connectTemporal, workerConnectionOptions } from '../connect';
import {
  acquireEmbeddedServer,
  ensureSearchAttributes,
  isPortListening,
  isServerUp,
  serverFiles,
  stopEmbeddedServer,
} from '../embedded-server';
import { AgentsError } from '../errors';
import { processListeningOn } from '../local-processes';
import { findTemporalBinary } from '../temporal-binary';
import { printNews, withClient, type CommandContext } from './command-context';
import { waitForSearchAttributesServed } from '../search-attributes-served';
import { configuredSandboxes, startLocalSandbox } from './sandbox';
import { toolServerTokenFile } from './tool-server';

/** The commands that run the infrastructure: `server`, `setup`, `worker` and `dev`. */

/**
 * Installs the SDK runtime with a logger at `level`, one line per entry, once per process; with
 * `metrics`, its Prometheus exporter serves the SDK's and the agents' metrics there.
 */
export function installRuntime(level: LogLevel, metrics?: MetricsAddress): void {
  try {
    Runtime.install({
      logger: createWorkerLogger(level),
      ...(metrics === undefined ? {} : { telemetryOptions: prometheusTelemetry(metrics) }),
    });
  } catch (error) {
    // Already installed by an earlier command in this process.
    if (error instanceof IllegalStateError) return;
    throw new AgentsError(
      'invalid_environment',
      `AGENTS_METRICS=${metrics?.bindAddress}: cannot serve metrics there (${(error as Error).message})`,
      { cause: error },
    );
  }
}

/** `AGENTS_METRICS`: where a worker serves its Prometheus metrics, or nowhere when unset. */
function configuredMetrics(): MetricsAddress | undefined {
  const parsed = metricsAddressFromEnvironment();
  if ('problem' in parsed) throw new AgentsError('invalid_environment', parsed.problem);
  return parsed.address;
}

/** `agents setup`: registers the search attributes on the configured server. */
export async function setupCommand(context: CommandContext): Promise<void> {
  await withClient(context, async (_agents, session) => {
    const added = await ensureSearchAttributes(session.connection, session.namespace);
    await waitForSearchAttributesServed(session.connection, session.namespace, printNews);
    context.print(
      added.length === 0
        ? `Search attributes already registered in namespace ${session.namespace}.`
        : `Registered search attributes in namespace ${session.namespace}: ${added.join(', ')}`,
    );
  });
}

/** `agents worker`: polls task queue `agents` until Ctrl-C or SIGTERM. */
export async function workerCommand(context: CommandContext): Promise<void> {
  const metrics = configuredMetrics();
  installRuntime('INFO', metrics);
  if (metrics !== undefined) context.print(`Metrics on http://${metrics.bindAddress}/metrics`);
  if (context.config.temporal.kind === 'embedded') {
    await connectTemporal(context.config, (message) => context.print(message)).then((session) =>
      session.close(),
    );
  }
  const sandboxes = await configuredSandboxes(context.config);
  if (sandboxes.length === 0) {
    context.print(
      'No sandbox servers configured (AGENTS_SANDBOX_URLS): tool calls will fail with a clear result.',
    );
  }
  const toolServer = await configuredToolServer(context.config);
  const { temporal } = context.config;
  const create = () =>
    createAgentsWorker({
      connectionOptions: workerConnectionOptions(context.config),
      namespace: temporal.namespace,
      home: context.config.home,
      identity: `agents-worker-${process.pid}@${os.hostname()}`,
      sandboxes,
      toolServer,
      mcpServers: context.config.mcpServers,
    });
  printMcpServers(context);
  const agentsWorker =
    temporal.kind === 'external'
      ? await whenClusterAnswers(temporal.address, temporal.workerConnectTimeoutS, create, context.print)
      : await create();
  context.print(`Worker polling task queue '${TASK_QUEUE}' on ${temporal.address} (Ctrl-C stops it)`);
  await agentsWorker.run();
}

/** One line naming the worker's own MCP servers and where each runs, when it has any. */
function printMcpServers(context: CommandContext): void {
  const servers = context.config.mcpServers;
  if (servers.length === 0) return;
  const described = servers.map((server) =>
    isStdioServer(server)
      ? `${server.name} (stdio, in each run's sandbox)`
      : `${server.name} (${server.url})`,
  );
  context.print(`MCP servers of every run: ${described.join(', ')}`);
}

/** How often a worker waiting for its cluster says it still waits. */
const STILL_WAITING_EVERY_MS = 60_000;

/**
 * Runs `create` again while the cluster at `address` does not answer or does not serve the
 * namespace yet, with backoff: a worker started before its cluster (a machine booting, compose
 * starting services in any order) waits for it, as compose's `restart:` would, saying so at the
 * first failure and then once a minute, and fails only after `timeoutS` (0 waits for ever).
 */
async function whenClusterAnswers<T>(
  address: string,
  timeoutS: number,
  create: () => Promise<T>,
  print: (line: string) => void,
): Promise<T> {
  const startedMs = Date.now();
  let toldMs: number | undefined;
  for (let delayMs = 1_000; ; delayMs = Math.min(delayMs * 2, 15_000)) {
    try {
      return await create();
    } catch (error) {
      const waiting = error instanceof TransportError || /namespace .* (is )?not found/i.test(String(error));
      const waitedMs = Date.now() - startedMs;
      if (!waiting) throw error;
      if (timeoutS > 0 && waitedMs + delayMs > timeoutS * 1000) {
        throw new AgentsError(
          'server_unreachable',
          `Temporal at ${address} did not answer within ${timeoutS} s (AGENTS_WORKER_CONNECT_TIMEOUT_S): ${firstLine(error)}`,
          { cause: error },
        );
      }
      if (toldMs === undefined) {
        const limit = timeoutS === 0 ? 'until it does' : `for up to ${timeoutS} s`;
        print(`Waiting for Temporal at ${address} (${firstLine(error)}): retrying ${limit}`);
        toldMs = Date.now();
      } else if (Date.now() - toldMs >= STILL_WAITING_EVERY_MS) {
        print(`Still waiting for Temporal at ${address}, ${Math.round(waitedMs / 1000)} s so far`);
        toldMs = Date.now();
      }
      await sleep(delayMs);
    }
  }
}

/** The first line of an error's message, for a one-line report. */
function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
}

/** `agents server [start|stop|status]`: the embedded dev server, in the foreground by default. */
export async function serverCommand(context: CommandContext): Promise<void> {
  const { temporal } = context.config;
  if (temporal.kind !== 'embedded') {
    throw new AgentsError(
      'invalid_argument',
      `TEMPORAL_ADDRESS is set (${temporal.address}): there is no embedded server to manage`,
    );
  }
  const action = context.positionals[0] ?? 'run';
  const { home } = context.config;
  switch (action) {
    case 'status': {
      const running = await isServerUp(temporal.address, 5_000);
      const pid = running ? await processListeningOn(temporal.port) : undefined;
      context.print(
        running
          ? `Temporal dev server answers on ${temporal.address}${pid === undefined ? '' : ` (pid ${pid})`}, Web UI http://localhost:${temporal.uiPort}`
          : `No Temporal server on ${temporal.address}`,
      );
      return;
    }
    case 'stop': {
      const outcome = await stopEmbeddedServer(home);
      if (outcome.stopped) {
        context.print(`Stopped the background Temporal dev server (pid ${outcome.pid}).`);
        return;
      }
      // A server in the foreground of `agents dev` or `agents server` is its terminal's to stop.
      const listener = (await isPortListening(temporal.address))
        ? await processListeningOn(temporal.port)
        : undefined;
      context.print(
        listener === undefined
          ? `No embedded server was running in the background (${outcome.reason}): nothing was stopped.`
          : `Nothing was stopped: the server on ${temporal.address} (pid ${listener}) was not started in the background (${outcome.reason}); stop it where it runs, with Ctrl-C.`,
      );
      return;
    }
    case 'start':
    case 'run': {
      const mode = action === 'start' ? 'background' : 'foreground';
      const acquired = await acquireEmbeddedServer({
        binary: () => findTemporalBinary(home, temporal.binary),
        server: temporal,
        home,
        mode,
        inheritOutput: mode === 'foreground',
        onProgress: () => {},
      });
      if (acquired.kind === 'reused') {
        const owner = acquired.pid === undefined ? '' : ` (pid ${acquired.pid})`;
        context.print(
          `A Temporal server already answers on ${temporal.address}${owner}: nothing was started.`,
        );
        return;
      }
      const { child } = acquired;
      context.print(
        `Temporal dev server on ${temporal.address}${acquired.pid === undefined ? '' : ` (pid ${acquired.pid})`}, Web UI http://localhost:${temporal.uiPort}, data ${serverFiles(home).database}`,
      );
      if (mode === 'background') return;
      const forward = () => child.kill('SIGTERM');
      process.once('SIGINT', forward).once('SIGTERM', forward);
      await once(child, 'exit');
      return;
    }
    default:
      throw new AgentsError(
        'invalid_argument',
        `Unknown server action '${action}'. Accepted: start, stop, status (none runs it in the foreground)`,
      );
  }
}

/** The external tool server workers use: `AGENTS_TOOL_SERVER_URL` with its token, or none. */
async function configuredToolServer(
  config: AgentsConfig,
): Promise<{ url: string; token: string } | undefined> {
  const { url, token } = config.toolServer;
  if (url === undefined) return undefined;
  return { url, token: await loadOrCreateToken(toolServerTokenFile(config.home), token) };
}

/** `agents dev`: the embedded server and a worker in the foreground; Ctrl-C stops both. */
export async function devCommand(context: CommandContext): Promise<void> {
  const { temporal } = context.config;
  const metrics = configuredMetrics();
  installRuntime('INFO', metrics);
  if (metrics !== undefined) context.print(`Metrics on http://${metrics.bindAddress}/metrics`);
  let server: ChildProcess | undefined;
  if (temporal.kind === 'embedded') {
    // Under the server lock: a dev and commands started at once share one server.
    const acquired = await acquireEmbeddedServer({
      binary: () => findTemporalBinary(context.config.home, temporal.binary),
      server: temporal,
      home: context.config.home,
      mode: 'foreground',
      onProgress: () => {},
    });
    const owner = acquired.pid === undefined ? '' : ` (pid ${acquired.pid})`;
    if (acquired.kind === 'started') {
      server = acquired.child;
      context.print(
        `Temporal dev server on ${temporal.address}${owner}, Web UI http://localhost:${temporal.uiPort} (log ${serverFiles(context.config.home).logFile})`,
      );
    } else {
      context.print(
        `Reusing the Temporal dev server already running on ${temporal.address}${owner}: Ctrl-C stops this worker and leaves that server running`,
      );
    }
  } else {
    await connectTemporal(context.config, (message) => context.print(message)).then((session) =>
      session.close(),
    );
  }
  let sandboxes = await configuredSandboxes(context.config);
  const localSandbox =
    sandboxes.length === 0 ? await startLocalSandbox(context, context.config.sandbox.port) : undefined;
  if (localSandbox !== undefined) {
    sandboxes = [localSandbox.endpoint];
    context.print(`Sandbox server on ${localSandbox.endpoint.url} (bubblewrap)`);
  }
  try {
    const agentsWorker = await createAgentsWorker({
      connectionOptions: workerConnectionOptions(context.config),
      namespace: temporal.namespace,
      home: context.config.home,
      sandboxes,
      toolServer: await configuredToolServer(context.config),
      mcpServers: context.config.mcpServers,
    });
    printMcpServers(context);
    context.print(
      `Worker polling task queue '${TASK_QUEUE}'. Start agents from another terminal; Ctrl-C stops.`,
    );
    await agentsWorker.run();
  } finally {
    await localSandbox?.server.close();
    if (server !== undefined && server.exitCode === null) {
      server.kill('SIGTERM');
      await once(server, 'exit');
    }
  }
}
