import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, lstatSync, readlinkSync, statSync } from 'node:fs';
import { chmod, lchown, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import {
  DEFAULT_SANDBOX_TOTALS,
  watchSandbox,
  type SandboxLimitKill,
  type WatchedTotals,
} from './sandbox-watchdog';
import {
  defaultNetworkEgress,
  findRelay,
  networkEnabled,
  SANDBOX_PROXY_FOLDER,
  SANDBOX_PROXY_PORT,
  SANDBOX_PROXY_SOCKET,
  SANDBOX_PROXY_URL,
  type NetworkEgress,
} from './network-proxy';
import { MAX_STREAM_CHARS, SandboxError, type SandboxPolicy } from './tool-call';
import { SANDBOX_WORKSPACE_PATH } from './workspace-paths';

/**
 * Runs one shell command isolated with bubblewrap: its own user, pid, ipc, uts, cgroup and network
 * namespaces (with the network on, the only way out is the run's proxy, see `network-proxy.ts`), a
 * read-only system, a private /tmp, the workspace read-write at /workspace, a clean environment,
 * resource limits and a wall-clock limit.
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
  // Commits an agent makes work with no configuration, and say who made them.
  GIT_AUTHOR_NAME: 'durable-agents',
  GIT_AUTHOR_EMAIL: 'agent@durable-agents.invalid',
  GIT_COMMITTER_NAME: 'durable-agents',
  GIT_COMMITTER_EMAIL: 'agent@durable-agents.invalid',
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
  /**
   * The run's policy. Every command has a network namespace of its own with only loopback; with the
   * network on, its way out is a proxy of `network` (`network-proxy.ts`) for this command alone.
   */
  policy: SandboxPolicy;
  /** The server's way out for its sandboxes; the process's default one unless given. */
  network?: NetworkEgress;
  /** Aborting kills the command and rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Overrides of {@link DEFAULT_SANDBOX_LIMITS}. */
  limits?: Partial<SandboxLimits>;
  /** Characters kept per stream; {@link MAX_STREAM_CHARS} unless given. */
  maxStreamChars?: number;
  /** Host identity to start bwrap as; {@link sandboxHostIdentity} unless given. */
  hostIdentity?: HostIdentity;
  /**
   * The workspace's disk quota and the memory of all the command's processes together, held by a
   * watchdog (`sandbox-watchdog.ts`); {@link DEFAULT_SANDBOX_TOTALS} unless given.
   */
  totals?: WatchedTotals;
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
  /** Connections the network proxy refused, one line each (only when there were some). */
  networkRefused?: string[];
  /** Killed by the watchdog: the workspace went over its disk quota or the processes over their memory. */
  limitExceeded?: SandboxLimitKill;
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
  const { policy } = options;
  const egress = networkEnabled(policy)
    ? (options.network ?? (await defaultNetworkEgress(sandboxHostIdentity())))
    : undefined;
  const proxy = networkEnabled(policy) ? await egress?.open(policy.network) : undefined;
  try {
    const result = await superviseBubblewrap(command, options, limits, startedAt, proxy?.folder);
    const refused = proxy?.takeRefusals() ?? [];
    return refused.length === 0 ? result : { ...result, networkRefused: refused };
  } finally {
    await proxy?.close();
  }
}

