import type { Stats } from 'node:fs';
import { lstat, readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import { SandboxError } from './tool-call';

/** Where a workspace is mounted inside the sandbox: the absolute path commands and the model see. */
export const SANDBOX_WORKSPACE_PATH = '/workspace';

/** The refusal every path outside the workspace gets (SEED-BEHAVIOURS 41), reproduced exactly. */
export const ACCESS_DENIED_MESSAGE = 'Access denied: path outside workspace';

/** Symbolic links followed in one resolution before giving up: the kernel's own limit. */
const MAX_SYMLINK_HOPS = 40;

/** A path given by the model leads outside its workspace, directly, through `..` or through a symlink. */
export class PathOutsideWorkspaceError extends SandboxError {
  override readonly name = 'PathOutsideWorkspaceError';

  constructor(readonly requestedPath: string) {
    super(ACCESS_DENIED_MESSAGE);
  }
}

/**
 * Resolves a path given by the model to the real host path it names inside the workspace, or throws
 * {@link PathOutsideWorkspaceError}.
 *
 * `requestedPath` is relative to the workspace, or absolute as seen inside the sandbox
 * (`/workspace/...`). The walk goes one component at a time from the workspace's real root, the way
 * the kernel would inside the sandbox: symlinks are followed with their targets read in the sandbox's
 * view (an absolute target must be under `/workspace`, a relative one resolves from the link's
 * folder) and `..` at the root is refused. Every folder it passes through is a real folder inside the
 * workspace, so nothing outside is ever touched, and a link a command made with a `/workspace/...`
 * target resolves as it does for that command. Components that do not exist yet (a file to write,
 * folders to create) are taken literally and must stay inside too. The answer contains no symlink
 * among its existing components, so callers can open it with `O_NOFOLLOW`.
 */
export async function resolveInWorkspace(workspaceRoot: string, requestedPath: string): Promise<string> {
  const root = await realpath(workspaceRoot);
  const denied = new PathOutsideWorkspaceError(requestedPath);
  const pending = sandboxRelativeComponents(requestedPath);
  if (pending === undefined) throw denied;

  let current = root;
  let symlinkHops = 0;
  for (let component = pending.shift(); component !== undefined; component = pending.shift()) {
    if (component === '' || component === '.') continue;
    if (component === '..') {
      if (current === root) throw denied;
      current = path.dirname(current);
      continue;
    }
    const next = path.join(current, component);
    const stats = await lstatIfPresent(next);
    if (stats === undefined) {
      const target = path.resolve(next, ...pending);
      if (!isInside(root, target)) throw denied;
      return target;
    }
    if (stats.isSymbolicLink()) {
      symlinkHops += 1;
      if (symlinkHops > MAX_SYMLINK_HOPS) {
        throw new SandboxError(`Too many levels of symbolic links: ${requestedPath}`);
      }
      const target = await readlink(next);
      if (path.posix.isAbsolute(target)) {
        const fromRoot = sandboxRelativeComponents(target);
        if (fromRoot === undefined) throw denied;
        current = root;
        pending.unshift(...fromRoot);
      } else {
        pending.unshift(...target.split('/'));
      }
      continue;
    }
    current = next;
  }
  return current;
}

/**
 * The components of a sandbox path relative to `/workspace`, or undefined when an absolute path
 * points elsewhere in the sandbox (`/etc/passwd`, `/tmp/x`).
 */
function sandboxRelativeComponents(sandboxPath: string): string[] | undefined {
  if (!path.posix.isAbsolute(sandboxPath)) return sandboxPath.split('/');
  const normalized = path.posix.normalize(sandboxPath);
  if (normalized === SANDBOX_WORKSPACE_PATH || normalized === `${SANDBOX_WORKSPACE_PATH}/`) return [];
  if (!normalized.startsWith(`${SANDBOX_WORKSPACE_PATH}/`)) return undefined;
  return normalized.slice(SANDBOX_WORKSPACE_PATH.length + 1).split('/');
}

/** The entry's own stats, or undefined when nothing is there (or a file stands where a folder should). */
async function lstatIfPresent(hostPath: string): Promise<Stats | undefined> {
  try {
    return await lstat(hostPath);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw error;
  }
}

function isInside(root: string, candidate: string): boolean {
  return candidate === root || candidate.startsWith(root.endsWith(path.sep) ? root : root + path.sep);
}
