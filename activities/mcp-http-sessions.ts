import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js';
import { fetch as undiciFetch } from 'undici';
import type { McpHttpServer } from '../common/mcp-servers';
import { describeMcpError, McpToolClient, withRequestSignal } from '../common/mcp-tool-session';

/**
 * The worker's connections to Streamable HTTP MCP servers: one MCP session per run and server, so a
 * server's per-session state (subscriptions, a login) is the run's own and never shared between
 * runs. A session is opened on the run's first use of the server, kept across its iterations, and
 * closed after {@link IDLE_CLOSE_MS} without use; a worker that crashes loses its sessions, and the
 * run's next use on any worker opens a new one. The bearer token comes from the worker's own
 * environment, read when a session opens, and goes nowhere but the request's header.
 */

/** A session unused this long is closed; the run's next call opens another. */
const IDLE_CLOSE_MS = 10 * 60 * 1000;
/** Time a server has to answer `initialize`. */
const CONNECT_TIMEOUT_MS = 15_000;
/**
 * Bytes one HTTP response may carry, a stream of events included: a server's answers are cut to
 * far less anyway, and a server that floods must not hold the worker's memory.
 */
export const MCP_HTTP_RESPONSE_MAX_BYTES = 16 * 1024 * 1024;

/** The identity the worker's MCP client announces. */
const CLIENT_INFO = { name: 'durable-agents-worker', version: '0.1.0' };

/** One run's open session with one server. */
export interface McpHttpSession {
  tools: McpToolClient;
  /** False once the connection closed: the next use opens another. */
  readonly alive: boolean;
  close(): Promise<void>;
}

interface HeldSession {
  session: Promise<McpHttpSession>;
  /** The server as it was opened: a run that changes it (new URL) gets a new session. */
  server: McpHttpServer;
  idleTimer: NodeJS.Timeout | undefined;
}

export class McpHttpSessions {
  private readonly sessions = new Map<string, HeldSession>();

  constructor(
    /** Where bearer tokens are read from: the worker's environment. */
    private readonly environment: NodeJS.ProcessEnv = process.env,
  ) {}

  /**
   * The open session of `trajectoryId` with `server`, opening one when there is none, the last one
   * closed, or the server's settings changed. Rejects with one line when it cannot be opened.
   */
  async session(trajectoryId: string, server: McpHttpServer, signal?: AbortSignal): Promise<McpHttpSession> {
    const key = `${trajectoryId}\n${server.name}`;
    const held = this.sessions.get(key);
    if (held !== undefined && sameServer(held.server, server)) {
      const session = await held.session.catch(() => undefined);
      if (session?.alive === true) {
        this.keepFor(key, held);
        return session;
      }
    }
    if (held !== undefined) await this.drop(key, held);
    const opening: HeldSession = { session: this.open(server, signal), server, idleTimer: undefined };
    this.sessions.set(key, opening);
    void opening.session.catch(() => {
      if (this.sessions.get(key) === opening) this.sessions.delete(key);
    });
    this.keepFor(key, opening);
    return opening.session;
  }

  /** Closes the sessions of one run (when it ends), or all of them (when the worker stops). */
  async close(trajectoryId?: string): Promise<void> {
    const closing: Array<Promise<void>> = [];
    for (const [key, held] of this.sessions) {
      if (trajectoryId !== undefined && !key.startsWith(`${trajectoryId}\n`)) continue;
      closing.push(this.drop(key, held));
    }
    await Promise.all(closing);
  }

  private async open(server: McpHttpServer, signal: AbortSignal | undefined): Promise<McpHttpSession> {
    const headers: Record<string, string> = {};
    if (server.bearerTokenEnv !== undefined) {
      const token = this.environment[server.bearerTokenEnv];
      if (token === undefined || token === '') {
        throw new Error(
          `it needs a bearer token from ${server.bearerTokenEnv}, which is not set on this worker`,
        );
      }
      headers.authorization = `Bearer ${token}`;
    }
    const transport = new StreamableHTTPClientTransport(new URL(server.url), {
      requestInit: { headers },
      fetch: boundedFetch,
      // A stream the server drops is not reopened behind the run's back: the next call opens a session.
      reconnectionOptions: {
        maxRetries: 0,
        initialReconnectionDelay: 1000,
        maxReconnectionDelay: 1000,
        reconnectionDelayGrowFactor: 1,
      },
    });
    const client = new Client(CLIENT_INFO, { capabilities: {} });
    let alive = true;
    client.onclose = () => {
      alive = false;
    };
    // Protocol noise (a dropped event stream) is not worth a failure; what ends a call is reported with it.
    client.onerror = () => undefined;
    try {
      await withRequestSignal(signal, (requestSignal) =>
        client.connect(transport, {
          timeout: CONNECT_TIMEOUT_MS,
          ...(requestSignal === undefined ? {} : { signal: requestSignal }),
        }),
      );
    } catch (error) {
      await client.close().catch(() => undefined);
      throw new Error(
        `could not connect: ${describeMcpError(error, 'initialize', CONNECT_TIMEOUT_MS / 1000)}`,
        {
          cause: error,
        },
      );
    }
    return {
      tools: new McpToolClient(server.name, client),
      get alive() {
        return alive;
      },
      close: () => client.close().catch(() => undefined),
    };
  }

  private keepFor(key: string, held: HeldSession): void {
    clearTimeout(held.idleTimer);
    held.idleTimer = setTimeout(() => {
      if (this.sessions.get(key) === held) void this.drop(key, held);
    }, IDLE_CLOSE_MS);
    held.idleTimer.unref();
  }

  private async drop(key: string, held: HeldSession): Promise<void> {
    clearTimeout(held.idleTimer);
    if (this.sessions.get(key) === held) this.sessions.delete(key);
    const session = await held.session.catch(() => undefined);
    await session?.close();
  }
}

/**
 * undici's fetch, its response bodies failing past {@link MCP_HTTP_RESPONSE_MAX_BYTES}: the request
 * under way then fails with one line saying so, and the session's next use opens another.
 */
const boundedFetch: FetchLike = async (url, init) => {
  const response = (await undiciFetch(url, init as Parameters<typeof undiciFetch>[1])) as unknown as Response;
  if (response.body === null) return response;
  let bytes = 0;
  const limit = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      bytes += chunk.byteLength;
      if (bytes > MCP_HTTP_RESPONSE_MAX_BYTES) {
        controller.error(new Error(`its answer was over ${MCP_HTTP_RESPONSE_MAX_BYTES / 1024 / 1024} MiB`));
        return;
      }
      controller.enqueue(chunk);
    },
  });
  return new Response(response.body.pipeThrough(limit), {
    status: response.status,
    statusText: response.statusText,
    headers: response.headers,
  });
};

function sameServer(first: McpHttpServer, second: McpHttpServer): boolean {
  return first.url === second.url && first.bearerTokenEnv === second.bearerTokenEnv;
}
