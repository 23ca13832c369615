import { execFile } from 'node:child_process';
import { chmod, lstat, mkdir, readdir, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { handOverToSandbox, SANDBOX_GROUP_ID, SANDBOX_USER_ID, sandboxHostIdentity } from './bubblewrap';
import {
  AclTag,
  AclUnsupportedError,
  aclFromMode,
  encodePosixAcl,
  readPosixAcls,
  withUserTraversal,
  writePosixAcl,
  type AclEntry,
} from './posix-acl';
import { ensurePrivateFolder, PRIVATE_FOLDER_MODE, tightenPrivateFile } from './private-files';
import { SandboxError } from './tool-call';

/**
 * The folders of a sandbox server's root: private to the server's user, and, when the server is
 * root (bwrap then starts as the sandbox's user, uid 65534, and must reach the folder it binds at
 * /workspace), walkable by that one user and nobody else. A home folder of mode 0700 stays 0700
 * for everyone else: an ACL entry `user:65534:--x` is added to each folder above the workspaces
 * the sandbox's user cannot already traverse, so `$AGENTS_HOME/sandbox` works without opening
 * `/root` or `$AGENTS_HOME` to the machine.
 */

const execFileAsync = promisify(execFile);

/** What to tell the operator when the sandbox's user cannot be given a way down. */
const SET_ROOT_HINT =
  'Set AGENTS_SANDBOX_ROOT to a folder the sandbox user can reach (every folder above it open to others for traversal), such as /var/lib/durable-agents/sandbox';

/**
 * Creates the trajectories folder and its parent as private folders and, when bwrap runs as the
 * sandbox's user, opens the chain from it up to `/` for that user's traversal, then checks as that
 * user that it really can get there. Fails with a {@link SandboxError} that says what to do.
 */
export async function prepareSandboxRoot(trajectoriesFolder: string): Promise<void> {
  const root = path.dirname(trajectoriesFolder);
  const identity = sandboxHostIdentity();
  if (identity === undefined) {
    await ensurePrivateFolder(root);
    await ensurePrivateFolder(trajectoriesFolder);
    return;
  }
  await mkdir(trajectoriesFolder, { recursive: true, mode: PRIVATE_FOLDER_MODE });
  const chain: string[] = [];
  for (let folder = await realpath(trajectoriesFolder); ; folder = path.dirname(folder)) {
    chain.push(folder);
    if (folder === path.dirname(folder)) break;
  }
  // The server's own two folders are private whatever their mode was; the others only need a way through.
  const own = new Set([await realpath(root), chain[0]]);
  const statuses = await Promise.all(chain.map((folder) => stat(folder)));
  const closed = chain
    .map((folder, index) => ({ folder, below: chain[index - 1], status: statuses[index]! }))
    .filter(({ folder, status }) => own.has(folder) || !traversableByMode(status));
  for (const { folder, status } of closed) {
    if (status.uid !== process.getuid?.()) {
      throw new SandboxError(
        `The sandbox user (uid ${SANDBOX_USER_ID}) cannot reach ${trajectoriesFolder}: ${folder} (mode ${modeText(status.mode)}) belongs to uid ${status.uid}, and this server does not change another user's folder. ${SET_ROOT_HINT}`,
      );
    }
  }
  try {
    const acls = await readPosixAcls(closed.map(({ folder }) => folder));
    for (const [index, { folder, below, status }] of closed.entries()) {
      const current = acls[index] ?? aclFromMode(status.mode);
      const wanted = own.has(folder) ? current.map(closedToGroupAndOther) : current;
      const opened = withUserTraversal(wanted, SANDBOX_USER_ID);
      // The trajectories folder holds only trajectory folders, whose modes are set where they are made.
      const newlyOpened = opened !== undefined && withUserTraversal(current, SANDBOX_USER_ID) !== undefined;
      if (newlyOpened && below !== undefined) await closeEntriesToSandbox(folder, below);
      const final = opened ?? wanted;
      if (!encodePosixAcl(final).equals(encodePosixAcl(current))) await writePosixAcl(folder, final);
    }
  } catch (error) {
    if (!(error instanceof AclUnsupportedError)) throw error;
    throw new SandboxError(
      `The sandbox user (uid ${SANDBOX_USER_ID}) cannot reach ${trajectoriesFolder}: ${error.message}. ${SET_ROOT_HINT}`,
    );
  }
  try {
    // /bin/sh's own `test`, by absolute path: the check must not depend on the server's PATH.
    await execFileAsync('/bin/sh', ['-c', 'test -x "$1"', 'sh', chain[0]!], {
      uid: identity.uid,
      gid: identity.gid,
    });
  } catch {
    throw new SandboxError(
      `The sandbox user (uid ${SANDBOX_USER_ID}) cannot reach ${trajectoriesFolder} even with a traversal ACL on each folder above it. ${SET_ROOT_HINT}`,
    );
  }
}

function modeText(mode: number): string {
  return (mode & 0o777).toString(8);
}

/** An ACL entry of the owning group or of others with no permission left. */
function closedToGroupAndOther(entry: AclEntry): AclEntry {
  return entry.tag === AclTag.groupObject || entry.tag === AclTag.other
    ? { ...entry, permissions: 0 }
    : entry;
}

/** True when the mode alone lets the sandbox's user search `status`'s folder. */
function traversableByMode(status: { uid: number; gid: number; mode: number }): boolean {
  if (status.uid === SANDBOX_USER_ID) return (status.mode & 0o100) !== 0;
  if (status.gid === SANDBOX_GROUP_ID) return (status.mode & 0o010) !== 0;
  return (status.mode & 0o001) !== 0;
}

/** Takes the sandbox user's possible access off the entries of `folder` other than `below`. */
async function closeEntriesToSandbox(folder: string, below: string | undefined): Promise<void> {
  for (const name of await readdir(folder)) {
    const entry = path.join(folder, name);
    if (entry === below) continue;
    const status = await lstat(entry);
    // A symlink's own mode means nothing: its target is checked where it is.
    if (status.isSymbolicLink() || status.uid !== process.getuid?.()) continue;
    const closed = status.mode & 0o7770 & (status.gid === SANDBOX_GROUP_ID ? 0o7707 : 0o7777);
    if (closed !== (status.mode & 0o7777)) await chmod(entry, closed);
  }
}

/** Where one trajectory keeps its workspace and its stored results. */
export interface TrajectoryFolders {
  workspace: string;
  resultsFile: string;
}

/**
 * Creates (or tightens, for one made by an earlier version) a trajectory's folders: the
 * trajectory's own folder owned by the server (0711 when the sandbox's user must pass through it,
 * 0700 otherwise), its results file 0600, and the workspace 0700 owned by the user commands run as.
 */
export async function createTrajectoryFolders(
  trajectoriesFolder: string,
  trajectoryId: string,
): Promise<TrajectoryFolders> {
  const folder = path.join(trajectoriesFolder, trajectoryId);
  const workspace = path.join(folder, 'workspace');
  const resultsFile = path.join(folder, 'results.jsonl');
  const folderMode = sandboxHostIdentity() === undefined ? 0o700 : 0o711;
  await mkdir(folder, { recursive: true, mode: folderMode });
  await chmod(folder, folderMode);
  await mkdir(workspace, { recursive: true, mode: 0o700 });
  await chmod(workspace, 0o700);
  // Commands run as the sandbox's own user and must be able to change what is in here.
  await handOverToSandbox(workspace);
  await tightenPrivateFile(resultsFile);
  return { workspace, resultsFile };
}
