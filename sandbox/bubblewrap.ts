import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, lstatSync, readlinkSync, statSync } from 'node:fs';
import { chmod, lchown, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { MAX_STREAM_CHARS, SandboxError, type SandboxPolicy } from './tool-call';
import { SANDBOX_WORKSPACE_PATH } from './workspace-paths';

/**
 * Runs one shell command isolated with bubblewrap: its own user, pid, ipc, uts, cgroup and (unless
 * the run's policy allows the network) network namespaces, a read-only system, a private /tmp, the
 * workspace read-write at /workspace, a clean environment, resource limits and a wall-clock limit.
 * {@link spawnBubblewrap} builds the same sandbox for the long-lived sessions of `stateful-sandbox.ts`.
 */

/**
 * The bubblewrap executable, looked up in the server's own PATH (see {@link findBubblewrap}), so the
 * operator decides which bwrap runs, and a PATH without one means "no bubblewrap".
 */
export const BUBBLEWRAP_COMMAND = 'bwrap';

/**
 * User and group ID of commands inside the sandbox (nobody). When the server runs as root, bwrap
 * itself is started as this host user too (see {@link sandboxHostIdentity}).
 */
export const SANDBOX_USER_ID = 65534;
export const SANDBOX_GROUP_ID = 65534;

/** The sandbox's hostname (its own uts namespace), so the host's name does not leak in. */
export const SANDBOX_HOSTNAME = 'sandbox';

/** The name of the sandbox's user and group in its /etc/passwd and /etc/group. */
const SANDBOX_USER_NAME = 'sandbox';

/**
 * Processes the command may run at once (RLIMIT_NPROC): a fork bomb stops here. The kernel counts
 * them per user namespace and user, so each sandbox has its own 256; it never applies to a process
 * whose real host user is root, hence {@link sandboxHostIdentity}.
 */
export const SANDBOX_MAX_PROCESSES = 256;

/** Address space of each process (RLIMIT_AS): a memory hog fails to allocate instead of starving the host. */
export const SANDBOX_MAX_MEMORY_BYTES = 1024 * 1024 * 1024;

/**
 * CPU seconds per process (RLIMIT_CPU) beyond the call's timeout. The wall-clock kill comes first;
 * this backs it up should the server die without killing the sandbox.
 */
export const SANDBOX_CPU_MARGIN_S = 5;

/** Largest file a command may write (RLIMIT_FSIZE); the workspace is on the host's disk. */
export const SANDBOX_MAX_FILE_SIZE_BYTES = 100 * 1024 * 1024;

/** Open files per process (RLIMIT_NOFILE). */
export const SANDBOX_MAX_OPEN_FILES = 1024;

/** Size of each private memory-backed folder (/tmp and /dev/shm), which would otherwise grow into the host's RAM. */
export const SANDBOX_TMPFS_BYTES = 256 * 1024 * 1024;

/**
 * Output kept is {@link MAX_STREAM_CHARS} per stream; past this many times that on one stream the
 * command is killed rather than drained, so `yes` ends in milliseconds instead of at its timeout.
 */
export const OUTPUT_FLOOD_FACTOR = 10;

/** Resource limits applied inside the sandbox before the command starts. */
export interface SandboxLimits {
  maxProcesses: number;
  maxMemoryBytes: number;
  cpuMarginS: number;
  maxFileSizeBytes: number;
  maxOpenFiles: number;
  tmpfsBytes: number;
}

/** The limits every command gets unless its options say otherwise. */
export const DEFAULT_SANDBOX_LIMITS: Readonly<SandboxLimits> = {
  maxProcesses: SANDBOX_MAX_PROCESSES,
  maxMemoryBytes: SANDBOX_MAX_MEMORY_BYTES,
  cpuMarginS: SANDBOX_CPU_MARGIN_S,
  maxFileSizeBytes: SANDBOX_MAX_FILE_SIZE_BYTES,
  maxOpenFiles: SANDBOX_MAX_OPEN_FILES,
  tmpfsBytes: SANDBOX_TMPFS_BYTES,
};

/**
 * The whole environment of a command: nothing of the server's (tokens, API keys) reaches it. bwrap
 * gets it too, not just `--clearenv`, because the sandbox's pid 1 is a bwrap process whose
 * /proc/1/environ would still show the environment bwrap was started with.
 */
export const BUBBLEWRAP_ENVIRONMENT: Readonly<Record<string, string>> = {
  PATH: '/usr/local/bin:/usr/bin:/bin',
  HOME: SANDBOX_WORKSPACE_PATH,
  LANG: 'C.UTF-8',
  TERM: 'dumb',
};

/** A host user and group to start bwrap as. */
export interface HostIdentity {
  uid: number;
  gid: number;
}

/** How to run one command. */
export interface BubblewrapRunOptions {
  /** Host folder bound read-write at /workspace; the sandbox's user must be able to use it. */
  workspace: string;
  /** Wall-clock limit in seconds, already clamped by the caller. */
  timeoutS: number;
  /** The run's policy; `network: false` gives the command a network namespace with only loopback. */
  policy: SandboxPolicy;
  /** Aborting kills the command and rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Overrides of {@link DEFAULT_SANDBOX_LIMITS}. */
  limits?: Partial<SandboxLimits>;
  /** Characters kept per stream; {@link MAX_STREAM_CHARS} unless given. */
  maxStreamChars?: number;
  /** Host identity to start bwrap as; {@link sandboxHostIdentity} unless given. */
  hostIdentity?: HostIdentity;
}

/** What one command did. */
export interface BubblewrapResult {
  stdout: string;
  stderr: string;
  /** The command's exit code, 128 + n when killed by signal n, -1 when it timed out. */
  exitCode: number;
  timedOut: boolean;
  /** Either stream went over its limit. */
  truncated: boolean;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** Killed because a stream went over {@link OUTPUT_FLOOD_FACTOR} times its limit. */
  outputLimitExceeded: boolean;
  durationMs: number;
}

/**
 * The host user bwrap runs as: nobody when the server is root, the server's own user otherwise
 * (undefined: no switch). Without the switch, uid 65534 inside would be root outside: RLIMIT_NPROC
 * would not apply (the kernel exempts root), files made by commands would be root's, and a sandbox
 * escape would land as root.
 */
export function sandboxHostIdentity(): HostIdentity | undefined {
  return process.getuid?.() === 0 ? { uid: SANDBOX_USER_ID, gid: SANDBOX_GROUP_ID } : undefined;
}

/**
 * Gives a file or folder the server created in a workspace to the sandbox's host user, so commands
 * can change or delete it. Does nothing when the server is not root (the sandbox runs as the
 * server's user then). `lchown`, so a symlink is never followed out of the workspace.
 */
export async function handOverToSandbox(hostPath: string): Promise<void> {
  const identity = sandboxHostIdentity();
  if (identity !== undefined) await lchown(hostPath, identity.uid, identity.gid);
}

/**
 * Runs `command` with bash inside a fresh sandbox. Resolves once the command has ended and no process
 * of the sandbox holds its output pipes any more; whatever the command left running in the
 * background is killed with the sandbox's pid namespace when the command ends. A failing, timed-out
 * or flooding command resolves too (see the result's fields). Rejects with a {@link SandboxError}
 * when bwrap cannot be started, and with the signal's reason, after killing the sandbox, when
 * `signal` aborts.
 */
export async function runInBubblewrap(
  command: string,
  options: BubblewrapRunOptions,
): Promise<BubblewrapResult> {
  options.signal?.throwIfAborted();
  const limits: SandboxLimits = { ...DEFAULT_SANDBOX_LIMITS, ...options.limits };
  const startedAt = performance.now();

  const child = spawnBubblewrap(command, {
    workspace: options.workspace,
    policy: options.policy,
    limits,
    cpuLimitS: Math.ceil(options.timeoutS + limits.cpuMarginS),
    hostIdentity: options.hostIdentity ?? sandboxHostIdentity(),
  });
  return superviseCommand(child, {
    program: 'bubblewrap',
    timeoutS: options.timeoutS,
    signal: options.signal,
    maxStreamChars: options.maxStreamChars ?? MAX_STREAM_CHARS,
    startedAt,
    // Killing bwrap is enough: its pid 1 in the sandbox dies with it (--die-with-parent), and the
    // kernel then kills every process left in the sandbox's pid namespace.
    kill: () => child.kill('SIGKILL'),
  });
}

/** How {@link superviseCommand} watches one started command. */
export interface CommandSupervision {
  /** What was started, for the error when it could not be: "bubblewrap". */
  program: string;
  /** Wall-clock limit in seconds. */
  timeoutS: number;
  /** Aborting kills the command and rejects with the signal's reason. */
  signal: AbortSignal | undefined;
  /** Characters kept per stream. */
  maxStreamChars: number;
  /** `performance.now()` just before the command was spawned. */
  startedAt: number;
  /** Kills the command and every process it started; called at most once. */
  kill: () => void;
}

/**
 * Captures a started command's output and ends it the way {@link runInBubblewrap} promises: killed
 * (with `supervision.kill`) on timeout, output flood or abort, and settled once no process holds
 * its output pipes any more. Shared with the unsandboxed runner (`unsandboxed.ts`), so both give
 * the same result for the same command.
 */
export function superviseCommand(
  child: ChildProcess,
  supervision: CommandSupervision,
): Promise<BubblewrapResult> {
  const { maxStreamChars, signal } = supervision;
  const stdout = new StreamCapture(maxStreamChars);
  const stderr = new StreamCapture(maxStreamChars);
  let killReason: 'timeout' | 'output' | 'abort' | undefined;
  const killTree = (reason: 'timeout' | 'output' | 'abort'): void => {
    if (killReason !== undefined) return;
    killReason = reason;
    supervision.kill();
  };
  const onData = (capture: StreamCapture) => (chunk: string) => {
    capture.add(chunk);
    if (capture.received > maxStreamChars * OUTPUT_FLOOD_FACTOR) killTree('output');
  };
  child.stdout?.setEncoding('utf8').on('data', onData(stdout));
  child.stderr?.setEncoding('utf8').on('data', onData(stderr));

  const timer = setTimeout(() => killTree('timeout'), supervision.timeoutS * 1000);
  const onAbort = (): void => killTree('abort');
  signal?.addEventListener('abort', onAbort, { once: true });

  return new Promise<BubblewrapResult>((resolve, reject) => {
    let spawnError: Error | undefined;
    child.once('error', (error) => {
      spawnError = error;
    });
    // 'close' comes after the exit and after every holder of the output pipes is gone.
    child.once('close', (code: number | null, signalName: NodeJS.Signals | null) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (killReason === 'abort') {
        reject(abortReason(signal));
        return;
      }
      if (spawnError !== undefined) {
        reject(
          new SandboxError(`Cannot start ${supervision.program}: ${spawnError.message}`, {
            cause: spawnError,
          }),
        );
        return;
      }
      const timedOut = killReason === 'timeout';
      resolve({
        stdout: stdout.text,
        stderr: stderr.text,
        exitCode: timedOut ? -1 : exitCodeOf(code, signalName),
        timedOut,
        truncated: stdout.truncated || stderr.truncated,
        stdoutTruncated: stdout.truncated,
        stderrTruncated: stderr.truncated,
        outputLimitExceeded: killReason === 'output',
        durationMs: Math.round(performance.now() - supervision.startedAt),
      });
    });
  });
}

