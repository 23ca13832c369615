import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import { OUTPUT_FLOOD_FACTOR } from './bubblewrap';
import { DEFAULT_SANDBOX_TOTALS, describeLimitKill, type SandboxTotals } from './sandbox-watchdog';
import type { ShellCommandResult, StatefulSandbox } from './stateful-sandbox';
import { reportNetworkRefusals, type NetworkEgress } from './network-proxy';
import { withStatefulSandbox, type SessionContext } from './stateful-sessions';
import {
  clampTimeoutS,
  MAX_STREAM_CHARS,
  SandboxError,
  TRUNCATION_MARKER,
  type ToolCall,
  type ToolResult,
} from './tool-call';
import { SANDBOX_WORKSPACE_PATH } from './workspace-paths';
import type { bashStatefulArgumentsSchema, tmuxArgumentsSchema } from './tool-arguments';

/**
 * The tools that keep state between calls, both in the trajectory's long-lived sandbox
 * (`stateful-sandbox.ts`): `bash_stateful`, a shell whose working folder, variables and functions
 * persist, and `tmux`, named terminal sessions for interactive programs and servers.
 */

/** Pane size of a new tmux session unless asked otherwise, and the bounds a request is clamped to. */
const TMUX_DEFAULT_WIDTH = 120;
const TMUX_DEFAULT_HEIGHT = 40;
const TMUX_WIDTH_RANGE = { min: 20, max: 500 } as const;
const TMUX_HEIGHT_RANGE = { min: 10, max: 200 } as const;
/** Lines of scrollback each pane keeps. */
const TMUX_HISTORY_LINES = 20_000;

/**
 * Keys sent per tmux command. tmux refuses a command over about 16 KB; 2,000 UTF-16 units are at most
 * 6,000 bytes of UTF-8.
 */
const TMUX_KEYS_CHUNK = 2_000;

/**
 * `send_keys` with `block` calls a pane quiet once its output, having changed since the keys were
 * sent, stays unchanged this long; or, when it has not changed at all, after
 * {@link TMUX_SILENT_MS}, so a shell slow to answer is waited for but keys with no visible effect
 * do not hold the call until `max_wait`.
 */
const TMUX_QUIET_MS = 500;
const TMUX_SILENT_MS = 2_000;
const TMUX_POLL_MS = 100;
/** Wait bounds of `send_keys` with `block`, in seconds, unless the call asks otherwise. */
const DEFAULT_MIN_WAIT_S = 0;
const DEFAULT_MAX_WAIT_S = 10;

/** The tmux server's folder in the sandbox's private /tmp: its socket and one output log per session. */
const TMUX_FOLDER = '/tmp/agents-tmux';
const TMUX_SOCKET = `${TMUX_FOLDER}/socket`;
/** Bytes of a session's output kept for `stream`; /tmp is a 256 MB memory-backed folder. */
const TMUX_LOG_BYTES = 64 * 1024 * 1024;
/** Bytes of a session's log read by one `stream` call; whole lines of it are returned. */
const STREAM_READ_BYTES = 1024 * 1024;

/**
 * Runs `command` in the trajectory's persistent shell. The result reads as `bash`'s: stdout, then a
 * `[stderr]` section; "Exit code: N" on a non-zero status; "Command timed out after Xs" when the
 * timeout passes, which tears the session down, so the next call starts in a fresh shell (and
 * `metadata.sessionClosed` says so).
 */
export async function runBashStateful(
  call: ToolCall,
  parsed: z.infer<typeof bashStatefulArgumentsSchema>,
  workspaceRoot: string,
  signal: AbortSignal,
  totals: SandboxTotals = DEFAULT_SANDBOX_TOTALS,
  network?: NetworkEgress,
): Promise<ToolResult> {
  const timeoutS = clampTimeoutS(call.timeoutS ?? parsed.timeout);
  return withStatefulSandbox(
    call,
    workspaceRoot,
    signal,
    async (sandbox, started, context) => {
      const result = await sandbox.runShellCommand(parsed.command, timeoutS, signal);
      return reportNetworkRefusals(
        withPreviousKill(shellResult(call, result, timeoutS, started), context),
        sandbox.takeNetworkRefusals(),
      );
    },
    totals,
    network,
  );
}

