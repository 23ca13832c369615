import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import {
  DEFAULT_SANDBOX_LIMITS,
  FIRST_EXTRA_DESCRIPTOR,
  OUTPUT_FLOOD_FACTOR,
  sandboxHostIdentity,
  spawnBubblewrap,
} from './bubblewrap';
import {
  DEFAULT_SANDBOX_TOTALS,
  describeLimitKill,
  watchSandbox,
  type SandboxLimitKill,
  type WatchedTotals,
} from './sandbox-watchdog';
import { defaultNetworkEgress, networkEnabled, type NetworkEgress, type NetworkProxy } from './network-proxy';
import { MAX_STREAM_CHARS, SandboxError, type SandboxPolicy } from './tool-call';

/**
 * A long-lived sandbox for one trajectory: the same bubblewrap sandbox as a `bash` call (namespaces,
 * read-only system, private /tmp, limits, clean environment, uid 65534 on the host when root), kept
 * running between calls so that a shell's state and tmux sessions survive from one call to the next.
 *
 * Inside, bwrap runs a small controller (a bash script, see {@link controllerScript}) that talks to
 * the host over pipes only; nothing inside the sandbox is reachable from the host's file system, and
 * the host never connects to a socket the sandbox could have replaced:
 *
 * - descriptors 0/1 carry requests and answers: a request is an argv (NUL-terminated items, ended by
 *   an empty item) that the controller runs, answering with one line `status base64(stdout)
 *   base64(stderr)`. The tmux tool drives tmux this way, with a socket in the sandbox's private /tmp.
 * - descriptors 5/6/7 belong to a persistent bash (see {@link SHELL_LOOP}): it reads a nonce and a
 *   command (NUL-terminated) from 5, `eval`s the command in its own process, so `cd`, variables and
 *   functions persist, then prints `__AGENTS_EXIT_<nonce>_<status>__` on stdout (6) and stderr (7).
 *
 * Why a shell over pipes rather than typing commands into a tmux pane: the output of a call is then
 * exactly what the command wrote, stdout and stderr apart as for `bash`, with no terminal echo,
 * line wrapping, escape sequences or 20,000-line history to cut it short; the exit marker is found
 * in the byte stream instead of by polling the screen. Commands get /dev/null on stdin, as in
 * `bash`, so one that reads its input ends instead of hanging. Interactive programs belong in the
 * tmux tool, which shares this sandbox (its /tmp, processes and network).
 */

/**
 * CPU seconds per process (RLIMIT_CPU). A session's own processes (controller, shell, tmux server)
 * live for many calls, so the per-call limit of `bash` would kill them; this backs up the
 * wall-clock limit of each call and the idle close instead.
 */
const STATEFUL_CPU_LIMIT_S = 3600;

/** Time the sandbox has to start and say it is ready. */
const READY_TIMEOUT_MS = 15_000;

/** Time one controller request (a tmux command, say) has to answer before the sandbox is torn down. */
const PROGRAM_TIMEOUT_MS = 15_000;

/** Characters of the controller's own stderr kept to explain a failed start. */
const DIAGNOSTICS_CHARS = 4_000;

/** Characters kept at the end of a stream to find a marker split across chunks; longer than any marker. */
const MARKER_WINDOW_CHARS = 256;

/**
 * Descriptors where the shell keeps its original stdout and stderr for the end markers, so a command
 * that redirects its shell's own output (`exec 2>/dev/null`, `exec >log`) still ends visibly. High,
 * so they stay clear of the 3-9 scripts use; bash moves its own saved descriptors around taken ones.
 */
const MARKER_STDOUT = 61;
const MARKER_STDERR = 62;

/**
 * The persistent shell's loop. It runs in the same bash process as the commands it evals, so their
 * state persists; descriptor 5 is closed around each command so nothing it starts can read the
 * host's next command. A command that ends the shell (`exit`, `exec`, `set -e`) ends only this
 * process: the controller starts a fresh one and reports the end with the session's nonce.
 */
const SHELL_LOOP = [
  `exec ${MARKER_STDOUT}>&1 ${MARKER_STDERR}>&2`,
  `while IFS= read -r -d '' -u ${FIRST_EXTRA_DESCRIPTOR} __agents_nonce && IFS= read -r -d '' -u ${FIRST_EXTRA_DESCRIPTOR} __agents_command; do`,
  `  eval "$__agents_command" ${FIRST_EXTRA_DESCRIPTOR}<&-`,
  '  __agents_status=$?',
  `  builtin printf '\\n__AGENTS_EXIT_%s_%s__\\n' "$__agents_nonce" "$__agents_status" >&${MARKER_STDERR}`,
  `  builtin printf '\\n__AGENTS_EXIT_%s_%s__\\n' "$__agents_nonce" "$__agents_status" >&${MARKER_STDOUT}`,
  'done',
].join('\n');

