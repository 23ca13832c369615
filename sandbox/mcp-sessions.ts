import type { ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { isDeepStrictEqual } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { ReadBuffer, serializeMessage } from '@modelcontextprotocol/sdk/shared/stdio.js';
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import { ErrorCode, McpError, type JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js';
import {
  DEFAULT_MCP_CALL_TIMEOUT_S,
  MAX_MCP_CALL_TIMEOUT_S,
  parseMcpToolName,
  type McpStdioServer,
} from '../common/mcp-servers';
import { mcpFailure } from '../common/mcp-tool-results';
import {
  describeMcpError,
  McpToolClient,
  oneLine,
  withRequestSignal,
  type McpToolDescription,
} from '../common/mcp-tool-session';
import {
  DEFAULT_SANDBOX_LIMITS,
  sandboxHostIdentity,
  spawnBubblewrap,
  type ReadOnlyMount,
} from './bubblewrap';
import {
  defaultNetworkEgress,
  networkEnabled,
  reportNetworkRefusals,
  type NetworkEgress,
  type NetworkProxy,
} from './network-proxy';
import {
  DEFAULT_SANDBOX_TOTALS,
  describeLimitKill,
  watchSandbox,
  type SandboxLimitKill,
  type SandboxTotals,
} from './sandbox-watchdog';
import { shellQuote } from './stateful-sandbox';
import type { SandboxIsolation } from './tools';
import { SandboxError, type SandboxPolicy, type ToolCall, type ToolResult } from './tool-call';

/**
 * The stdio MCP servers of trajectories, each run inside a sandbox of its trajectory: the same
 * bubblewrap sandbox as a `bash` call (namespaces, read-only system, the workspace at /workspace, a
 * private /tmp, a clean environment, the run's network policy through a proxy of its own, the
 * watchdog on its disk and memory), kept running between calls so that the server keeps whatever
 * it holds in memory from one iteration to the next. The sandbox server speaks MCP to it on its
 * stdin and stdout with the SDK's client; nothing but those pipes connects the two.
 *
 * One session per trajectory and server name. A session is started on first use, replaced when the
 * server's command or the run's network policy differs from the running one's, started afresh on
 * the call after its server ended (an exit, a crash, the watchdog), and closed after
 * {@link MCP_IDLE_CLOSE_MS} without use, on release of its trajectory and when the server closes.
 *
 * The cap: at most `SandboxTotals.maxSessions` MCP sessions at once (the number `--max-sessions`
 * sets), counted apart from the stateful sessions of `bash_stateful` and `tmux`, so that a run with
 * several MCP servers cannot lock other runs out of the stateful tools, nor the other way round.
 * Each holds at most its memory limit, as a stateful session does. Starting one more closes the
 * longest-idle MCP session; when all are in use, the start is refused with a line naming the cap.
 *
 * The SDK's `client.listTools()` and `client.callTool()` are not used: they compile each tool's
 * output schema with Ajv and run it on every answer, in the sandbox server's own process, on
 * schemas and answers written by whatever runs in the sandbox (a pattern that backtracks for
 * minutes would stall every trajectory of the server). Plain requests with the SDK's result
 * schemas check the answers' shape and nothing more.
 */

/** A session without a call or listing for this long is closed; the next use starts a fresh one. */
export const MCP_IDLE_CLOSE_MS = 10 * 60 * 1000;

/** Time a server has to answer `initialize` once its sandbox is spawned. */
export const MCP_START_TIMEOUT_MS = 30_000;

/**
 * Bytes of one message from a server (a line on its stdout). A longer one ends the session: the
 * result the model reads is cut to 64 KiB anyway, and a line without end must not grow the
 * sandbox server's memory.
 */
export const MCP_MAX_MESSAGE_BYTES = 8 * 1024 * 1024;

/** Characters of a server's stderr kept (the end of it), to say why it failed. */
const STDERR_TAIL_CHARS = 4_000;

/** Characters of the last stderr line quoted in a failure. */
const STDERR_LINE_CHARS = 300;

/**
 * CPU seconds per process (RLIMIT_CPU). A server lives for many calls, so the per-call limit of
 * `bash` would kill it; the watchdog, the idle close and each call's timeout bound it instead.
 */
const MCP_CPU_LIMIT_S = 3600;

/** The identity the sandbox server's MCP client announces. */
const CLIENT_INFO = { name: 'durable-agents-sandbox', version: '0.1.0' };

/** How a sandbox server runs its stdio MCP servers. */
export interface McpSessionsOptions {
  /**
   * With 'none' (`--unsafe-no-sandbox` where bubblewrap is not usable) MCP servers are refused:
   * run on the host they would see its files, processes and network with the server's rights, and
   * their `/workspace` arguments would name nothing.
   */
  isolation?: SandboxIsolation;
  /** The watchdog's disk quota and memory limit, and the cap on sessions; the defaults unless given. */
  totals?: SandboxTotals;
  /** The server's way out for sandboxes with the network on; the process's default one unless given. */
  network?: NetworkEgress;
  /** Host folders bound read-only into every MCP server's sandbox (`agents sandbox --mcp-mount`). */
  readOnlyMounts?: readonly ReadOnlyMount[];
}

/** The options with the totals filled in. */
type ResolvedOptions = McpSessionsOptions & { totals: SandboxTotals };

/**
 * Why a server could not be started or could not list its tools: one line naming the server, which
 * `POST /mcp/tools` answers with 502.
 */
export class McpServerUnavailableError extends SandboxError {
  override readonly name = 'McpServerUnavailableError';

  constructor(
    readonly server: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * The MCP transport of a child process: JSON-RPC messages, one per line, on its stdin and stdout.
 * The SDK's own stdio transport spawns its process itself, on the host; this one takes the
 * sandboxed process the session spawned. It closes (`onclose`) once the process has ended and let go
 * of its pipes, when the session records why first.
 */
class ChildProcessTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  private readonly buffer = new ReadBuffer({ maxBufferSize: MCP_MAX_MESSAGE_BYTES });
  private readonly stdin: Writable;
  private readonly stdout: Readable;
  private closed = false;

  constructor(
    private readonly child: ChildProcess,
    private readonly onOverflow: (error: Error) => void,
  ) {
    this.stdin = child.stdin as Writable;
    this.stdout = child.stdout as Readable;
    // Writes after the process ended fail; its end is reported on its own.
    this.stdin.on('error', () => undefined);
  }

  start(): Promise<void> {
    this.stdout.on('data', (chunk: Buffer) => {
      try {
        this.buffer.append(chunk);
      } catch (error) {
        this.onOverflow(error as Error);
        return;
      }
      for (;;) {
        let message: JSONRPCMessage | null;
        try {
          message = this.buffer.readMessage();
        } catch (error) {
          // A line that is not a JSON-RPC message (a server logging to stdout): skipped, as the
          // SDK's own stdio transport does.
          this.onerror?.(error as Error);
          continue;
        }
        if (message === null) break;
        this.onmessage?.(message);
      }
    });
    return Promise.resolve();
  }

  send(message: JSONRPCMessage): Promise<void> {
    if (this.closed || this.stdin.destroyed || !this.stdin.writable) {
      return Promise.reject(new McpError(ErrorCode.ConnectionClosed, 'the server is not running'));
    }
    return new Promise<void>((resolve) => {
      if (this.stdin.write(serializeMessage(message))) resolve();
      else this.stdin.once('drain', () => resolve());
    });
  }

  /** Kills the process; `onclose` follows once it has ended. */
  close(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    return Promise.resolve();
  }

  /** Called by the session once the process has ended and its pipes are closed. */
  ended(): void {
    if (this.closed) return;
    this.closed = true;
    this.buffer.clear();
    this.onclose?.();
  }
}

/** How a server's process ended, as the session saw it. */
type SessionEnd =
  | { kind: 'exited'; code: number | null; signal: NodeJS.Signals | null }
  | { kind: 'limit'; kill: SandboxLimitKill }
  | { kind: 'closed'; reason: string }
  | { kind: 'spawn-failed'; message: string }
  | { kind: 'message-too-large' };

/** One server running in one trajectory's sandbox; made by {@link McpSession.start}. */
class McpSession {
  readonly client: Client;
  private readonly child: ChildProcess;
  private readonly transport: ChildProcessTransport;
  private stderrTail = '';
  private end: SessionEnd | undefined;
  private readonly closedPromise: Promise<void>;
  private readonly tools: McpToolClient;
  /** Calls and listings under way. */
  pending = 0;
  idleSince = performance.now();

  private constructor(
    readonly server: McpStdioServer,
    readonly workspace: string,
    readonly network: SandboxPolicy['network'],
    policy: SandboxPolicy,
    private readonly proxy: NetworkProxy | undefined,
    options: ResolvedOptions,
  ) {
    const command = `exec ${server.command.map(shellQuote).join(' ')}`;
    this.child = spawnBubblewrap(command, {
      workspace,
      policy,
      ...(proxy === undefined ? {} : { networkProxyFolder: proxy.folder }),
      // V8 reserves far more address space than it uses: node aborts at start under the 1 GiB
      // RLIMIT_AS of a `bash` call (2 GiB works). The watchdog's limit on the real memory of the
      // whole sandbox bounds what the server may hold, so its address space gets that much too.
      limits: { ...DEFAULT_SANDBOX_LIMITS, maxMemoryBytes: options.totals.memoryLimitBytes },
      cpuLimitS: MCP_CPU_LIMIT_S,
      hostIdentity: sandboxHostIdentity(),
      stdinPipe: true,
      readOnlyMounts: options.readOnlyMounts ?? [],
    });
    this.transport = new ChildProcessTransport(this.child, () => {
      this.end ??= { kind: 'message-too-large' };
      void this.transport.close();
    });
    (this.child.stderr as Readable).setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-STDERR_TAIL_CHARS);
    });
    const stopWatch = watchSandbox(this.child, workspace, options.totals, (kill) => {
      this.end ??= { kind: 'limit', kill };
      this.child.kill('SIGKILL');
    });
    this.child.once('error', (error) => {
      this.end ??= { kind: 'spawn-failed', message: error.message };
    });
    // 'close' comes after the exit and after every process of the sandbox let go of the pipes.
    this.closedPromise = new Promise<void>((resolve) => {
      this.child.once('close', (code: number | null, signal: NodeJS.Signals | null) => {
        this.end ??= { kind: 'exited', code, signal };
        stopWatch();
        this.transport.ended();
        resolve();
      });
    }).then(() => this.proxy?.close());
    this.client = new Client(CLIENT_INFO, { capabilities: {} });
    // Protocol noise (a stray line on stdout) is not worth a failure; what ends a call is reported with it.
    this.client.onerror = () => undefined;
    this.tools = new McpToolClient(server.name, this.client, (error, method, timeoutS) =>
      this.describe(error, method, timeoutS),
    );
    // A session never keeps the server's process alive by itself, and dies with it (--die-with-parent).
    this.keepProcessAlive(false);
  }

  /**
   * Starts `server` in a sandbox on `workspace` with `policy`'s network, and runs the `initialize`
   * exchange within {@link MCP_START_TIMEOUT_MS}. Rejects with an {@link McpServerUnavailableError}
   * saying why when it cannot start, or with the signal's reason on abort.
   */
  static async start(
    server: McpStdioServer,
    workspace: string,
    policy: SandboxPolicy,
    options: ResolvedOptions,
    signal: AbortSignal,
  ): Promise<McpSession> {
    signal.throwIfAborted();
    const egress = networkEnabled(policy)
      ? (options.network ?? (await defaultNetworkEgress(sandboxHostIdentity())))
      : undefined;
    const proxy = networkEnabled(policy) ? await egress?.open(policy.network) : undefined;
    let session: McpSession;
    try {
      session = new McpSession(server, workspace, policy.network, policy, proxy, options);
    } catch (error) {
      await proxy?.close();
      throw new McpServerUnavailableError(
        server.name,
        `MCP server ${server.name} could not start: ${(error as Error).message}`,
        { cause: error },
      );
    }
    try {
      await withRequestSignal(signal, (requestSignal) =>
        session.client.connect(session.transport, { timeout: MCP_START_TIMEOUT_MS, signal: requestSignal }),
      );
    } catch (error) {
      // Described before the close, which would otherwise be what it says.
      const reason = session.describe(error, 'initialize', MCP_START_TIMEOUT_MS / 1000);
      await session.close('it did not start');
      if (signal.aborted) throw error;
      throw new McpServerUnavailableError(
        server.name,
        `MCP server ${server.name} could not start: ${reason}`,
        {
          cause: error,
        },
      );
    }
    return session;
  }

  /** False once the server has ended or is being closed: the next use needs a new session. */
  get alive(): boolean {
    return this.end === undefined;
  }

  /** The connections its network proxy refused since the last call, one line each. */
  takeNetworkRefusals(): string[] {
    return this.proxy?.takeRefusals() ?? [];
  }

  /**
   * The server's tools, listed once per session and again after it says they changed (see
   * `McpToolClient.listTools`). Rejects with an {@link McpServerUnavailableError}.
   */
  async listTools(signal: AbortSignal): Promise<McpToolDescription[]> {
    try {
      return await this.tools.listTools(signal);
    } catch (error) {
      if (signal.aborted) throw error;
      throw new McpServerUnavailableError(
        this.server.name,
        `MCP server ${this.server.name} ${(error as Error).message}`,
        {
          cause: error,
        },
      );
    }
  }

  /** Runs `tools/call`: always a result (see `McpToolClient.callTool`), with the network's refusals. */
  async callTool(call: ToolCall, tool: string, timeoutS: number, signal: AbortSignal): Promise<ToolResult> {
    const result = await this.tools.callTool(call.callId, tool, call.arguments, timeoutS, signal);
    return reportNetworkRefusals(result, this.takeNetworkRefusals());
  }

  /** One line for what went wrong with a request: the server's end and why, a timeout, or its error. */
  describe(error: unknown, method: string, timeoutS: number): string {
    if (this.end !== undefined && this.end.kind !== 'closed')
      return `${this.describeEnd(this.end)}${this.stderrLine()}`;
    if (this.end !== undefined) return this.end.reason;
    const reason = describeMcpError(error, method, timeoutS);
    const timedOut = error instanceof McpError && error.code === Number(ErrorCode.RequestTimeout);
    return timedOut ? `${reason}${this.stderrLine()}` : reason;
  }

  private describeEnd(end: Exclude<SessionEnd, { kind: 'closed' }>): string {
    switch (end.kind) {
      case 'exited':
        return end.code !== null
          ? `it exited with code ${end.code}`
          : `it was killed by ${end.signal ?? 'a signal'}`;
      case 'limit':
        return `its sandbox was stopped by the watchdog: ${describeLimitKill(end.kill)}`;
      case 'spawn-failed':
        return `its sandbox could not be started: ${end.message}`;
      case 'message-too-large':
        return `it sent a message over ${MCP_MAX_MESSAGE_BYTES} bytes, and was stopped`;
    }
  }

  /** "; last stderr line: …", or nothing when the server wrote nothing on stderr. */
  private stderrLine(): string {
    const lines = this.stderrTail.split('\n').filter((line) => line.trim() !== '');
    const last = lines.at(-1);
    return last === undefined ? '' : `; last stderr line: ${oneLine(last, STDERR_LINE_CHARS)}`;
  }

  /**
   * Kills the sandbox and everything in it and waits until its processes have let go of the pipes;
   * a request under way ends with `reason`. Safe to call more than once.
   */
  async close(reason: string): Promise<void> {
    this.end ??= { kind: 'closed', reason };
    // Until the sandbox is gone, or a caller awaiting this could see the process exit first.
    this.keepProcessAlive(true);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.closedPromise;
  }

  private keepProcessAlive(keep: boolean): void {
    const handles = [this.child, ...(this.child.stdio as ReadonlyArray<Partial<Socket> | null | undefined>)];
    for (const handle of handles) {
      if (keep) handle?.ref?.();
      else handle?.unref?.();
    }
  }
}

