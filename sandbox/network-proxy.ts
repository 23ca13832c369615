import { randomBytes } from 'node:crypto';
import { accessSync, constants, rmSync } from 'node:fs';
import { chmod, lchown, mkdir, mkdtemp, rm } from 'node:fs/promises';
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { connect, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { hostMatchesPattern } from '../common/host-patterns';
import {
  addressPolicy,
  vettedLookup,
  type AddressPolicy,
  type AddressPolicyOptions,
  type HostResolver,
} from './network-addresses';
import { SandboxError, type SandboxPolicy, type ToolResult } from './tool-call';

/**
 * The only way out of a sandbox with the network on. Every command runs in a network namespace of
 * its own (bwrap `--unshare-net`), where nothing but loopback exists; with the network on, the
 * sandbox gets a Unix socket of a {@link NetworkProxy} bound in at {@link SANDBOX_PROXY_SOCKET}, and
 * a relay inside it (socat, see `bubblewrap.ts`) turns `127.0.0.1:3128` into that socket, which
 * `HTTP_PROXY` and `HTTPS_PROXY` name. The proxy takes `CONNECT host:port` (a tunnel, for HTTPS and
 * anything else) and plain HTTP requests in absolute form (`GET http://host/path`), checks the
 * destination against the run's allow list, resolves it once, vets every address it resolves to
 * (`network-addresses.ts`) and connects to the vetted address: no rebinding between the check and
 * the connection. A refusal answers 403 with one line and is kept, so the tool result says it.
 *
 * One proxy per sandbox instance (a `bash` call, a stateful session), bound to that instance's
 * policy, so the proxy always knows whose connection it serves, and closed with it.
 */

/** Where the proxy's socket folder is bound inside the sandbox. */
export const SANDBOX_PROXY_FOLDER = '/run/agents-network';

/** The proxy's socket as the sandbox sees it. */
export const SANDBOX_PROXY_SOCKET = `${SANDBOX_PROXY_FOLDER}/proxy.sock`;

/** Where the relay inside the sandbox listens: what `HTTP_PROXY` names. */
export const SANDBOX_PROXY_PORT = 3128;

/** The proxy as a URL for the environment of sandboxed commands. */
export const SANDBOX_PROXY_URL = `http://127.0.0.1:${SANDBOX_PROXY_PORT}`;

/** Time a destination has to accept a connection. */
const CONNECT_TIMEOUT_MS = 10_000;

/** Time a client has to send a request's headers. */
const HEADERS_TIMEOUT_MS = 10_000;

/** Largest request head accepted, in bytes. */
const MAX_HEADER_BYTES = 16 * 1024;

/** Longest path a Unix socket may have on Linux (sun_path less its final NUL). */
const MAX_SOCKET_PATH_BYTES = 107;

/** Refusals kept per proxy for the tool result; the same refusal repeated is kept once. */
const MAX_RECORDED_REFUSALS = 20;

/** Allow-list patterns quoted in a refusal before "…". */
const QUOTED_PATTERNS = 10;

/** The first words of every refusal the proxy answers. */
export const REFUSAL_PREFIX = "Blocked by the sandbox's network policy";

/** Headers that belong to one hop and are never forwarded. */
const HOP_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** The network part of a run's policy when it is on. */
export type NetworkAccess = Exclude<SandboxPolicy['network'], false>;

/** Whether a policy gives commands the network (through the proxy). */
export function networkEnabled(policy: SandboxPolicy): policy is SandboxPolicy & { network: NetworkAccess } {
  return policy.network !== false;
}

/** The sandbox server's network settings. */
export interface NetworkEgressOptions extends AddressPolicyOptions {
  /** Folder for the proxies' socket folders; it is emptied when {@link NetworkEgress.prepare} runs. */
  folder: string;
  /** Host user to give each socket folder to (the sandbox's user when the server is root). */
  owner?: { uid: number; gid: number };
}

/**
 * A server's way out for its sandboxes: the address policy (with the operator's `allowCidrs`) and
 * the folder holding one socket folder per running proxy. Made once per server; its
 * {@link NetworkEgress.open} starts the proxy of one sandbox instance.
 */
export class NetworkEgress {
  readonly addresses: AddressPolicy;
  private prepared: Promise<void> | undefined;

  /** Throws a {@link SandboxError} when an `allowCidrs` entry is not a CIDR range. */
  constructor(private readonly options: NetworkEgressOptions) {
    this.addresses = addressPolicy(options);
  }

  /**
   * Empties and creates the folder (mode 0711: others may pass through to a socket folder whose
   * random name they know, never list them). Safe to call again; {@link open} calls it once.
   */
  prepare(): Promise<void> {
    this.prepared ??= (async () => {
      await rm(this.options.folder, { recursive: true, force: true });
      await mkdir(this.options.folder, { recursive: true, mode: 0o711 });
      await chmod(this.options.folder, 0o711);
    })();
    return this.prepared;
  }

  /**
   * Starts the proxy of one sandbox instance with the given access. Throws a {@link SandboxError}
   * when the relay the sandbox needs (socat) is missing, or the socket cannot be made.
   */
  async open(access: NetworkAccess): Promise<NetworkProxy> {
    if (findRelay() === undefined) throw new SandboxError(RELAY_MISSING);
    await this.prepare();
    const folder = path.join(this.options.folder, randomBytes(16).toString('hex'));
    const socketBytes = Buffer.byteLength(path.join(folder, 'proxy.sock'));
    if (socketBytes > MAX_SOCKET_PATH_BYTES) {
      throw new SandboxError(
        `The network proxy's socket path would be ${socketBytes} bytes, over the ${MAX_SOCKET_PATH_BYTES} a Unix socket allows: choose a shorter sandbox root (AGENTS_SANDBOX_ROOT)`,
      );
    }
    await mkdir(folder, { mode: 0o700 });
    try {
      const proxy = new NetworkProxy(folder, access, this.addresses);
      await proxy.listen();
      if (this.options.owner !== undefined) {
        await lchown(folder, this.options.owner.uid, this.options.owner.gid);
        await lchown(proxy.socketPath, this.options.owner.uid, this.options.owner.gid);
      }
      return proxy;
    } catch (error) {
      await rm(folder, { recursive: true, force: true });
      if (error instanceof SandboxError) throw error;
      throw new SandboxError(`Cannot start the network proxy: ${(error as Error).message}`, { cause: error });
    }
  }
}

/**
 * The egress of a sandbox server whose root folder is `root`: socket folders under `<root>/network`,
 * given to `owner` (the sandbox's host user when the server is root, see `sandboxHostIdentity`).
 */
export function serverNetworkEgress(
  root: string,
  settings: AddressPolicyOptions & { owner?: { uid: number; gid: number } | undefined },
): NetworkEgress {
  const { owner, ...addresses } = settings;
  return new NetworkEgress({ folder: path.join(root, 'network'), ...addresses, ...(owner ? { owner } : {}) });
}

let defaultEgress: Promise<NetworkEgress> | undefined;

/**
 * The egress of commands run outside a sandbox server (direct callers of the tools, benchmarks):
 * no `allowCidrs`, socket folders in a folder of its own under the system's temporary folder.
 */
export function defaultNetworkEgress(owner?: { uid: number; gid: number }): Promise<NetworkEgress> {
  defaultEgress ??= (async () => {
    const folder = await mkdtemp(path.join(os.tmpdir(), 'agents-network-'));
    // Its proxies remove their own folders; this one goes with the process.
    process.once('exit', () => rmSync(folder, { recursive: true, force: true }));
    await chmod(folder, 0o711);
    const egress = new NetworkEgress({ folder: path.join(folder, 'proxies'), ...(owner ? { owner } : {}) });
    await egress.prepare();
    return egress;
  })();
  return defaultEgress;
}

const RELAY_MISSING =
  'The network needs socat inside the sandbox (under /usr), and it is not installed: install it (Debian: apt-get install socat) or run with network: false';

/** Where the relay can live: folders of the host's /usr, which every sandbox sees read-only. */
const RELAY_CANDIDATES = ['/usr/bin/socat', '/usr/local/bin/socat'];

let relayCache: string | null | undefined;

/**
 * The path of socat, the relay each sandbox with the network runs, or undefined when it is
 * missing; a server checks it at start to say so at once, a call with the network fails with
 * {@link RELAY_MISSING}.
 */
export function findRelay(): string | undefined {
  if (relayCache === undefined) {
    relayCache =
      RELAY_CANDIDATES.find((candidate) => {
        try {
          accessSync(candidate, constants.X_OK);
          return true;
        } catch {
          return false;
        }
      }) ?? null;
  }
  return relayCache ?? undefined;
}

/** The relay is missing: the one-line reason, for a server to print at start. */
export function relayProblem(): string | undefined {
  return findRelay() === undefined ? RELAY_MISSING : undefined;
}

/**
 * A command's result with the connections its proxy refused: `metadata.networkRefused` and one
 * `[network] refused: …` line each at the end of the output, so the model reads why a download
 * failed instead of guessing from a tool's own message ("CONNECT tunnel failed, response 403").
 */
export function reportNetworkRefusals(result: ToolResult, refused: readonly string[]): ToolResult {
  if (refused.length === 0) return result;
  const lines = refused.map((detail) => `[network] refused: ${detail}`).join('\n');
  return {
    ...result,
    output: result.output === '' ? lines : `${result.output}\n${lines}`,
    metadata: { ...result.metadata, networkRefused: [...refused] },
  };
}

/** Where a request wants to go. */
interface Destination {
  host: string;
  port: number;
}

/** One sandbox instance's proxy; see the module comment. Started by {@link NetworkEgress.open}. */
export class NetworkProxy {
  /** The socket on the host. */
  readonly socketPath: string;
  private readonly server: Server;
  private readonly sockets = new Set<Duplex>();
  private readonly refusals = new Set<string>();
  private closing: Promise<void> | undefined;

  constructor(
    /** The folder bound into the sandbox at {@link SANDBOX_PROXY_FOLDER}. */
    readonly folder: string,
    private readonly access: NetworkAccess,
    private readonly addresses: AddressPolicy,
  ) {
    this.socketPath = path.join(folder, 'proxy.sock');
    this.server = createServer({ maxHeaderSize: MAX_HEADER_BYTES, headersTimeout: HEADERS_TIMEOUT_MS });
    this.server.on('connection', (socket: Socket) => this.track(socket));
    this.server.on('request', (request: IncomingMessage, response: ServerResponse) => {
      void this.forward(request, response);
    });
    this.server.on('connect', (request: IncomingMessage, client: Duplex, head: Buffer) => {
      void this.tunnel(request, client, head);
    });
  }

  /** Listens on {@link socketPath}, open to the sandbox's user only through its folder. */
  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.socketPath, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    await chmod(this.socketPath, 0o600);
    // The sandbox using it keeps the process alive, never the proxy itself.
    this.server.unref();
  }

  /** The refusals since the last call, one line each, oldest first. */
  takeRefusals(): string[] {
    const taken = [...this.refusals];
    this.refusals.clear();
    return taken;
  }

  /** Closes every connection, stops listening and removes the socket's folder. Safe to call again. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
      for (const socket of this.sockets) socket.destroy();
      this.server.closeAllConnections();
      await closed;
      await rm(this.folder, { recursive: true, force: true });
    })();
    return this.closing;
  }

  private track(socket: Duplex): void {
    if (this.closing !== undefined) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    (socket as Partial<Socket>).unref?.();
    socket.once('close', () => this.sockets.delete(socket));
    // An error on one side ends both; it is not the server's to report.
    socket.on('error', () => socket.destroy());
  }

  /**
   * Checks a destination against the allow list and the address policy, resolving it once.
   * Returns the address to connect to, or the refusal (already recorded).
   */
  private async decide(
    destination: Destination,
  ): Promise<{ address: string } | { refusal: string } | { failure: string }> {
    const named = `${destination.host.includes(':') ? `[${destination.host}]` : destination.host}:${destination.port}`;
    if (
      this.access !== true &&
      !this.access.allow.some((pattern) => hostMatchesPattern(destination.host, pattern))
    ) {
      const patterns = this.access.allow.slice(0, QUOTED_PATTERNS).join(', ');
      const more = this.access.allow.length > QUOTED_PATTERNS ? ', …' : '';
      return this.refuse(`${destination.host} is not in the run's allow list (${patterns}${more})`);
    }
    try {
      const vetted = await vettedLookup(destination.host, this.addresses, named);
      if (!vetted.allowed) return this.refuse(vetted.reason);
      return { address: vetted.address };
    } catch (error) {
      return {
        failure: `Cannot resolve ${destination.host}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
      };
    }
  }

  private refuse(detail: string): { refusal: string } {
    if (this.refusals.size < MAX_RECORDED_REFUSALS) this.refusals.add(detail);
    return { refusal: `${REFUSAL_PREFIX}: ${detail}` };
  }

  /** `CONNECT host:port`: a tunnel to the vetted address. */
  private async tunnel(request: IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
    const destination = parseAuthority(request.url ?? '');
    if (destination === undefined) {
      answerRaw(client, 400, 'CONNECT needs host:port');
      return;
    }
    const decision = await this.decide(destination);
    if ('refusal' in decision) return answerRaw(client, 403, decision.refusal);
    if ('failure' in decision) return answerRaw(client, 502, decision.failure);
    if (client.destroyed) return;
    const upstream = this.connectTo(decision.address, destination.port, (error) =>
      answerRaw(client, 502, `Cannot connect to ${destination.host}:${destination.port}: ${error}`),
    );
    let connected = false;
    upstream.once('connect', () => {
      connected = true;
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    client.once('close', () => upstream.destroy());
    // Before the tunnel stands, a failure is answered (502) and the client closes after reading it.
    upstream.once('close', () => {
      if (connected) client.destroy();
    });
  }

  /** `GET http://host:port/path`: the request forwarded to the vetted address, its Host header kept. */
  private async forward(request: IncomingMessage, response: ServerResponse): Promise<void> {
    let url: URL;
    try {
      url = new URL(request.url ?? '');
    } catch {
      return answer(
        response,
        400,
        'This proxy takes CONNECT host:port, or a request for an absolute http:// URL',
      );
    }
    if (url.protocol !== 'http:') {
      return answer(response, 400, `Only http:// URLs are forwarded; use CONNECT for ${url.protocol}`);
    }
    const destination = { host: stripBrackets(url.hostname), port: url.port === '' ? 80 : Number(url.port) };
    const decision = await this.decide(destination);
    if ('refusal' in decision) return answer(response, 403, decision.refusal);
    if ('failure' in decision) return answer(response, 502, decision.failure);

    const headers = forwardedHeaders(request.headers);
    headers.host ??= url.host;
    const upstream = httpRequest({
      host: decision.address,
      port: destination.port,
      method: request.method,
      path: `${url.pathname}${url.search}`,
      headers,
      setHost: false,
      agent: false,
      // Failures come as the request's own 'error'.
      createConnection: () => this.connectTo(decision.address, destination.port, () => undefined),
    });
    upstream.on('error', (error: NodeJS.ErrnoException) => {
      if (!response.headersSent)
        answer(response, 502, `Cannot reach ${url.host}: ${error.code ?? error.message}`);
      else response.destroy();
    });
    upstream.on('response', (upstreamResponse) => {
      response.writeHead(upstreamResponse.statusCode ?? 502, forwardedHeaders(upstreamResponse.headers));
      upstreamResponse.pipe(response);
    });
    response.once('close', () => upstream.destroy());
    request.pipe(upstream);
  }

  /** A connection to a vetted address, given up after {@link CONNECT_TIMEOUT_MS}. */
  private connectTo(address: string, port: number, onFailure: (error: string) => void): Socket {
    const socket = connect({ host: address, port });
    this.track(socket);
    let connected = false;
    const timer = setTimeout(() => socket.destroy(new Error('timed out')), CONNECT_TIMEOUT_MS);
    socket.once('connect', () => {
      connected = true;
      clearTimeout(timer);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (!connected) onFailure(error.code ?? error.message);
    });
    socket.once('close', () => clearTimeout(timer));
    return socket;
  }
}

/** `host:port` of a CONNECT line (`[v6]:port` for IPv6), or undefined. */
function parseAuthority(authority: string): Destination | undefined {
  const match = /^(\[[0-9a-fA-F:.%\w]+\]|[^\s:[\]/@]+):(\d{1,5})$/.exec(authority);
  if (match === null) return undefined;
  const port = Number(match[2]);
  if (port < 1 || port > 65_535) return undefined;
  return { host: stripBrackets(match[1] ?? ''), port };
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

function forwardedHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const kept: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_HEADERS.has(name)) kept[name] = value;
  }
  return kept;
}

function answer(response: ServerResponse, status: number, message: string): void {
  response.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
  response.end(`${message}\n`);
}

/** An answer written on a raw socket (after CONNECT, there is no response object). */
function answerRaw(socket: Duplex, status: number, message: string): void {
  if (socket.destroyed) return;
  const body = `${message}\n`;
  const reason = status === 403 ? 'Forbidden' : status === 400 ? 'Bad Request' : 'Bad Gateway';
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

export type { HostResolver };
