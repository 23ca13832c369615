import { spawn, type ChildProcess } from 'node:child_process';
import {
  BUBBLEWRAP_ENVIRONMENT,
  DEFAULT_SANDBOX_LIMITS,
  limitsPrelude,
  sandboxHostIdentity,
  superviseCommand,
  type BubblewrapResult,
  type HostIdentity,
  type SandboxLimits,
} from './bubblewrap';
import { MAX_STREAM_CHARS, SandboxError } from './tool-call';

/**
 * Runs one shell command on the host, without bubblewrap, for a sandbox server started with
 * `--unsafe-no-sandbox` on a machine where bubblewrap is not usable. It keeps what can be kept
 * without namespaces: the resource limits, a clean environment, the unprivileged user when the
 * server is root, the wall-clock limit and the kill of the whole process tree. It is no isolation:
 * a command sees the host's files, processes and network (the run's network policy cannot be
 * enforced), and one that calls `setsid` leaves the process group and outlives the kill.
 *
 * The workspace is the command's working directory under its host path: absolute `/workspace/...`
 * paths in a command do not map to it in this mode. Relative paths work as in the sandbox.
 */

/** How to run one command on the host. */
export interface UnsandboxedRunOptions {
  /** Host folder the command runs in; its host user must be able to use it. */
  workspace: string;
  /** Wall-clock limit in seconds, already clamped by the caller. */
  timeoutS: number;
  /** Aborting kills the command's process group and rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Overrides of {@link DEFAULT_SANDBOX_LIMITS}; `tmpfsBytes` does not apply (no private /tmp). */
  limits?: Partial<SandboxLimits>;
  /** Characters kept per stream; {@link MAX_STREAM_CHARS} unless given. */
  maxStreamChars?: number;
  /** Host identity to run as; {@link sandboxHostIdentity} unless given. */
  hostIdentity?: HostIdentity;
}

/**
 * Runs `command` with `/bin/bash -c` in the workspace folder, with the sandbox's limits prelude,
 * its clean environment (HOME is the workspace's host path), as nobody when the server is root, and
 * in a process group of its own. The result is the one `runInBubblewrap` gives. The group is
 * killed on timeout, output flood and abort, and when the command ends, so nothing it left in the
 * background keeps running, as in the sandbox. Rejects with a {@link SandboxError} when bash cannot
 * be started, and with the signal's reason when `signal` aborts.
 */
export async function runUnsandboxed(
  command: string,
  options: UnsandboxedRunOptions,
): Promise<BubblewrapResult> {
  options.signal?.throwIfAborted();
  const limits: SandboxLimits = { ...DEFAULT_SANDBOX_LIMITS, ...options.limits };
  const cpuLimitS = Math.ceil(options.timeoutS + limits.cpuMarginS);
  const startedAt = performance.now();
  let child: ChildProcess;
  try {
    child = spawn('/bin/bash', ['-c', limitsPrelude(limits, cpuLimitS, 0), 'sandbox', command], {
      cwd: options.workspace,
      env: { ...BUBBLEWRAP_ENVIRONMENT, HOME: options.workspace },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: the group's id is the bash's pid, which the kill below addresses.
      detached: true,
      ...(options.hostIdentity ?? sandboxHostIdentity()),
    });
  } catch (error) {
    throw new SandboxError(`Cannot start bash: ${(error as Error).message}`, { cause: error });
  }
  const killGroup = (): void => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // ESRCH: every process of the group has already ended.
    }
  };
  // The bubblewrap sandbox ends whatever the command left behind when its pid 1 exits; do the same.
  child.once('exit', killGroup);
  return superviseCommand(child, {
    program: 'bash',
    timeoutS: options.timeoutS,
    signal: options.signal,
    maxStreamChars: options.maxStreamChars ?? MAX_STREAM_CHARS,
    startedAt,
    kill: killGroup,
  });
}
