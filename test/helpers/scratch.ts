import { randomUUID } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';

/** A test file's temporary folder, and fresh workspaces below it that the sandbox's user can use. */
export interface ScratchFolder {
  /** The folder itself; valid once the file's `before` hooks have run. */
  readonly root: string;
  /** A new empty workspace, open to the sandbox's user as the sandbox server makes them. */
  newWorkspace(name?: string): Promise<string>;
}

/**
 * Registers hooks that create a temporary folder before the file's tests and remove it after. The
 * folder is open for traversal: run as root, commands start as uid 65534, who must reach the
 * workspaces below it.
 */
export function useScratchFolder(prefix: string): ScratchFolder {
  let root = '';
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), prefix));
    await chmod(root, 0o755);
  });
  after(async () => {
    await rm(root, { recursive: true, force: true });
  });
  return {
    get root() {
      return root;
    },
    async newWorkspace(name = `workspace-${randomUUID()}`) {
      const workspace = path.join(root, name);
      await mkdir(workspace);
      await chmod(workspace, 0o777);
      return workspace;
    },
  };
}