/** Why a session was started for a use: none ran, the last one ended, or the command or network differed. */
export type McpSessionStart = 'new' | 'restarted' | 'command-changed' | 'policy-changed';

interface SessionSlot {
  session: McpSession | undefined;
  /** The end of the chain of this slot's session lookups, so two uses never start two sessions. */
  tail: Promise<unknown>;
  /** Bumped by each close, so a session that was starting meanwhile is not kept. */
  generation: number;
  idleTimer: NodeJS.Timeout | undefined;
  /** A session ran here before, so the next start is a restart. */
  used: boolean;
}

/** The stdio MCP sessions of one sandbox server; see the module comment. */
export class McpSandboxSessions {
  private readonly slots = new Map<string, SessionSlot>();
  private readonly options: ResolvedOptions;
  private starting = 0;

  constructor(options: McpSessionsOptions = {}) {
    this.options = { ...options, totals: options.totals ?? DEFAULT_SANDBOX_TOTALS };
  }

  /** MCP sessions alive now. */
  get liveSessions(): number {
    let live = 0;
    for (const slot of this.slots.values()) if (slot.session?.alive === true) live += 1;
    return live;
  }

  /**
   * The tools of `server` in the trajectory's sandbox, starting its session when needed. Rejects
   * with an {@link McpServerUnavailableError} (one line naming the server) when it cannot be
   * started or does not list its tools, and with the signal's reason on abort.
   */
  async listTools(
    trajectoryId: string,
    server: McpStdioServer,
    workspace: string,
    policy: SandboxPolicy,
    signal: AbortSignal,
  ): Promise<McpToolDescription[]> {
    this.refuseUnsandboxed(server.name);
    let session: McpSession;
    try {
      ({ session } = await this.sessionFor(trajectoryId, server, workspace, policy, signal));
    } catch (error) {
      if (signal.aborted || error instanceof McpServerUnavailableError) throw error;
      // Opening the network proxy, say: still this server's failure to start, in one line.
      throw new McpServerUnavailableError(
        server.name,
        `MCP server ${server.name} could not start: ${oneLine(error instanceof Error ? error.message : String(error), 500)}`,
        { cause: error },
      );
    }
    try {
      return await session.listTools(signal);
    } finally {
      this.settle(trajectoryId, server.name, session);
    }
  }