/**
 * The sandbox's main process. It starts the shell under a supervisor loop that restarts it when it
 * ends, closes the shell's descriptors in itself, says `ready`, then serves requests until the host
 * closes its stdin. Requests run with their output in files under /tmp: bash cannot hold NULs nor
 * (with `$(…)`) trailing newlines, and base64 makes any output one line of the answer.
 */
function controllerScript(sessionNonce: string): string {
  const shellOut = FIRST_EXTRA_DESCRIPTOR + 1;
  const shellErr = FIRST_EXTRA_DESCRIPTOR + 2;
  return [
    `shell_loop=${shellQuote(SHELL_LOOP)}`,
    `( exec ${shellOut}>&- ${shellErr}>&-`,
    '  while :; do',
    '    /bin/bash --noprofile --norc -c "$shell_loop" bash',
    '    status=$?',
    `    printf '\\n__AGENTS_SHELL_EXITED_${sessionNonce}_%s__\\n' "$status" >&2`,
    `    printf '\\n__AGENTS_SHELL_EXITED_${sessionNonce}_%s__\\n' "$status"`,
    '  done',
    `) </dev/null >&${shellOut} 2>&${shellErr} &`,
    `exec ${FIRST_EXTRA_DESCRIPTOR}<&- ${shellOut}>&- ${shellErr}>&-`,
    'answers=/tmp/.agents-control',
    "printf 'ready\\n'",
    'while :; do',
    '  request=()',
    '  while :; do',
    "    IFS= read -r -d '' item || exit 0",
    '    [ -n "$item" ] || break',
    '    request+=("$item")',
    '  done',
    '  [ -d "$answers" ] || mkdir -p "$answers"',
    '  "${request[@]}" </dev/null >"$answers/out" 2>"$answers/err"',
    '  status=$?',
    `  printf '%s %s %s\\n' "$status" "$(base64 -w0 "$answers/out")" "$(base64 -w0 "$answers/err")"`,
    'done',
  ].join('\n');
}

/** How one command of the persistent shell ended. */
export type ShellEnding =
  /** The command ran to its end; the shell lives on. */
  | 'exited'
  /** The command ended the shell itself (`exit 3`); the next call gets a fresh shell. */
  | 'shell-exited'
  /** The wall-clock limit passed; the sandbox was torn down. */
  | 'timeout'
  /** A stream went over {@link OUTPUT_FLOOD_FACTOR} times its limit; the sandbox was torn down. */
  | 'output-limit'
  /** The sandbox ended under the command (closed, or its controller was killed). */
  | 'sandbox-ended'
  /** The watchdog tore the sandbox down: disk quota or memory limit (see `limitExceeded`). */
  | 'limit-exceeded';

/** What one command of the persistent shell did. */
export interface ShellCommandResult {
  stdout: string;
  stderr: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** The command's status; -1 when it did not end on its own. */
  exitCode: number;
  ending: ShellEnding;
  /** What the watchdog measured when `ending` is 'limit-exceeded'. */
  limitExceeded?: SandboxLimitKill;
  durationMs: number;
}

/** What a program run by the controller did. */
export interface ProgramResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

interface PendingAnswer {
  resolve: (result: ProgramResult) => void;
  reject: (error: Error) => void;
}

interface RunningShellCommand {
  stdout: MarkedStream;
  stderr: MarkedStream;
  /** Checks whether the command is over after new output. */
  onOutput: () => void;
  /** Ends the command because the sandbox ended. */
  onSandboxEnd: () => void;
}

/** One trajectory's long-lived sandbox; see the module comment. Made by {@link StatefulSandbox.start}. */
export class StatefulSandbox {
  /** The network part of the policy the sandbox was started with. */
  readonly network: SandboxPolicy['network'];
  private readonly child: ChildProcess;
  private readonly requests: Writable;
  private readonly commands: Writable;
  private readonly sessionNonce = randomBytes(12).toString('hex');
  private readonly pendingAnswers: PendingAnswer[] = [];
  private answerBuffer = '';
  private diagnostics = '';
  private running: RunningShellCommand | undefined;
  private ready = false;
  private readyWaiter: { resolve: () => void; reject: (error: Error) => void } | undefined;
  private spawnError: Error | undefined;
  private ending = false;
  private readonly closed: Promise<void>;
  private limitKill: SandboxLimitKill | undefined;
  /** Whether a call was told of {@link limitKill} (it ended under one), so the next need not be. */
  private limitKillReported = false;