/** Descriptor of the first of {@link BubblewrapSpawnOptions.extraPipes}: 3 and 4 carry /etc/passwd and /etc/group. */
export const FIRST_EXTRA_DESCRIPTOR = 5;

/** How to build one sandbox, for a single command or for a long-lived session. */
export interface BubblewrapSpawnOptions {
  /** Host folder bound read-write at /workspace; the sandbox's user must be able to use it. */
  workspace: string;
  /** `network: false` gives the sandbox a network namespace with only loopback. */
  policy: SandboxPolicy;
  limits: SandboxLimits;
  /** CPU seconds each process of the sandbox may use (RLIMIT_CPU). */
  cpuLimitS: number;
  /** Host identity to start bwrap as; undefined: no switch (see {@link sandboxHostIdentity}). */
  hostIdentity: HostIdentity | undefined;
  /** A pipe on the command's stdin instead of nothing. */
  stdinPipe?: boolean;
  /**
   * Further pipes, passed to the command as descriptors {@link FIRST_EXTRA_DESCRIPTOR} onwards and
   * kept open by the prelude that closes every other descriptor above 2.
   */
  extraPipes?: number;
}

/**
 * Starts bwrap running `command` with bash in a sandbox built from `options`, and hands it the
 * sandbox's /etc/passwd and /etc/group. The caller owns the process: its output pipes, its end and
 * killing it (killing bwrap kills the whole sandbox). Throws a {@link SandboxError} when spawning
 * fails at once; a later failure (bwrap missing) comes as the child's 'error' event.
 */
