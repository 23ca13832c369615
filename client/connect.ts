import os from 'node:os';
import { Client, Connection, type ClientInterceptors, type ConnectionOptions } from '@temporalio/client';
import type { NativeConnectionOptions } from '@temporalio/worker';
import { tracingRequested } from '../common/tracing-environment';
import type { AgentsConfig } from './config';
import { acquireEmbeddedServer } from './embedded-server';
import { AgentsError } from './errors';
import { findTemporalBinary } from './temporal-binary';

/** How long the CLI waits for Temporal to accept its connection. */
const CONNECT_TIMEOUT_S = 10;

/** A client and the connection it owns. */
export interface TemporalSession {
  client: Client;
  connection: Connection;
  namespace: string;
  close(): Promise<void>;
}

/** Connection options of the configured server, in the form a worker's native connection takes. */
export function workerConnectionOptions(config: AgentsConfig): NativeConnectionOptions {
  const { temporal } = config;
  return temporal.kind === 'embedded' ? { address: temporal.address } : temporal.connectionOptions;
}

function clientConnectionOptions(config: AgentsConfig): ConnectionOptions {
  const { temporal } = config;
  if (temporal.kind === 'embedded') return { address: temporal.address };
  const { address, tls, apiKey, metadata } = temporal.connectionOptions;
  return {
    address: address ?? temporal.address,
    ...(tls === undefined ? {} : { tls }),
    ...(apiKey === undefined ? {} : { apiKey }),
    ...(metadata === undefined ? {} : { metadata: metadata }),
  };
}

/**
 * Connects to the configured Temporal. On the embedded default the local dev server is reused or
 * started in the background first; `onServer` hears which.
 */
export async function connectTemporal(
  config: AgentsConfig,
  onServer: (message: string) => void = () => {},
): Promise<TemporalSession> {
  const { temporal } = config;
  const interceptors = cliTracingInterceptors();
  if (temporal.kind === 'embedded') {
    const acquired = await acquireEmbeddedServer({
      binary: () => findTemporalBinary(config.home, temporal.binary),
      server: temporal,
      home: config.home,
      mode: 'background',
      onProgress: onServer,
    });
    const owner = acquired.pid === undefined ? '' : ` (pid ${acquired.pid})`;
    onServer(
      acquired.kind === 'started'
        ? `Started the Temporal dev server in the background${owner}, Web UI http://localhost:${temporal.uiPort}`
        : `Using the Temporal dev server on ${temporal.address}${owner}`,
    );
  }
  let connection: Connection;
  try {
    connection = await Connection.connect({
      ...clientConnectionOptions(config),
      connectTimeout: `${CONNECT_TIMEOUT_S}s`,
    });
  } catch (error) {
    const source = temporal.kind === 'embedded' ? 'the embedded dev server' : 'TEMPORAL_ADDRESS';
    throw new AgentsError(
      'server_failed',
      `Cannot reach Temporal at ${temporal.address} (${source}) within ${CONNECT_TIMEOUT_S} s: ${(error as Error).message}; check the address, that the server runs, and its TLS settings`,
      { cause: error },
    );
  }
  // The identity is recorded on every signal this client sends: the audit shows who decided.
  const client = new Client({
    connection,
    namespace: temporal.namespace,
    identity: cliIdentity(),
    ...(interceptors === undefined ? {} : { interceptors }),
  });
  const close = async () => {
    await connection.close();
    // The command's spans leave before the process exits; a collector that does not answer
    // delays the command by a second at most.
    if (interceptors !== undefined) await tracingModule().currentTracing()?.flush(1_000);
  };
  return { client, connection, namespace: temporal.namespace, close };
}

/**
 * The client's tracing interceptors when an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT): a run started from the CLI is traced from its start. Its
 * settings are checked here; the process's tracing starts with the first traced call.
 */
function cliTracingInterceptors(): ClientInterceptors | undefined {
  if (!tracingRequested(process.env)) return undefined;
  const { checkTracingSettings, clientTracingInterceptors, startTracing } = tracingModule();
  try {
    checkTracingSettings(process.env);
  } catch (error) {
    throw new AgentsError('invalid_environment', (error as Error).message, { cause: error });
  }
  return clientTracingInterceptors(() => {
    startTracing(process.env, 'durable-agents-cli', (message) => process.stderr.write(`${message}\n`));
  });
}

/** The tracing module, loaded only by a command that traces: the others never load it. */
function tracingModule(): typeof import('../worker/tracing') {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded only when tracing is on
  return require('../worker/tracing') as typeof import('../worker/tracing');
}

/** Who the CLI acts as, in the history of every signal it sends: `agents-cli <user>@<host>`. */
export function cliIdentity(): string {
  let user = 'unknown';
  try {
    user = os.userInfo().username;
  } catch {
    // No user entry (some containers): the host still says where the decision came from.
  }
  return `agents-cli ${user}@${os.hostname()}`;
}