function shellResult(
  call: ToolCall,
  result: ShellCommandResult,
  timeoutS: number,
  started: SessionContext['started'],
): ToolResult {
  let output = withMarker(result.stdout, result.stdoutTruncated);
  if (result.stderr.length > 0) output += `\n[stderr]\n${withMarker(result.stderr, result.stderrTruncated)}`;
  const metadata = {
    exitCode: result.exitCode,
    durationMs: result.durationMs,
    truncated: result.stdoutTruncated || result.stderrTruncated,
    timedOut: result.ending === 'timeout',
    ...(result.ending === 'output-limit' ? { outputLimitExceeded: true } : {}),
    ...(result.limitExceeded === undefined ? {} : { limitExceeded: result.limitExceeded }),
    ...(started === undefined ? {} : { sessionStarted: started }),
    ...(result.ending === 'shell-exited' ? { shellExited: true } : {}),
    ...(sessionClosed(result) ? { sessionClosed: true } : {}),
  };
  const error = shellError(result, timeoutS);
  return error === undefined
    ? { callId: call.callId, success: true, output, metadata }
    : { callId: call.callId, success: false, output, error, metadata };
}

/**
 * Tells the model, in the first result after it happened, that the trajectory's previous session
 * was closed between calls (the watchdog killed it because a background process wrote or allocated
 * too much, or it made room for another session under the cap): its shell state and tmux sessions
 * are gone, and why.
 */
function withPreviousKill(result: ToolResult, context: SessionContext): ToolResult {
  if (context.previousClosed === undefined) return result;
  const note = `The previous stateful session was closed between calls. ${context.previousClosed}`;
  const kill = context.previousLimitKill;
  return {
    ...result,
    output: result.output === '' ? `[${note}]` : `[${note}]\n${result.output}`,
    ...(result.error === undefined ? {} : { error: `${result.error} (${note})` }),
    metadata: {
      ...result.metadata,
      ...(kill === undefined ? { previousSessionEvicted: true } : { previousSessionLimitExceeded: kill }),
    },
  };
}

function sessionClosed(result: ShellCommandResult): boolean {
  return (
    result.ending === 'timeout' ||
    result.ending === 'output-limit' ||
    result.ending === 'sandbox-ended' ||
    result.ending === 'limit-exceeded'
  );
}

function shellError(result: ShellCommandResult, timeoutS: number): string | undefined {
  switch (result.ending) {
    case 'timeout':
      return `Command timed out after ${timeoutS}s`;
    case 'output-limit':
      return `Command killed: output over ${MAX_STREAM_CHARS * OUTPUT_FLOOD_FACTOR} characters`;
    case 'sandbox-ended':
      return 'The stateful shell ended unexpectedly; the next call starts a fresh one';
    case 'limit-exceeded':
      return result.limitExceeded === undefined
        ? 'The stateful shell ended unexpectedly; the next call starts a fresh one'
        : `${describeLimitKill(result.limitExceeded)}; the next call starts a fresh session`;
    case 'exited':
    case 'shell-exited':
      return result.exitCode === 0 ? undefined : `Exit code: ${result.exitCode}`;
  }
}

/**
 * Runs one `tmux` action on a named session of the trajectory's sandbox:
 *
 * - `start`: a new session running bash in /workspace, `width` x `height` (default 120x40, clamped to
 *   20-500 x 10-200), 20,000 lines of history; all its output is also logged for `stream`.
 * - `send_keys`: types `keys`. A tmux key name alone (`Enter`, `C-c`, `Escape`, `Up`) presses that
 *   key; other text is typed as is, a newline in it pressing Enter. With `block`, waits at least
 *   `min_wait` s (default 0) and until the output is quiet ({@link TMUX_QUIET_MS}), at most
 *   `max_wait` s (default 10, never past the call's timeout), and returns the visible pane.
 * - `capture`: the visible pane, without the blank rows below its last text.
 * - `stream`: the session's output from line `offset` (0: its start), whole lines only, escape
 *   sequences removed; `metadata.nextOffset` is where the next `stream` should start.
 * - `stop`: ends the session and what runs in it.
 */
export async function runTmux(
  call: ToolCall,
  parsed: z.infer<typeof tmuxArgumentsSchema>,
  workspaceRoot: string,
  signal: AbortSignal,
  totals: SandboxTotals = DEFAULT_SANDBOX_TOTALS,
  network?: NetworkEgress,
): Promise<ToolResult> {
  return withStatefulSandbox(
    call,
    workspaceRoot,
    signal,
    async (sandbox, _started, context) =>
      withPreviousKill(await tmuxAction(call, parsed, sandbox, signal), context),
    totals,
    network,
  );
}