export function spawnBubblewrap(command: string, options: BubblewrapSpawnOptions): ChildProcess {
  const extraPipes = options.extraPipes ?? 0;
  const executable = findBubblewrap();
  if (executable === undefined) {
    const notFound = Object.assign(new Error(`${BUBBLEWRAP_COMMAND} not found in PATH`), { code: 'ENOENT' });
    throw new SandboxError(`Cannot start bubblewrap: ${notFound.message}`, { cause: notFound });
  }
  let child: ChildProcess;
  try {
    child = spawn(executable, bubblewrapArguments(command, options), {
      // fds 3 and 4 carry the sandbox's /etc/passwd and /etc/group.
      stdio: [
        options.stdinPipe === true ? 'pipe' : 'ignore',
        'pipe',
        'pipe',
        'pipe',
        'pipe',
        ...Array.from({ length: extraPipes }, () => 'pipe' as const),
      ],
      env: { ...BUBBLEWRAP_ENVIRONMENT },
      ...options.hostIdentity,
    });
  } catch (error) {
    throw new SandboxError(`Cannot start bubblewrap: ${(error as Error).message}`, { cause: error });
  }
  // Only the sandbox's own user: tools that look their user up (whoami, git, ssh) work, and the
  // host's accounts stay unlisted.
  sendFile(
    child.stdio[3],
    `${SANDBOX_USER_NAME}:x:${SANDBOX_USER_ID}:${SANDBOX_GROUP_ID}:${SANDBOX_USER_NAME}:${SANDBOX_WORKSPACE_PATH}:/bin/bash\n`,
  );
  sendFile(child.stdio[4], `${SANDBOX_USER_NAME}:x:${SANDBOX_GROUP_ID}:\n`);
  return child;
}