  private constructor(
    readonly workspace: string,
    policy: SandboxPolicy,
    totals: WatchedTotals,
    private readonly proxy: NetworkProxy | undefined,
  ) {
    this.network = policy.network;
    this.child = spawnBubblewrap(controllerScript(this.sessionNonce), {
      workspace,
      policy,
      ...(proxy === undefined ? {} : { networkProxyFolder: proxy.folder }),
      limits: DEFAULT_SANDBOX_LIMITS,
      cpuLimitS: STATEFUL_CPU_LIMIT_S,
      hostIdentity: sandboxHostIdentity(),
      stdinPipe: true,
      extraPipes: 3,
    });
    const pipes = this.child.stdio as ReadonlyArray<Readable | Writable | null | undefined>;
    this.requests = pipes[0] as Writable;
    this.commands = pipes[FIRST_EXTRA_DESCRIPTOR] as Writable;
    const answers = pipes[1] as Readable;
    const diagnostics = pipes[2] as Readable;
    const shellOut = pipes[FIRST_EXTRA_DESCRIPTOR + 1] as Readable;
    const shellErr = pipes[FIRST_EXTRA_DESCRIPTOR + 2] as Readable;

    // The sandbox ending first makes these writes fail; its end is reported on its own.
    this.requests.on('error', () => undefined);
    this.commands.on('error', () => undefined);
    answers.setEncoding('utf8').on('data', (chunk: string) => this.onAnswers(chunk));
    diagnostics.setEncoding('utf8').on('data', (chunk: string) => {
      if (this.diagnostics.length < DIAGNOSTICS_CHARS) this.diagnostics += chunk;
    });
    // Output that arrives between calls (from something left in the background) is dropped.
    shellOut.setEncoding('utf8').on('data', (chunk: string) => {
      this.running?.stdout.add(chunk);
      this.running?.onOutput();
    });
    shellErr.setEncoding('utf8').on('data', (chunk: string) => {
      this.running?.stderr.add(chunk);
      this.running?.onOutput();
    });

    // For as long as the sandbox lives, between calls too: its background processes can write and
    // allocate when no call runs.
    const stopWatch = watchSandbox(this.child, workspace, totals, (kill) => {
      if (this.ending) return;
      this.limitKill = kill;
      void this.close();
    });
    this.child.once('error', (error) => {
      this.spawnError = error;
    });
    this.child.once('exit', () => {
      this.ending = true;
    });
    // 'close' comes after the exit and after every process of the sandbox let go of the pipes, so
    // whatever they wrote has been read.
    this.closed = new Promise<void>((resolve) => {
      this.child.once('close', (code: number | null) => {
        this.ending = true;
        stopWatch();
        this.readyWaiter?.reject(this.startFailure(code));
        if (this.running !== undefined || this.pendingAnswers.length > 0) this.limitKillReported = true;
        const ended = this.endedError();
        for (const pending of this.pendingAnswers.splice(0)) pending.reject(ended);
        this.running?.onSandboxEnd();
        resolve();
      });
    }).then(() => this.proxy?.close());

    // A session never keeps the server's process alive by itself, and dies with it (--die-with-parent).
    this.keepProcessAlive(false);
  }

  /**
   * Starts a sandbox on `workspace` and waits until its controller is ready. With the network on,
   * the sandbox gets a proxy of `network` (the process's default egress unless given) of its own,
   * for its whole life. Rejects with a {@link SandboxError} saying why when it cannot start, or with
   * the signal's reason on abort.
   */
  static async start(
    workspace: string,
    policy: SandboxPolicy,
    signal: AbortSignal,
    totals: WatchedTotals = DEFAULT_SANDBOX_TOTALS,
    network?: NetworkEgress,
  ): Promise<StatefulSandbox> {
    signal.throwIfAborted();
    const egress = networkEnabled(policy)
      ? (network ?? (await defaultNetworkEgress(sandboxHostIdentity())))
      : undefined;
    const proxy = networkEnabled(policy) ? await egress?.open(policy.network) : undefined;
    let sandbox: StatefulSandbox;
    try {
      sandbox = new StatefulSandbox(workspace, policy, totals, proxy);
    } catch (error) {
      await proxy?.close();
      throw error;
    }
    try {
      await sandbox.waitUntilReady(signal);
    } catch (error) {
      await sandbox.close();
      throw error;
    }
    return sandbox;
  }

  /** False once the sandbox has ended or is being closed: the next call needs a new one. */
  get alive(): boolean {
    return !this.ending;
  }