async function tmuxAction(
  call: ToolCall,
  parsed: z.infer<typeof tmuxArgumentsSchema>,
  sandbox: StatefulSandbox,
  signal: AbortSignal,
): Promise<ToolResult> {
  const session = new TmuxSession(sandbox, parsed.session);
  const exists = await session.exists();
  if (parsed.action === 'start') {
    if (exists) {
      return failure(
        call,
        `tmux session '${parsed.session}' already exists; stop it first or use another name`,
      );
    }
    return startSession(call, parsed, session);
  }
  if (!exists) return failure(call, `No tmux session '${parsed.session}'; start it with action 'start'`);
  switch (parsed.action) {
    case 'send_keys':
      return sendKeys(call, parsed, session, signal);
    case 'capture':
      return capturePane(call, session);
    case 'stream':
      return streamOutput(call, parsed.offset, session);
    case 'stop':
      await session.stop();
      return success(call, `Stopped tmux session '${parsed.session}'`, { session: parsed.session });
  }
}

async function startSession(
  call: ToolCall,
  parsed: z.infer<typeof tmuxArgumentsSchema>,
  session: TmuxSession,
): Promise<ToolResult> {
  const width = clampSize(parsed.width, TMUX_DEFAULT_WIDTH, TMUX_WIDTH_RANGE);
  const height = clampSize(parsed.height, TMUX_DEFAULT_HEIGHT, TMUX_HEIGHT_RANGE);
  await session.start(width, height);
  const asked = `${parsed.width ?? width}x${parsed.height ?? height}`;
  const clamped =
    asked === `${width}x${height}`
      ? ''
      : ` (asked for ${asked}; sizes are clamped to ${TMUX_WIDTH_RANGE.min}-${TMUX_WIDTH_RANGE.max} x ${TMUX_HEIGHT_RANGE.min}-${TMUX_HEIGHT_RANGE.max})`;
  return success(call, `Started tmux session '${session.name}', ${width}x${height}${clamped}`, {
    session: session.name,
    width,
    height,
  });
}

async function sendKeys(
  call: ToolCall,
  parsed: z.infer<typeof tmuxArgumentsSchema>,
  session: TmuxSession,
  signal: AbortSignal,
): Promise<ToolResult> {
  if (parsed.keys === undefined) {
    return failure(call, "Invalid arguments for tool tmux: keys is required for action 'send_keys'");
  }
  if (!parsed.block) {
    await session.sendKeys(parsed.keys);
    return success(call, `Sent keys to tmux session '${session.name}'`, { session: session.name });
  }
  const maxWaitS = Math.min(
    Math.max(parsed.max_wait ?? DEFAULT_MAX_WAIT_S, parsed.min_wait ?? DEFAULT_MIN_WAIT_S),
    clampTimeoutS(call.timeoutS),
  );
  const minWaitS = Math.min(parsed.min_wait ?? DEFAULT_MIN_WAIT_S, maxWaitS);
  const startedAt = performance.now();
  let logBytes = await session.logBytes();
  await session.sendKeys(parsed.keys);
  let lastChange: number | undefined;
  let quiet = false;
  for (;;) {
    const now = performance.now();
    const settled =
      lastChange === undefined ? now - startedAt >= TMUX_SILENT_MS : now - lastChange >= TMUX_QUIET_MS;
    if (now - startedAt >= minWaitS * 1000 && settled) {
      quiet = true;
      break;
    }
    if (now - startedAt >= maxWaitS * 1000) break;
    await sleep(TMUX_POLL_MS, undefined, { signal });
    const bytes = await session.logBytes();
    if (bytes !== logBytes) {
      logBytes = bytes;
      lastChange = performance.now();
    }
  }
  const pane = await session.capture();
  return success(call, limitText(pane.text), {
    session: session.name,
    waitedMs: Math.round(performance.now() - startedAt),
    quiet,
    truncated: pane.text.length > MAX_STREAM_CHARS,
  });
}

async function capturePane(call: ToolCall, session: TmuxSession): Promise<ToolResult> {
  const pane = await session.capture();
  return success(call, limitText(pane.text), {
    session: session.name,
    width: pane.width,
    height: pane.height,
    cursorX: pane.cursorX,
    cursorY: pane.cursorY,
    truncated: pane.text.length > MAX_STREAM_CHARS,
  });
}