function superviseBubblewrap(
  command: string,
  options: BubblewrapRunOptions,
  limits: SandboxLimits,
  startedAt: number,
  networkProxyFolder: string | undefined,
): Promise<BubblewrapResult> {
  const child = spawnBubblewrap(command, {
    workspace: options.workspace,
    policy: options.policy,
    limits,
    cpuLimitS: Math.ceil(options.timeoutS + limits.cpuMarginS),
    hostIdentity: options.hostIdentity ?? sandboxHostIdentity(),
    ...(networkProxyFolder === undefined ? {} : { networkProxyFolder }),
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
    watch: (killForLimit) =>
      watchSandbox(child, options.workspace, options.totals ?? DEFAULT_SANDBOX_TOTALS, killForLimit),
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
  /**
   * Starts watching the command's totals (disk, memory) and returns the function that stops; the
   * watch calls `killForLimit` when a limit is crossed, which kills the command and says why.
   */
  watch?: (killForLimit: (kill: SandboxLimitKill) => void) => () => void;
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
  let killReason: 'timeout' | 'output' | 'abort' | 'limit' | undefined;
  let limitKill: SandboxLimitKill | undefined;
  const killTree = (reason: 'timeout' | 'output' | 'abort' | 'limit'): void => {
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
  const stopWatch = supervision.watch?.((kill) => {
    if (killReason !== undefined) return;
    limitKill = kill;
    killTree('limit');
  });

  return new Promise<BubblewrapResult>((resolve, reject) => {
    let spawnError: Error | undefined;
    child.once('error', (error) => {
      spawnError = error;
    });
    // 'close' comes after the exit and after every holder of the output pipes is gone.
    child.once('close', (code: number | null, signalName: NodeJS.Signals | null) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      stopWatch?.();
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
        ...(limitKill === undefined ? {} : { limitExceeded: limitKill }),
        durationMs: Math.round(performance.now() - supervision.startedAt),
      });
    });
  });
}

/**
 * Descriptor of the first of {@link BubblewrapSpawnOptions.extraPipes}: 3 and 4 carry /etc/passwd
 * and /etc/group, and the one after the extra pipes bwrap's own options (see {@link spawnBubblewrap}).
 */
export const FIRST_EXTRA_DESCRIPTOR = 5;

/** How to build one sandbox, for a single command or for a long-lived session. */
export interface BubblewrapSpawnOptions {
  /** Host folder bound read-write at /workspace; the sandbox's user must be able to use it. */
  workspace: string;
  /** The run's policy; the network itself comes only with {@link networkProxyFolder}. */
  policy: SandboxPolicy;
  /**
   * The host folder of the sandbox's network proxy socket, bound at `/run/agents-network`, with a
   * relay and the proxy variables set up before the command; undefined: no way out at all.
   */
  networkProxyFolder?: string;
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
  /** Host folders bound read-only into the sandbox, each at its own place under `/opt/`. */
  readOnlyMounts?: readonly ReadOnlyMount[];
}

/**
 * A host folder an operator offers to sandboxes read-only, such as the programs of MCP servers
 * installed outside /usr (everything under /usr is visible already).
 */
export interface ReadOnlyMount {
  /** The folder on the host: an absolute path. */
  hostPath: string;
  /** Where the sandbox sees it: a normalised absolute path under `/opt/`. */
  sandboxPath: string;
}

/** Where read-only mounts may go in a sandbox: nowhere the sandbox's own layout uses. */
export const READ_ONLY_MOUNT_PARENT = '/opt/';

/**
 * What is wrong with a read-only mount, or undefined when it can be bound. Its sandbox path must be
 * a normalised absolute path under {@link READ_ONLY_MOUNT_PARENT}, so a mount can neither hide nor
 * replace /usr, /etc, /workspace, /tmp or the network proxy's folder.
 */
export function readOnlyMountProblem(mount: ReadOnlyMount): string | undefined {
  const { hostPath, sandboxPath } = mount;
  if (hostPath.includes('\0') || sandboxPath.includes('\0')) return 'a path contains a NUL byte';
  if (!path.isAbsolute(hostPath)) return `the host folder must be an absolute path (got ${hostPath})`;
  if (
    !sandboxPath.startsWith(READ_ONLY_MOUNT_PARENT) ||
    sandboxPath.length === READ_ONLY_MOUNT_PARENT.length ||
    sandboxPath.endsWith('/') ||
    path.posix.normalize(sandboxPath) !== sandboxPath
  ) {
    return `the sandbox folder must be a normalised absolute path under ${READ_ONLY_MOUNT_PARENT} such as /opt/mcp (got ${sandboxPath})`;
  }
  return undefined;
}