  /**
   * Runs an MCP call (`call.mcpServer` set, `call.tool` = `mcp__<server>__<tool>`) on the
   * trajectory's session of its server. Always a result: a server that cannot start, has died or
   * does not answer within the call's timeout (`call.timeoutS`, else the server's, else
   * {@link DEFAULT_MCP_CALL_TIMEOUT_S}; progress notifications restart it, and
   * {@link MAX_MCP_CALL_TIMEOUT_S} bounds the whole call) is one failure naming the server and what
   * happened. Rejects only when `signal` aborts (the server is shutting down).
   */
  async callTool(call: ToolCall, workspace: string, signal: AbortSignal): Promise<ToolResult> {
    const server = call.mcpServer;
    const named = parseMcpToolName(call.tool);
    if (server === undefined) throw new SandboxError('Not an MCP call: it names no mcpServer');
    if (named === undefined || named.server !== server.name) {
      return mcpFailure(
        call.callId,
        server.name,
        call.tool,
        `the call's tool must be named mcp__${server.name}__<tool> for this server`,
      );
    }
    if (this.options.isolation === 'none') {
      return mcpFailure(call.callId, server.name, named.tool, UNSANDBOXED_REFUSAL);
    }
    const timeoutS = Math.min(
      MAX_MCP_CALL_TIMEOUT_S,
      Math.max(1, Math.ceil(call.timeoutS ?? server.timeoutS ?? DEFAULT_MCP_CALL_TIMEOUT_S)),
    );
    let found: { session: McpSession; started: McpSessionStart | undefined };
    try {
      found = await this.sessionFor(call.trajectoryId, server, workspace, call.policy, signal);
    } catch (error) {
      if (signal.aborted) throw error;
      const message = error instanceof Error ? error.message : String(error);
      const prefix = `MCP server ${server.name} `;
      return mcpFailure(
        call.callId,
        server.name,
        named.tool,
        message.startsWith(prefix) ? message.slice(prefix.length) : message,
      );
    }
    const { session, started } = found;
    try {
      const result = await session.callTool(call, named.tool, timeoutS, signal);
      return started === undefined
        ? result
        : { ...result, metadata: { ...result.metadata, sessionStarted: started } };
    } finally {
      this.settle(call.trajectoryId, server.name, session);
    }
  }