/**
 * The session's output from line `offset`: complete lines only (the line being written waits for its
 * newline), at most {@link MAX_STREAM_CHARS} characters of them. A line longer than that on its own
 * is cut and counted as read, so a stream always moves on.
 */
async function streamOutput(call: ToolCall, offset: number, session: TmuxSession): Promise<ToolResult> {
  const raw = await session.readLog(offset);
  const pieces = raw.split('\n');
  let complete = pieces.slice(0, -1);
  let more = raw.length >= STREAM_READ_BYTES;
  // A single line longer than the read: taken as read, cut.
  if (complete.length === 0 && more) complete = [raw];
  let output = '';
  let lines = 0;
  let cut = false;
  for (const piece of complete) {
    const line = `${terminalLine(piece)}\n`;
    if (output.length + line.length > MAX_STREAM_CHARS) {
      if (lines === 0) {
        output = line.slice(0, MAX_STREAM_CHARS);
        lines = 1;
        cut = true;
      }
      more = true;
      break;
    }
    output += line;
    lines += 1;
  }
  return success(call, cut ? `${output}\n${TRUNCATION_MARKER}` : output, {
    session: session.name,
    offset,
    lines,
    nextOffset: offset + lines,
    truncated: more || cut,
  });
}

/** tmux commands for one named session, run by the sandbox's controller with the sandbox's tmux server. */
class TmuxSession {
  constructor(
    private readonly sandbox: StatefulSandbox,
    readonly name: string,
  ) {}

  /** An exact-name target: `main` alone would also match a session called `main2`. */
  private get target(): string {
    return `=${this.name}:`;
  }

  private get log(): string {
    return `${TMUX_FOLDER}/${this.name}.log`;
  }

  async exists(): Promise<boolean> {
    const result = await this.tmux(['has-session', '-t', `=${this.name}`], 'check');
    return result.exitCode === 0;
  }

  async start(width: number, height: number): Promise<void> {
    await this.program([
      '/bin/bash',
      '-c',
      'mkdir -p -- "$1" && rm -f -- "$2"',
      'bash',
      TMUX_FOLDER,
      this.log,
    ]);
    // One tmux command line, so the output log is attached before the server reads any of the
    // shell's output.
    await this.tmux(
      [
        'start-server',
        ';',
        'set-option',
        '-g',
        'history-limit',
        String(TMUX_HISTORY_LINES),
        ';',
        'set-option',
        '-g',
        'default-shell',
        '/bin/bash',
        ';',
        'new-session',
        '-d',
        '-s',
        this.name,
        '-x',
        String(width),
        '-y',
        String(height),
        '-c',
        SANDBOX_WORKSPACE_PATH,
        ';',
        'pipe-pane',
        '-O',
        '-t',
        this.target,
        // cat writes what it reads at once (head would buffer); the file size limit stops it.
        `exec /bin/bash -c 'ulimit -f ${TMUX_LOG_BYTES / 1024}; exec cat >> ${this.log}'`,
      ],
      'start',
      true,
    );
  }

  /**
   * Short keys go as one tmux argument, so a key name is pressed; long ones are typed literally in
   * pieces that tmux accepts. tmux reads an argument ending in ";" as the end of a command unless the
   * ";" is escaped as "\;".
   */
  async sendKeys(keys: string): Promise<void> {
    if (keys.length <= TMUX_KEYS_CHUNK) {
      const argument = keys.endsWith(';') ? `${keys.slice(0, -1)}\\;` : keys;
      await this.tmux(['send-keys', '-t', this.target, '--', argument], 'send_keys', true);
      return;
    }
    for (let start = 0; start < keys.length;) {
      let end = Math.min(start + TMUX_KEYS_CHUNK, keys.length);
      // Never split a surrogate pair.
      if (end < keys.length && /[\uD800-\uDBFF]/.test(keys.charAt(end - 1))) end -= 1;
      let piece = keys.slice(start, end);
      if (piece.endsWith(';')) piece = `${piece.slice(0, -1)}\\;`;
      await this.tmux(['send-keys', '-l', '-t', this.target, '--', piece], 'send_keys', true);
      start = end;
    }
  }

  async capture(): Promise<{
    text: string;
    width: number;
    height: number;
    cursorX: number;
    cursorY: number;
  }> {
    const result = await this.tmux(
      [
        'capture-pane',
        '-p',
        '-t',
        this.target,
        ';',
        'display-message',
        '-p',
        '-t',
        this.target,
        '#{pane_width} #{pane_height} #{cursor_x} #{cursor_y}',
      ],
      'capture',
      true,
    );
    const rows = result.stdout.replace(/\n$/, '').split('\n');
    const [width = 0, height = 0, cursorX = 0, cursorY = 0] = (rows.pop() ?? '').split(' ').map(Number);
    while (rows.length > 0 && rows.at(-1)?.trim() === '') rows.pop();
    return { text: rows.map((row) => `${row}\n`).join(''), width, height, cursorX, cursorY };
  }

