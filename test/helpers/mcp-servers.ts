import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { request } from 'undici';
import { stopProcess } from './processes';
import { freePort } from './temporal-server';
import { waitFor } from './wait';

/** The packages of the reference MCP servers the tests run for real. */
export const MCP_PACKAGES = path.resolve(__dirname, '..', '..', 'node_modules', '@modelcontextprotocol');

/** What the relay in front of an MCP server saw: each JSON-RPC request's method and tool. */
export interface RelayedRequest {
  authorization: string | undefined;
  method: string | undefined;
  tool: string | undefined;
}

/**
 * `@modelcontextprotocol/server-everything` over Streamable HTTP, as its own process, behind a
 * relay that requires a bearer token (the reference server takes none) and records each request,
 * so a test can tell what reached the server and with which header.
 */
export interface EverythingServer {
  /** The relay's MCP endpoint, what a run names. */
  url: string;
  token: string;
  seen: RelayedRequest[];
  /** Calls of `tool` that reached the server. */
  callsOf(tool: string): number;
  /** Stops the server behind the relay (the relay stays, answering 502). */
  stopServer(): Promise<void>;
  close(): Promise<void>;
}

export async function startEverythingServer(token: string): Promise<EverythingServer> {
  const port = await freePort();
  const child: ChildProcess = spawn(
    process.execPath,
    [path.join(MCP_PACKAGES, 'server-everything', 'dist', 'index.js'), 'streamableHttp'],
    { env: { PATH: process.env.PATH, PORT: String(port) }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  child.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
  await waitFor(`server-everything listening on ${port}`, () => {
    if (child.exitCode !== null) throw new Error(`server-everything exited: ${log}`);
    return log.includes(`listening on port ${port}`);
  });
  const seen: RelayedRequest[] = [];
  const relay: Server = createServer((incoming, outgoing) => {
    void (async () => {
      let answer;
      try {
        answer = await relayRequest(incoming, port, token, seen);
      } catch {
        outgoing.writeHead(502).end();
        return;
      }
      outgoing.writeHead(answer.statusCode, answer.headers);
      if (Buffer.isBuffer(answer.body)) return outgoing.end(answer.body);
      try {
        for await (const chunk of answer.body) outgoing.write(chunk);
        outgoing.end();
      } catch {
        // The server went away mid-stream: so does the relayed stream.
        outgoing.destroy();
      }
    })();
  });
  relay.listen(0, '127.0.0.1');
  await once(relay, 'listening');
  const relayPort = (relay.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${relayPort}/mcp`,
    token,
    seen,
    callsOf: (tool) => seen.filter((entry) => entry.method === 'tools/call' && entry.tool === tool).length,
    stopServer: () => stopProcess(child, 'SIGTERM'),
    async close() {
      await stopProcess(child, 'SIGTERM');
      relay.closeAllConnections();
      relay.close();
    },
  };
}

/** One request through the relay: refused without the token, else forwarded as it came. */
async function relayRequest(
  incoming: IncomingMessage,
  port: number,
  token: string,
  seen: RelayedRequest[],
): Promise<{ statusCode: number; headers: Record<string, string>; body: Buffer | AsyncIterable<Buffer> }> {
  const chunks: Buffer[] = [];
  for await (const chunk of incoming) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  let message: { method?: string; params?: { name?: string } } = {};
  try {
    message = JSON.parse(body.toString('utf8')) as typeof message;
  } catch {
    // A GET (the server's event stream) or a DELETE carries no JSON.
  }
  seen.push({
    authorization: incoming.headers.authorization,
    method: message.method,
    tool: message.params?.name,
  });
  if (incoming.headers.authorization !== `Bearer ${token}`) {
    const refusal = Buffer.from('{"error":"unauthorized"}');
    return { statusCode: 401, headers: { 'content-type': 'application/json' }, body: refusal };
  }
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(incoming.headers)) {
    if (
      typeof value === 'string' &&
      !['host', 'connection', 'content-length', 'authorization'].includes(name)
    ) {
      headers[name] = value;
    }
  }
  const answer = await request(`http://127.0.0.1:${port}${incoming.url ?? '/'}`, {
    method: (incoming.method ?? 'GET') as 'GET',
    headers,
    ...(body.length === 0 ? {} : { body }),
  });
  const answerHeaders: Record<string, string> = {};
  for (const [name, value] of Object.entries(answer.headers)) {
    if (typeof value === 'string' && !['connection', 'transfer-encoding', 'keep-alive'].includes(name)) {
      answerHeaders[name] = value;
    }
  }
  return { statusCode: answer.statusCode, headers: answerHeaders, body: answer.body };
}