  /** Closes the sessions of `trajectoryId`, or all of them; a call under way ends with a failure saying so. */
  async close(trajectoryId?: string, reason = 'its session was closed'): Promise<void> {
    const closing: Array<Promise<void>> = [];
    for (const [key, slot] of this.slots) {
      if (trajectoryId !== undefined && !key.startsWith(slotKey(trajectoryId, ''))) continue;
      slot.generation += 1;
      clearTimeout(slot.idleTimer);
      if (slot.session !== undefined) closing.push(slot.session.close(reason));
      slot.session = undefined;
      this.slots.delete(key);
    }
    await Promise.all(closing);
  }

  private refuseUnsandboxed(server: string): void {
    if (this.options.isolation === 'none') {
      throw new McpServerUnavailableError(server, `MCP server ${server} cannot run: ${UNSANDBOXED_REFUSAL}`);
    }
  }

  /**
   * The live session of `server` for the trajectory, started (after the slot's earlier lookups)
   * when none runs, when the last one ended, or when the command or the network policy differs.
   * The caller hands it back with {@link settle}.
   */
  private sessionFor(
    trajectoryId: string,
    server: McpStdioServer,
    workspace: string,
    policy: SandboxPolicy,
    signal: AbortSignal,
  ): Promise<{ session: McpSession; started: McpSessionStart | undefined }> {
    const key = slotKey(trajectoryId, server.name);
    let slot = this.slots.get(key);
    if (slot === undefined) {
      slot = {
        session: undefined,
        tail: Promise.resolve(),
        generation: 0,
        idleTimer: undefined,
        used: false,
      };
      this.slots.set(key, slot);
    }
    const current = slot;
    clearTimeout(current.idleTimer);
    const lookup = async (): Promise<{ session: McpSession; started: McpSessionStart | undefined }> => {
      const previous = current.session;
      if (
        previous !== undefined &&
        previous.alive &&
        isDeepStrictEqual(previous.server.command, server.command) &&
        isDeepStrictEqual(previous.network, policy.network) &&
        previous.workspace === workspace
      ) {
        previous.pending += 1;
        return { session: previous, started: undefined };
      }
      let started: McpSessionStart = current.used ? 'restarted' : 'new';
      if (previous?.alive === true) {
        started = isDeepStrictEqual(previous.server.command, server.command)
          ? 'policy-changed'
          : 'command-changed';
      }
      if (previous !== undefined) {
        current.session = undefined;
        await previous.close(
          `it was replaced by a session with another ${started === 'policy-changed' ? 'network policy' : 'command'}`,
        );
      }
      await this.makeRoom(server.name);
      const generation = current.generation;
      this.starting += 1;
      let session: McpSession;
      try {
        session = await McpSession.start(server, workspace, policy, this.options, signal);
      } finally {
        this.starting -= 1;
      }
      if (current.generation !== generation) {
        await session.close('its trajectory was released while it started');
        throw new McpServerUnavailableError(
          server.name,
          `MCP server ${server.name} was closed while it started (its trajectory was released)`,
        );
      }
      current.session = session;
      current.used = true;
      session.pending += 1;
      return { session, started };
    };
    const found = current.tail.then(lookup, lookup);
    current.tail = found.catch(() => undefined);
    return found;
  }