  /** Size of the session's output log: it grows with every byte the pane receives. */
  async logBytes(): Promise<number> {
    const result = await this.program([
      '/bin/bash',
      '-c',
      'stat -c %s -- "$1" 2>/dev/null || echo 0',
      'bash',
      this.log,
    ]);
    return Number.parseInt(result.stdout, 10) || 0;
  }

  /** Up to {@link STREAM_READ_BYTES} of the log from line `offset` (0-based). */
  async readLog(offset: number): Promise<string> {
    const result = await this.program([
      '/bin/bash',
      '-c',
      'tail -n "+$1" -- "$2" 2>/dev/null | head -c "$3"',
      'bash',
      String(offset + 1),
      this.log,
      String(STREAM_READ_BYTES),
    ]);
    return result.stdout;
  }

  async stop(): Promise<void> {
    await this.tmux(['kill-session', '-t', `=${this.name}`], 'stop', true);
    await this.program(['rm', '-f', '--', this.log]);
  }

  /** Runs tmux on the sandbox's server; a failure throws when `required`, with tmux's message. */
  private async tmux(
    args: string[],
    action: string,
    required = false,
  ): Promise<{ exitCode: number; stdout: string }> {
    const result = await this.sandbox.runProgram(['tmux', '-S', TMUX_SOCKET, '-f', '/dev/null', ...args]);
    if (result.exitCode === 127) throw new SandboxError('tmux is not installed on the sandbox host');
    if (required && result.exitCode !== 0) {
      const detail = result.stderr.trim().split('\n')[0] || `exit code ${result.exitCode}`;
      throw new SandboxError(`tmux ${action} failed: ${detail}`);
    }
    return result;
  }

  private async program(argv: string[]): Promise<{ stdout: string }> {
    const result = await this.sandbox.runProgram(argv);
    if (result.exitCode !== 0) {
      const detail = result.stderr.trim().split('\n')[0] || `exit code ${result.exitCode}`;
      throw new SandboxError(`${argv[0] ?? 'program'} failed in the sandbox: ${detail}`);
    }
    return result;
  }
}

/**
 * One line of raw terminal output as it would read on screen: escape sequences (colours, cursor
 * moves, bracketed paste) removed, a carriage return going back to the line's start and a backspace
 * one character left, so a progress bar shows its last state. Other control characters are dropped.
 */
export function terminalLine(raw: string): string {
  /* eslint-disable no-control-regex -- escape sequences are made of control characters */
  const text = raw
    // OSC (window titles, hyperlinks), ended by BEL or ST.
    .replace(/\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?/g, '')
    // CSI: colours, cursor moves, modes.
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]/g, '')
    // Any other escape: charset selection, keypad modes.
    .replace(/\x1b[ -/]*[0-~]?/g, '');
  /* eslint-enable no-control-regex */
  const cells: string[] = [];
  let column = 0;
  for (const character of text) {
    if (character === '\r') column = 0;
    else if (character === '\b') column = Math.max(0, column - 1);
    else if (character === '\t' || (character >= ' ' && character !== '\x7f')) {
      cells[column] = character;
      column += 1;
    }
  }
  return Array.from(cells, (cell) => cell ?? ' ').join('');
}

function clampSize(
  requested: number | undefined,
  fallback: number,
  range: { min: number; max: number },
): number {
  if (requested === undefined || !Number.isFinite(requested)) return fallback;
  return Math.min(range.max, Math.max(range.min, Math.round(requested)));
}

function limitText(text: string): string {
  return withMarker(text.slice(0, MAX_STREAM_CHARS), text.length > MAX_STREAM_CHARS);
}

function withMarker(text: string, truncated: boolean): string {
  return truncated ? `${text}\n${TRUNCATION_MARKER}` : text;
}

function success(call: ToolCall, output: string, metadata: Record<string, unknown>): ToolResult {
  return { callId: call.callId, success: true, output, metadata };
}

function failure(call: ToolCall, error: string): ToolResult {
  return { callId: call.callId, success: false, output: '', error, metadata: {} };
}
