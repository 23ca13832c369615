import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import type { AgentsConfig, EmbeddedTemporal } from '../../client/config';
import { startDevServer } from '../../client/embedded-server';
import { DEFAULT_SANDBOX_PORT, loadConfig } from '../../client/config';
import { ensureTemporalBinary } from '../../client/temporal-binary';
import { DEFAULT_SANDBOX_TOTALS } from '../../sandbox/sandbox-watchdog';
import { DEFAULT_WORKSPACE_LIMIT_BYTES } from '../../common/constants';

/** A port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** A real Temporal dev server of its own, on free ports, with its own `$AGENTS_HOME`. */
export interface TestTemporal {
  home: string;
  config: AgentsConfig & { temporal: EmbeddedTemporal };
  client: Client;
  connection: Connection;
  /** Environment for a child `agents` process that should reuse this server. */
  environment: NodeJS.ProcessEnv;
  /** Stops the server process (SIGKILL when `crash`) without removing its files. */
  stopServer(options?: { crash?: boolean }): Promise<void>;
  /** Starts the server again on the same database and ports. */
  restartServer(): Promise<void>;
  close(): Promise<void>;
}

/**
 * The `temporal` binary for tests: `TEMPORAL_CLI`, `PATH`, or the pinned one installed once into
 * the user's `$AGENTS_HOME/tools`, so `npm cit` passes on a machine that lacks it.
 */
export async function testTemporalBinary(): Promise<string> {
  const explicit = process.env.TEMPORAL_CLI === '' ? undefined : process.env.TEMPORAL_CLI;
  return ensureTemporalBinary(loadConfig({ ...process.env, TEMPORAL_ADDRESS: '' }).home, explicit, (line) =>
    process.stderr.write(`${line}\n`),
  );
}

let runtimeInstalled = false;

/** Keeps the SDK's logging out of the test output, where failures are often the point; errors still show. */
export function quietRuntime(): void {
  if (runtimeInstalled) return;
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  runtimeInstalled = true;
}

/** Attempts at starting a test server before a port taken by another process counts as a failure. */
const SERVER_START_ATTEMPTS = 3;

/**
 * Starts a dev server on free ports, again on other ones when a port was taken meanwhile: the
 * server picks its HTTP API port itself, and on a busy machine another server can take the same
 * one, or one of ours, between the check and the bind.
 */
async function startOnFreePorts(
  startOn: (temporal: EmbeddedTemporal) => Promise<ChildProcess>,
): Promise<{ temporal: EmbeddedTemporal; server: ChildProcess }> {
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    const uiPort = await freePort();
    const temporal: EmbeddedTemporal = {
      kind: 'embedded',
      address: `127.0.0.1:${port}`,
      port,
      uiPort,
      namespace: 'default',
      binary: process.env.TEMPORAL_CLI,
    };
    try {
      return { temporal, server: await startOn(temporal) };
    } catch (error) {
      const portTaken = error instanceof Error && error.message.includes('address already in use');
      if (!portTaken || attempt === SERVER_START_ATTEMPTS) throw error;
    }
  }
}

/**
 * Starts `temporal server start-dev` through the same code the CLI uses for the embedded default,
 * persisting to a temporary `$AGENTS_HOME/temporal.db`.
 */
export async function startTestTemporal(
  options: { dynamicConfig?: Record<string, string | number> } = {},
): Promise<TestTemporal> {
  quietRuntime();
  const home = await mkdtemp(path.join(os.tmpdir(), 'agents-test-'));
  const binary = await testTemporalBinary();
  const extraArguments = Object.entries(options.dynamicConfig ?? {}).flatMap(([key, value]) => [
    '--dynamic-config-value',
    `${key}=${value}`,
  ]);
  const startOn = (temporal: EmbeddedTemporal) =>
    startDevServer({ binary, server: temporal, home, mode: 'foreground', extraArguments });
  const started = await startOnFreePorts(startOn);
  const { temporal } = started;
  let { server } = started;
  const { port, uiPort } = temporal;
  const config = {
    home,
    temporal,
    sandbox: {
      urls: [],
      token: undefined,
      port: DEFAULT_SANDBOX_PORT,
      root: path.join(home, 'sandbox'),
      totals: DEFAULT_SANDBOX_TOTALS,
    },
    toolServer: { url: undefined, token: undefined },
    workspaceLimitBytes: DEFAULT_WORKSPACE_LIMIT_BYTES,
    mcpServers: [],
  };
  const connection = await Connection.connect({ address: temporal.address });
  const client = new Client({ connection, namespace: temporal.namespace });
  const stopServer = async (options: { crash?: boolean } = {}) => {
    if (server.exitCode !== null || server.signalCode !== null) return;
    server.kill(options.crash === true ? 'SIGKILL' : 'SIGTERM');
    await once(server, 'exit');
  };
  return {
    home,
    config,
    client,
    connection,
    environment: {
      ...process.env,
      AGENTS_HOME: home,
      AGENTS_TEMPORAL_PORT: String(port),
      AGENTS_UI_PORT: String(uiPort),
      TEMPORAL_ADDRESS: '',
    },
    stopServer,
    async restartServer() {
      server = await startOn(temporal);
    },
    async close() {
      await connection.close();
      await stopServer();
      await rm(home, { recursive: true, force: true });
    },
  };
}
