import os from 'node:os';
import { Client, Connection, type ConnectionOptions } from '@temporalio/client';
import type { NativeConnectionOptions } from '@temporalio/worker';
import type { AgentsConfig } from './config';
import { ensureEmbeddedServer } from './embedded-server';
import { findTemporalBinary } from './temporal-binary';

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
  if (temporal.kind === 'embedded') {
    const outcome = await ensureEmbeddedServer(
      () => findTemporalBinary(config.home, temporal.binary),
      temporal,
      config.home,
      onServer,
    );
    onServer(
      outcome === 'started'
        ? `Started the Temporal dev server in the background (Web UI http://localhost:${temporal.uiPort})`
        : `Using the Temporal dev server on ${temporal.address}`,
    );
  }
  const connection = await Connection.connect(clientConnectionOptions(config));
  // The identity is recorded on every signal this client sends: the audit shows who decided.
  const client = new Client({ connection, namespace: temporal.namespace, identity: cliIdentity() });
  return { client, connection, namespace: temporal.namespace, close: () => connection.close() };
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