/**
 * The absolute path of {@link BUBBLEWRAP_COMMAND} in the server's PATH, or undefined. Resolved here
 * because `spawn` would search the PATH of the environment it is given, and bwrap gets the
 * sandbox's clean {@link BUBBLEWRAP_ENVIRONMENT}, not the server's.
 */
export function findBubblewrap(): string | undefined {
  const searchPath = process.env.PATH ?? BUBBLEWRAP_ENVIRONMENT.PATH ?? '';
  for (const folder of searchPath.split(path.delimiter)) {
    if (!path.isAbsolute(folder)) continue;
    const candidate = path.join(folder, BUBBLEWRAP_COMMAND);
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // Not in this folder.
    }
  }
  return undefined;
}

/**
 * Tries `true` in a sandbox built exactly as for a command, once, so a server can refuse to start
 * with a clear reason when bubblewrap is missing or user namespaces are off, instead of failing (or,
 * like the reference, running unsandboxed) on the first call.
 */
export async function checkBubblewrap(): Promise<{ usable: true } | { usable: false; reason: string }> {
  const workspace = await mkdtemp(path.join(os.tmpdir(), 'bubblewrap-check-'));
  try {
    await chmod(workspace, 0o755);
    await handOverToSandbox(workspace);
    const result = await runInBubblewrap('true', { workspace, timeoutS: 30, policy: { network: false } });
    if (result.exitCode === 0) return { usable: true };
    const detail = result.stderr.trim().split('\n')[0] || `exit code ${result.exitCode}`;
    return {
      usable: false,
      reason:
        `bubblewrap cannot create a sandbox here (${detail}). Unprivileged user namespaces may be off: ` +
        'check kernel.unprivileged_userns_clone, user.max_user_namespaces and ' +
        'kernel.apparmor_restrict_unprivileged_userns, or the container runtime',
    };
  } catch (error) {
    const cause = (error as Error).cause as NodeJS.ErrnoException | undefined;
    if (cause?.code === 'ENOENT') {
      return { usable: false, reason: 'bubblewrap (bwrap) is not installed: install the bubblewrap package' };
    }
    return { usable: false, reason: `bubblewrap cannot be started: ${(error as Error).message}` };
  } finally {
    await rm(workspace, { recursive: true, force: true });
  }
}