/** bwrap's arguments for the read-only mounts; throws a {@link SandboxError} for one it cannot bind. */
function readOnlyMountArguments(mounts: readonly ReadOnlyMount[]): string[] {
  return mounts.flatMap((mount) => {
    const problem = readOnlyMountProblem(mount);
    if (problem !== undefined) throw new SandboxError(`Cannot mount ${mount.hostPath} read-only: ${problem}`);
    return ['--ro-bind', mount.hostPath, mount.sandboxPath];
  });
}

/**
 * Starts bwrap running `command` with bash in a sandbox built from `options`, and hands it the
 * sandbox's /etc/passwd and /etc/group. The caller owns the process: its output pipes, its end and
 * killing it (killing bwrap kills the whole sandbox). Throws a {@link SandboxError} when spawning
 * fails at once; a later failure (bwrap missing) comes as the child's 'error' event.
 *
 * bwrap's options (everything before `--`) reach it NUL-separated through a pipe (`--args FD`, the
 * descriptor after the extra pipes) rather than on its command line: bwrap stays the sandbox's pid
 * 1, and its /proc/1/cmdline would otherwise show the workspace's host path to every command.
 */
export function spawnBubblewrap(command: string, options: BubblewrapSpawnOptions): ChildProcess {
  const extraPipes = options.extraPipes ?? 0;
  const { bubblewrapOptions, sandboxCommand } = splitAtCommand(bubblewrapArguments(command, options));
  const argumentsDescriptor = FIRST_EXTRA_DESCRIPTOR + extraPipes;
  const executable = findBubblewrap();
  if (executable === undefined) {
    const notFound = Object.assign(new Error(`${BUBBLEWRAP_COMMAND} not found in PATH`), { code: 'ENOENT' });
    throw new SandboxError(`Cannot start bubblewrap: ${notFound.message}`, { cause: notFound });
  }
  let child: ChildProcess;
  try {
    child = spawn(executable, ['--args', String(argumentsDescriptor), ...sandboxCommand], {
      // fds 3 and 4 carry the sandbox's /etc/passwd and /etc/group, the last one bwrap's options.
      stdio: [
        options.stdinPipe === true ? 'pipe' : 'ignore',
        'pipe',
        'pipe',
        'pipe',
        'pipe',
        ...Array.from({ length: extraPipes }, () => 'pipe' as const),
        'pipe',
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
  // bwrap reads this to its end before anything else and closes it; the prelude closes it anyway.
  sendFile(child.stdio[argumentsDescriptor], bubblewrapOptions.map((argument) => `${argument}\0`).join(''));
  return child;
}

/**
 * Splits bwrap's arguments at the `--` before the command: the options go through `--args`, the
 * command stays on the command line (bwrap takes no command from an arguments descriptor). No
 * option value the server builds is `--` itself, so the first one is the separator.
 */
function splitAtCommand(all: string[]): { bubblewrapOptions: string[]; sandboxCommand: string[] } {
  const separator = all.indexOf('--');
  if (separator === -1) throw new SandboxError('Cannot start bubblewrap: no command in its arguments');
  const bubblewrapOptions = all.slice(0, separator);
  if (bubblewrapOptions.some((argument) => argument.includes('\0'))) {
    throw new SandboxError('Cannot start bubblewrap: an argument contains a NUL byte');
  }
  return { bubblewrapOptions, sandboxCommand: all.slice(separator) };
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
  const network = options.networkProxyFolder !== undefined;
  return [
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    // Always: with the network on, the one way out is the proxy's socket bound in below.
    '--unshare-net',
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
    ...etcArguments(network ? [...ETC_ENTRIES, ...NETWORK_ETC_ENTRIES] : ETC_ENTRIES),
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
    ...(network ? ['--ro-bind', options.networkProxyFolder ?? '', SANDBOX_PROXY_FOLDER] : []),
    ...readOnlyMountArguments(options.readOnlyMounts ?? []),
    '--remount-ro',
    '/',
    '--chdir',
    SANDBOX_WORKSPACE_PATH,
    '--clearenv',
    ...Object.entries({ ...BUBBLEWRAP_ENVIRONMENT, ...(network ? PROXY_ENVIRONMENT : {}) }).flatMap(
      ([name, value]) => ['--setenv', name, value],
    ),
    '--',
    '/bin/bash',
    '-c',
    limitsPrelude(limits, options.cpuLimitS, options.extraPipes ?? 0, network ? networkRelayScript() : []),
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
 * rather than refusing to run. `beforeCommand` (lines of bash) runs last, under those limits: the
 * network relay starts there.
 */
export function limitsPrelude(
  limits: SandboxLimits,
  cpuLimitS: number,
  extraPipes: number,
  beforeCommand: readonly string[] = [],
): string {
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
    ...beforeCommand,
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

/**
 * Pieces of /etc that only matter with the network: TLS certificates. No resolv.conf: names are
 * resolved by the proxy, on the host, never inside.
 */
const NETWORK_ETC_ENTRIES = ['ssl', 'ca-certificates'];

/**
 * The environment that points programs at the relay. `ALL_PROXY` too, an http:// URL, which curl
 * and most libraries take for any scheme; `NO_PROXY` keeps the sandbox's own loopback direct.
 */
const PROXY_ENVIRONMENT: Readonly<Record<string, string>> = {
  HTTP_PROXY: SANDBOX_PROXY_URL,
  HTTPS_PROXY: SANDBOX_PROXY_URL,
  http_proxy: SANDBOX_PROXY_URL,
  https_proxy: SANDBOX_PROXY_URL,
  ALL_PROXY: SANDBOX_PROXY_URL,
  all_proxy: SANDBOX_PROXY_URL,
  NO_PROXY: 'localhost,127.0.0.1,::1',
  no_proxy: 'localhost,127.0.0.1,::1',
};

/** Seconds the relay has to start listening before the command is refused. */
const RELAY_START_TIMEOUT_S = 5;

/**
 * Starts the relay (socat, from the host's read-only /usr) from the sandbox's loopback port to the
 * proxy's socket, in the background, and waits until it listens: a busy wait on /proc/net/tcp with
 * builtins only (the listening socket `0100007F:0C38`, state 0A), bounded by
 * {@link RELAY_START_TIMEOUT_S} and by the relay's own end. Costs one fork, the relay's.
 */
function networkRelayScript(): string[] {
  const relay = findRelay() ?? '/usr/bin/socat';
  const listening = `0100007F:${SANDBOX_PROXY_PORT.toString(16).toUpperCase().padStart(4, '0')}`;
  return [
    `${relay} TCP-LISTEN:${SANDBOX_PROXY_PORT},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:${SANDBOX_PROXY_SOCKET} </dev/null >/dev/null 2>&1 &`,
    'relay=$!',
    'relay_listening() {',
    '  local slot address remote state rest',
    '  while read -r slot address remote state rest; do',
    `    [ "$address" = ${listening} ] && [ "$state" = 0A ] && return 0`,
    '  done </proc/net/tcp',
    '  return 1',
    '}',
    `relay_deadline=$(( \${EPOCHREALTIME/[.,]/} + ${RELAY_START_TIMEOUT_S * 1_000_000} ))`,
    'until relay_listening; do',
    '  if ! kill -0 "$relay" 2>/dev/null || [ "${EPOCHREALTIME/[.,]/}" -gt "$relay_deadline" ]; then',
    "    echo 'sandbox: the network relay did not start' >&2",
    '    exit 125',
    '  fi',
    'done',
    'unset -f relay_listening; unset relay relay_deadline',
  ];
}

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