  /**
   * Under the cap: closes the longest-idle live session when one more would go over it, or refuses
   * with a line naming the cap when every session is in use.
   */
  private async makeRoom(server: string): Promise<void> {
    const { maxSessions } = this.options.totals;
    if (this.liveSessions + this.starting < maxSessions) return;
    let idlest: { key: string; slot: SessionSlot; session: McpSession } | undefined;
    for (const [key, slot] of this.slots) {
      const session = slot.session;
      if (session?.alive !== true || session.pending > 0) continue;
      if (idlest === undefined || session.idleSince < idlest.session.idleSince)
        idlest = { key, slot, session };
    }
    if (idlest === undefined) {
      throw new McpServerUnavailableError(
        server,
        `MCP server ${server} could not start: this sandbox server runs at most ${maxSessions} MCP servers at once (--max-sessions) and all of them are in use; try again later`,
      );
    }
    clearTimeout(idlest.slot.idleTimer);
    idlest.slot.session = undefined;
    await idlest.session.close('it was closed to make room for another MCP server');
  }

  /** After a use: a dead session is forgotten, a live one closed once idle for {@link MCP_IDLE_CLOSE_MS}. */
  private settle(trajectoryId: string, server: string, session: McpSession): void {
    session.pending -= 1;
    session.idleSince = performance.now();
    const key = slotKey(trajectoryId, server);
    const slot = this.slots.get(key);
    if (slot === undefined || slot.session !== session || session.pending > 0) return;
    if (!session.alive) {
      slot.session = undefined;
      return;
    }
    clearTimeout(slot.idleTimer);
    slot.idleTimer = setTimeout(() => {
      if (slot.session !== session || session.pending > 0) return;
      slot.session = undefined;
      if (this.slots.get(key) === slot) this.slots.delete(key);
      void session.close('it was closed after being idle');
    }, MCP_IDLE_CLOSE_MS);
    // An idle session never keeps the process alive on its own.
    slot.idleTimer.unref();
  }
}

/** Why MCP servers are refused by a server without bubblewrap. */
const UNSANDBOXED_REFUSAL =
  'stdio MCP servers need bubblewrap, and this sandbox server runs with --unsafe-no-sandbox';

function slotKey(trajectoryId: string, server: string): string {
  // A NUL is in neither a trajectory ID nor a server name.
  return `${trajectoryId}\0${server}`;
}