/**
 * The bwrap command line. Order matters: bwrap applies the mount operations one after another, and
 * `--remount-ro /` comes last so the sandbox's root (and /etc in it) is read-only while /tmp,
 * /dev/shm and /workspace, mounts of their own, stay writable.
 */
export function bubblewrapArguments(command: string, options: BubblewrapSpawnOptions): string[] {
  const { limits } = options;
  const uid = String(SANDBOX_USER_ID);
  const gid = String(SANDBOX_GROUP_ID);
  const tmpfsSize = String(limits.tmpfsBytes);
  return [
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    ...(options.policy.network ? [] : ['--unshare-net']),
    '--new-session',
    '--die-with-parent',
    '--disable-userns',
    '--uid',
    uid,
    '--gid',
    gid,
    '--hostname',
    SANDBOX_HOSTNAME,
    '--cap-drop',
    'ALL',
    '--ro-bind',
    '/usr',
    '/usr',
    ...systemRootArguments(),
    '--perms',
    '0755',
    '--dir',
    '/etc',
    ...etcArguments(options.policy.network ? [...ETC_ENTRIES, ...NETWORK_ETC_ENTRIES] : ETC_ENTRIES),
    '--perms',
    '0644',
    '--ro-bind-data',
    '3',
    '/etc/passwd',
    '--perms',
    '0644',
    '--ro-bind-data',
    '4',
    '/etc/group',
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--perms',
    '1777',
    '--size',
    tmpfsSize,
    '--tmpfs',
    '/dev/shm',
    '--perms',
    '1777',
    '--size',
    tmpfsSize,
    '--tmpfs',
    '/tmp',
    '--bind',
    options.workspace,
    SANDBOX_WORKSPACE_PATH,
    '--remount-ro',
    '/',
    '--chdir',
    SANDBOX_WORKSPACE_PATH,
    '--clearenv',
    ...Object.entries(BUBBLEWRAP_ENVIRONMENT).flatMap(([name, value]) => ['--setenv', name, value]),
    '--',
    '/bin/bash',
    '-c',
    limitsPrelude(limits, options.cpuLimitS, options.extraPipes ?? 0),
    'sandbox',
    command,
  ];
}

/**
 * A bash script that prepares the process and then runs the command (its `$1`) in a fresh bash,
 * with builtins only, so it costs no fork. The unsandboxed runner (`unsandboxed.ts`) applies the
 * same script on the host.
 *
 * It closes every descriptor above 2 but the `extraPipes` the caller passed on purpose: bwrap passes
 * on whatever the server inherited without close-on-exec (a pipe from the server's own parent, say),
 * and a command must get none of it. Then it sets each limit hard and soft. Setting one can only fail
 * when the host's hard limit is already lower, which is stricter still, so a failure is ignored
 * rather than refusing to run.
 */