  /** The connections its network proxy refused since the last call, one line each. */
  takeNetworkRefusals(): string[] {
    return this.proxy?.takeRefusals() ?? [];
  }

  /**
   * Why the watchdog tore this sandbox down, when no call has been told yet (it happened between
   * calls); once only.
   */
  takeUnreportedLimitKill(): SandboxLimitKill | undefined {
    if (this.limitKillReported) return undefined;
    this.limitKillReported = true;
    return this.limitKill;
  }

  private endedError(): SandboxError {
    return new SandboxError(
      this.limitKill === undefined ? 'The stateful sandbox has ended' : describeLimitKill(this.limitKill),
    );
  }

  /**
   * Runs `command` in the persistent shell and waits for its exit marker. A timeout or an output
   * flood tears the sandbox down (the command may hold anything, so nothing short of that is sure to
   * stop it); both resolve, once the sandbox is gone, with what was captured. Rejects with the signal's reason, after tearing
   * the sandbox down, when `signal` aborts.
   */
  runShellCommand(command: string, timeoutS: number, signal: AbortSignal): Promise<ShellCommandResult> {
    signal.throwIfAborted();
    const startedAt = performance.now();
    const nonce = randomBytes(12).toString('hex');
    const marker = new RegExp(`\\n__AGENTS_(EXIT_${nonce}|SHELL_EXITED_${this.sessionNonce})_(\\d+)__\\n`);
    const stdout = new MarkedStream(MAX_STREAM_CHARS, marker);
    const stderr = new MarkedStream(MAX_STREAM_CHARS, marker);

    const result = (ending: ShellEnding): ShellCommandResult => ({
      stdout: stdout.text,
      stderr: stderr.text,
      stdoutTruncated: stdout.truncated,
      stderrTruncated: stderr.truncated,
      exitCode: ending === 'exited' || ending === 'shell-exited' ? (stdout.end?.status ?? -1) : -1,
      ending,
      ...(ending === 'limit-exceeded' && this.limitKill !== undefined
        ? { limitExceeded: this.limitKill }
        : {}),
      durationMs: Math.round(performance.now() - startedAt),
    });
    if (!this.alive) return Promise.resolve(result('sandbox-ended'));

    return new Promise<ShellCommandResult>((resolve, reject) => {
      const stop = (): boolean => {
        if (this.running !== running) return false;
        this.running = undefined;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        return true;
      };
      const finish = (ending: ShellEnding): void => {
        if (!stop()) return;
        const captured = result(ending);
        // Answered once the sandbox is gone, so nothing of the command outlives its result.
        if (ending === 'timeout' || ending === 'output-limit')
          void this.close().then(() => resolve(captured));
        else resolve(captured);
      };
      const onAbort = (): void => {
        if (!stop()) return;
        void this.close();
        reject(abortReason(signal));
      };
      const running: RunningShellCommand = {
        stdout,
        stderr,
        onOutput: () => {
          if (stdout.end !== undefined && stderr.end !== undefined) {
            finish(stdout.end.kind.startsWith('EXIT_') ? 'exited' : 'shell-exited');
          } else if (Math.max(stdout.received, stderr.received) > MAX_STREAM_CHARS * OUTPUT_FLOOD_FACTOR) {
            // As for `bash`: a flood ends the command instead of being drained until its timeout.
            finish('output-limit');
          }
        },
        onSandboxEnd: () => finish(this.limitKill === undefined ? 'sandbox-ended' : 'limit-exceeded'),
      };
      this.running = running;
      const timer = setTimeout(() => finish('timeout'), timeoutS * 1000);
      signal.addEventListener('abort', onAbort, { once: true });
      this.commands.write(`${nonce}\0${command}\0`);
    });
  }

  /**
   * Runs a program inside the sandbox (the controller's request channel) and returns its status and
   * output. Items of `argv` must be non-empty and free of NUL, as the framing requires. Throws a
   * {@link SandboxError} when the sandbox has ended, or does not answer within
   * {@link PROGRAM_TIMEOUT_MS} (it is torn down then).
   */
  runProgram(argv: readonly string[]): Promise<ProgramResult> {
    if (argv.length === 0 || argv.some((item) => item.length === 0 || item.includes('\0'))) {
      return Promise.reject(
        new SandboxError('A program argument must be non-empty and free of NUL characters'),
      );
    }
    if (!this.alive) {
      if (this.limitKill !== undefined) this.limitKillReported = true;
      return Promise.reject(this.endedError());
    }
    return new Promise<ProgramResult>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new SandboxError(`The sandbox did not answer within ${PROGRAM_TIMEOUT_MS / 1000}s`));
        void this.close();
      }, PROGRAM_TIMEOUT_MS);
      this.pendingAnswers.push({
        resolve: (result) => {
          clearTimeout(timer);
          resolve(result);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
      this.requests.write(`${argv.join('\0')}\0\0`);
    });
  }

  /**
   * Kills the sandbox and everything in it (killing bwrap takes its pid namespace down) and waits
   * until its processes have let go of the pipes. Safe to call more than once.
   */
  async close(): Promise<void> {
    this.ending = true;
    // Until the sandbox is gone, or a caller awaiting this could see the process exit first.
    this.keepProcessAlive(true);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.closed;
  }

  private keepProcessAlive(keep: boolean): void {
    const handles = [this.child, ...(this.child.stdio as ReadonlyArray<Partial<Socket> | null | undefined>)];
    for (const handle of handles) {
      if (keep) handle?.ref?.();
      else handle?.unref?.();
    }
  }

  private waitUntilReady(signal: AbortSignal): Promise<void> {
    if (this.ready) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          settle(new SandboxError(`The stateful sandbox did not start within ${READY_TIMEOUT_MS / 1000}s`)),
        READY_TIMEOUT_MS,
      );
      const onAbort = (): void => settle(abortReason(signal));
      const settle = (error?: Error): void => {
        if (this.readyWaiter === undefined) return;
        this.readyWaiter = undefined;
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        if (error === undefined) resolve();
        else reject(error);
      };
      this.readyWaiter = { resolve: () => settle(), reject: settle };
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private onAnswers(chunk: string): void {
    this.answerBuffer += chunk;
    for (;;) {
      const newline = this.answerBuffer.indexOf('\n');
      if (newline < 0) return;
      const line = this.answerBuffer.slice(0, newline);
      this.answerBuffer = this.answerBuffer.slice(newline + 1);
      if (!this.ready) {
        this.ready = line === 'ready';
        if (this.ready) this.readyWaiter?.resolve();
        continue;
      }
      const [status = '', stdout = '', stderr = ''] = line.split(' ');
      this.pendingAnswers.shift()?.resolve({
        exitCode: Number.parseInt(status, 10),
        stdout: Buffer.from(stdout, 'base64').toString('utf8'),
        stderr: Buffer.from(stderr, 'base64').toString('utf8'),
      });
    }
  }

  private startFailure(code: number | null): SandboxError {
    if (this.spawnError !== undefined) {
      return new SandboxError(`Cannot start bubblewrap: ${this.spawnError.message}`, {
        cause: this.spawnError,
      });
    }
    const detail = this.diagnostics.trim().split('\n')[0] || `bwrap exited with code ${code ?? 'none'}`;
    return new SandboxError(`Cannot start the stateful sandbox: ${detail}`);
  }
}

/**
 * One output stream of the shell during a command: keeps the first `limit` characters and finds the
 * command's end marker, which may arrive split across chunks and after any amount of output.
 */
class MarkedStream {
  /** The first `limit` + window characters received, so a marker near the limit can still be cut off. */
  private head = '';
  /** The last characters received, where the start of a split marker waits for its end. */
  private window = '';
  received = 0;
  /** The marker, once seen: its position in the stream, which marker, and the status it carries. */
  end: { position: number; kind: string; status: number } | undefined;

  constructor(
    private readonly limit: number,
    private readonly marker: RegExp,
  ) {}

  add(chunk: string): void {
    if (this.end !== undefined) return;
    const searched = this.window + chunk;
    const windowStart = this.received - this.window.length;
    this.received += chunk.length;
    if (this.head.length < this.limit + MARKER_WINDOW_CHARS) {
      this.head += chunk.slice(0, this.limit + MARKER_WINDOW_CHARS - this.head.length);
    }
    const match = this.marker.exec(searched);
    if (match !== null) {
      this.end = {
        position: windowStart + match.index,
        kind: match[1] ?? '',
        status: Number.parseInt(match[2] ?? '-1', 10),
      };
      return;
    }
    this.window = searched.slice(-MARKER_WINDOW_CHARS);
  }

  /** What the command wrote: up to the marker (or all so far), at most `limit` characters. */
  get text(): string {
    const length = Math.min(this.end?.position ?? this.received, this.limit);
    let kept = this.head.slice(0, length);
    // Never end on half of a surrogate pair.
    if (this.truncated && /[\uD800-\uDBFF]$/.test(kept)) kept = kept.slice(0, -1);
    return kept;
  }

  get truncated(): boolean {
    return (this.end?.position ?? this.received) > this.limit;
  }
}

/** `value` as one bash word, single-quoted. */
export function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new SandboxError('The command was aborted', { cause: reason });
}