export function limitsPrelude(limits: SandboxLimits, cpuLimitS: number, extraPipes: number): string {
  const settings: Array<[string, number]> = [
    ['-u', limits.maxProcesses],
    ['-v', Math.floor(limits.maxMemoryBytes / 1024)],
    ['-t', cpuLimitS],
    ['-f', Math.floor(limits.maxFileSizeBytes / 1024)],
    ['-n', limits.maxOpenFiles],
  ];
  const kept =
    extraPipes === 0
      ? ''
      : ` && { [ "$descriptor" -lt ${FIRST_EXTRA_DESCRIPTOR} ] || [ "$descriptor" -ge ${FIRST_EXTRA_DESCRIPTOR + extraPipes} ]; }`;
  return [
    'for descriptor in /proc/self/fd/*; do',
    '  descriptor=${descriptor##*/}',
    `  if [ "$descriptor" -gt 2 ]${kept}; then eval "exec $descriptor>&-"; fi`,
    'done',
    ...settings.map(([flag, value]) => `ulimit -HS ${flag} ${value} 2>/dev/null`),
    'exec /bin/bash -c "$1"',
  ].join('\n');
}

/** Pieces of /etc that ordinary tools need (the dynamic linker's cache, `alternatives` links). */
const ETC_ENTRIES = [
  'alternatives',
  'ld.so.cache',
  'ld.so.conf',
  'ld.so.conf.d',
  'localtime',
  'nsswitch.conf',
  'hosts',
];

/** Pieces of /etc that only matter with the network: name resolution and TLS certificates. */
const NETWORK_ETC_ENTRIES = ['resolv.conf', 'host.conf', 'gai.conf', 'ssl', 'ca-certificates'];

function etcArguments(entries: readonly string[]): string[] {
  return entries.flatMap((entry) => ['--ro-bind-try', `/etc/${entry}`, `/etc/${entry}`]);
}

/** Top-level system folders besides /usr, as the host has them: symlinks into /usr (merged /usr) or folders. */
const SYSTEM_ROOT_ENTRIES = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'];

let systemRootCache: string[] | undefined;

function systemRootArguments(): string[] {
  systemRootCache ??= SYSTEM_ROOT_ENTRIES.flatMap((entry) => {
    const hostPath = `/${entry}`;
    try {
      const stats = lstatSync(hostPath);
      if (stats.isSymbolicLink()) return ['--symlink', readlinkSync(hostPath), hostPath];
      if (stats.isDirectory()) return ['--ro-bind', hostPath, hostPath];
    } catch {
      // Absent on this host (lib32 and libx32 usually are).
    }
    return [];
  });
  return systemRootCache;
}

/** Keeps the first `limit` characters of a stream and counts the rest. */
export class StreamCapture {
  text = '';
  received = 0;
  truncated = false;

  constructor(private readonly limit: number) {}

  add(chunk: string): void {
    this.received += chunk.length;
    const room = this.limit - this.text.length;
    if (chunk.length <= room) {
      this.text += chunk;
      return;
    }
    this.truncated = true;
    if (room <= 0) return;
    let kept = chunk.slice(0, room);
    // Never end on half of a surrogate pair.
    if (/[\uD800-\uDBFF]$/.test(kept)) kept = kept.slice(0, -1);
    this.text += kept;
  }
}

/** Writes a small file's content to one of bwrap's extra pipes; bwrap reads it before the command starts. */
function sendFile(stream: ChildProcess['stdio'][number], content: string): void {
  const writable = stream as Writable | null;
  if (writable === null) return;
  // bwrap failing early closes its end first; its exit status reports that, not this pipe.
  writable.on('error', () => undefined);
  writable.end(content);
}

function exitCodeOf(code: number | null, signalName: NodeJS.Signals | null): number {
  if (code !== null) return code;
  const signalNumber = signalName === null ? undefined : os.constants.signals[signalName];
  return signalNumber === undefined ? -1 : 128 + signalNumber;
}

function abortReason(signal: AbortSignal | undefined): Error {
  const reason: unknown = signal?.reason;
  return reason instanceof Error ? reason : new SandboxError('The command was aborted', { cause: reason });
}
