import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { SANDBOX_USER_ID } from '../sandbox/bubblewrap';
import {
  ACL_EXECUTE,
  ACL_READ,
  AclTag,
  readPosixAcl,
  writePosixAcl,
  type AclEntry,
} from '../sandbox/posix-acl';
import { prepareSandboxRoot } from '../sandbox/sandbox-root';
import { loadOrCreateToken } from '../sandbox/token';
import { runCli, startCli } from './helpers/cli';
import { freePort } from './helpers/temporal-server';

const execFileAsync = promisify(execFile);
const isRoot = process.getuid?.() === 0;

/** An unprivileged host user that is neither the server's nor the sandbox's. */
const OTHER_USER_ID = 65533;

/** Every file and folder below `folder`, with its status; symlinks are not followed. */
async function walk(
  folder: string,
): Promise<Array<{ path: string; mode: number; uid: number; isDirectory: boolean }>> {
  const found = [];
  for (const name of await readdir(folder)) {
    const entry = path.join(folder, name);
    const status = await lstat(entry);
    found.push({
      path: entry,
      mode: status.mode & 0o7777,
      uid: status.uid,
      isDirectory: status.isDirectory(),
    });
    if (status.isDirectory()) found.push(...(await walk(entry)));
  }
  return found;
}

/**
 * What `uid` manages to do with each path: list a folder or read a file. A shell started as that
 * user tries, as an intruder on the machine (or a process escaped from the sandbox) would.
 */
async function accessAs(uid: number, paths: string[]): Promise<string[]> {
  const script = [
    'for target in "$@"; do',
    '  if [ -d "$target" ]; then ls -- "$target" >/dev/null 2>&1 && echo "listed $target";',
    '  else head -c1 -- "$target" >/dev/null 2>&1 && echo "read $target"; fi',
    '  [ -d "$target" ] && [ -x "$target" ] && echo "traversed $target"',
    'done',
    'true',
  ].join('\n');
  const { stdout } = await execFileAsync('sh', ['-c', script, 'sh', ...paths], { uid, gid: uid });
  return stdout.split('\n').filter(Boolean);
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/** A one-call script for the scripted model: a bash command in the sandbox, then an answer. */
async function scriptFile(folder: string): Promise<string> {
  const file = path.join(folder, 'turns.json');
  await writeFile(
    file,
    JSON.stringify([
      {
        text: 'Writing a note.',
        toolCalls: [{ tool: 'bash', arguments: { command: 'echo "written by $(id -u)" > note.txt' } }],
      },
      { text: 'Wrote the note.' },
    ]),
  );
  return file;
}

describe('secrets at rest', () => {
  it('keeps a fresh home its owner’s alone after agents dev and a run, and the sandbox still works', async () => {
    // The parent stands for /root: closed to everyone, so the sandbox user needs a way through it.
    const parent = await mkdtemp(path.join(os.tmpdir(), 'agents-secrets-'));
    await chmod(parent, 0o700);
    await writeFile(path.join(parent, 'neighbour.txt'), 'not for the sandbox\n', { mode: 0o644 });
    const scripts = await mkdtemp(path.join(os.tmpdir(), 'agents-secrets-script-'));
    const home = path.join(parent, 'home');
    const environment = {
      ...process.env,
      AGENTS_HOME: home,
      AGENTS_TEMPORAL_PORT: String(await freePort()),
      AGENTS_UI_PORT: String(await freePort()),
      AGENTS_SANDBOX_PORT: String(await freePort()),
      AGENTS_SANDBOX_ROOT: '',
      AGENTS_SANDBOX_TOKEN: '',
      AGENTS_SANDBOX_URLS: '',
      TEMPORAL_ADDRESS: '',
    };
    const dev = await startCli(['dev'], environment, /Worker polling task queue 'agents'/);
    try {
      const run = await runCli(
        [
          'start',
          'secrets',
          '--template',
          'demo',
          '--model',
          `scripted:${await scriptFile(scripts)}`,
          '--permission-mode',
          'auto-approve',
          '--max-iterations',
          '1',
          '--interval',
          '0',
          '--watch',
        ],
        environment,
      );
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /ended: max_iterations after 1 iteration/);

      // The command ran in the sandbox, whose workspace is under $AGENTS_HOME.
      const trajectories = path.join(home, 'sandbox', 'trajectories');
      const [trajectory, ...others] = await readdir(trajectories);
      assert.ok(trajectory !== undefined && others.length === 0, 'one trajectory');
      const workspace = path.join(trajectories, trajectory, 'workspace');
      const note = await readFile(path.join(workspace, 'note.txt'), 'utf8');
      assert.equal(note, `written by ${SANDBOX_USER_ID}\n`);

      const homeStatus = await stat(home);
      assert.equal(homeStatus.mode & 0o007, 0, `$AGENTS_HOME is ${octal(homeStatus.mode)}`);
      const homeAcl = await readPosixAcl(home);
      if (isRoot) {
        // 0710 is the ACL's mask: the owning group has nothing, the sandbox user may only pass through.
        assert.equal(homeStatus.mode & 0o777, 0o710);
        assert.deepEqual(
          homeAcl?.filter((entry) => entry.tag !== AclTag.userObject),
          [
            { tag: AclTag.user, permissions: ACL_EXECUTE, id: SANDBOX_USER_ID },
            { tag: AclTag.groupObject, permissions: 0 },
            { tag: AclTag.mask, permissions: ACL_EXECUTE },
            { tag: AclTag.other, permissions: 0 },
          ],
        );
      } else {
        assert.equal(homeStatus.mode & 0o777, 0o700);
      }

      const entries = await walk(home);
      const byName = (relative: string) => entries.find((entry) => entry.path === path.join(home, relative));
      for (const required of [
        'temporal.db',
        'temporal.db-wal',
        'sandbox.token',
        'logs/temporal.log',
        'logs/secrets/log.jsonl',
        'sandbox/trajectories',
      ]) {
        assert.ok(byName(required) !== undefined, `${required} exists`);
      }
      assert.ok(
        entries.some((entry) => entry.path.startsWith(path.join(home, 'transcripts') + path.sep)),
        'a transcript was stored',
      );
      assert.ok(entries.some((entry) => entry.path.startsWith(path.join(home, 'cache') + path.sep)));
      const trajectoryFolder = path.join(trajectories, trajectory);
      for (const entry of entries) {
        const where = `${path.relative(home, entry.path)} is ${octal(entry.mode)}`;
        if (entry.path === workspace || entry.path.startsWith(workspace + path.sep)) {
          if (entry.path === workspace) assert.equal(entry.mode, 0o700, where);
          continue;
        }
        if (entry.path === trajectoryFolder) {
          assert.equal(entry.mode, isRoot ? 0o711 : 0o700, where);
        } else if (entry.isDirectory) {
          // Private folders; the sandbox root's two carry the same traversal ACL as the home as root.
          assert.equal(entry.mode & 0o067, 0, where);
        } else {
          assert.equal(entry.mode & 0o077, 0, where);
        }
      }

      if (isRoot) {
        const everything = [home, ...entries.map((entry) => entry.path)];
        const intruder = await accessAs(OTHER_USER_ID, [
          parent,
          path.join(parent, 'neighbour.txt'),
          ...everything,
        ]);
        assert.deepEqual(intruder, [], 'another user reaches nothing under $AGENTS_HOME');
        const outsideWorkspace = everything.filter(
          (entry) => entry !== workspace && !entry.startsWith(workspace + path.sep),
        );
        const sandboxUser = await accessAs(SANDBOX_USER_ID, [
          path.join(parent, 'neighbour.txt'),
          ...outsideWorkspace,
        ]);
        const chain = [parent, home, path.join(home, 'sandbox'), trajectories, trajectoryFolder];
        assert.deepEqual(
          sandboxUser,
          chain.slice(1).map((folder) => `traversed ${folder}`),
          'the sandbox user passes through the chain to its workspace and reads or lists nothing',
        );
      }
    } finally {
      if (dev.exitCode === null) {
        dev.kill('SIGINT');
        await once(dev, 'exit');
      }
      await rm(parent, { recursive: true, force: true });
      await rm(scripts, { recursive: true, force: true });
    }
  });

  it('tightens a home an earlier version left open: the folder, the database, the log and the token', async () => {
    const home = await mkdtemp(path.join(os.tmpdir(), 'agents-secrets-old-'));
    const environment = {
      ...process.env,
      AGENTS_HOME: home,
      AGENTS_TEMPORAL_PORT: String(await freePort()),
      AGENTS_UI_PORT: String(await freePort()),
      TEMPORAL_ADDRESS: '',
    };
    // A home as earlier versions left it: the default modes of a 022 umask.
    const first = await runCli(['server', 'start'], environment);
    assert.equal(first.code, 0, first.stderr);
    await runCli(['server', 'stop'], environment);
    await writeFile(path.join(home, 'sandbox.token'), 'an-old-token\n');
    await chmod(home, 0o755);
    await chmod(path.join(home, 'logs'), 0o755);
    for (const file of ['temporal.db', 'logs/temporal.log', 'sandbox.token']) {
      await chmod(path.join(home, file), 0o644);
    }
    try {
      const started = await runCli(['server', 'start'], environment);
      assert.equal(started.code, 0, started.stderr);
      assert.equal((await stat(home)).mode & 0o777, 0o700);
      for (const file of ['temporal.db', 'temporal.db-wal', 'temporal.pid', 'logs/temporal.log']) {
        assert.equal((await stat(path.join(home, file))).mode & 0o777, 0o600, file);
      }
      assert.equal(await loadOrCreateToken(path.join(home, 'sandbox.token'), undefined), 'an-old-token');
      assert.equal((await stat(path.join(home, 'sandbox.token'))).mode & 0o777, 0o600);
      const stopped = await runCli(['server', 'stop'], environment);
      assert.match(stopped.stdout, /Stopped the background Temporal dev server/);
    } finally {
      await runCli(['server', 'stop'], environment);
      await rm(home, { recursive: true, force: true });
    }
  });

  it(
    isRoot
      ? 'adds the sandbox user to an ACL already on a folder above the root, keeping its entries'
      : 'adds the sandbox user to an existing ACL (skipped: needs root, the only case bwrap runs as the sandbox user)',
    { skip: !isRoot },
    async () => {
      const parent = await mkdtemp(path.join(os.tmpdir(), 'agents-secrets-acl-'));
      try {
        const existing: AclEntry[] = [
          { tag: AclTag.userObject, permissions: 7 },
          { tag: AclTag.user, permissions: ACL_READ | ACL_EXECUTE, id: OTHER_USER_ID },
          { tag: AclTag.groupObject, permissions: 0 },
          { tag: AclTag.mask, permissions: ACL_READ | ACL_EXECUTE },
          { tag: AclTag.other, permissions: 0 },
        ];
        await writePosixAcl(parent, existing);
        const trajectories = path.join(parent, 'sandbox', 'trajectories');
        await prepareSandboxRoot(trajectories);
        assert.deepEqual(await readPosixAcl(parent), [
          { tag: AclTag.userObject, permissions: 7 },
          { tag: AclTag.user, permissions: ACL_READ | ACL_EXECUTE, id: OTHER_USER_ID },
          { tag: AclTag.user, permissions: ACL_EXECUTE, id: SANDBOX_USER_ID },
          { tag: AclTag.groupObject, permissions: 0 },
          { tag: AclTag.mask, permissions: ACL_READ | ACL_EXECUTE },
          { tag: AclTag.other, permissions: 0 },
        ]);
        assert.deepEqual(await accessAs(SANDBOX_USER_ID, [trajectories]), [`traversed ${trajectories}`]);
        // A second start changes nothing and still gets through.
        await prepareSandboxRoot(trajectories);
        assert.deepEqual(await accessAs(SANDBOX_USER_ID, [trajectories]), [`traversed ${trajectories}`]);
      } finally {
        await rm(parent, { recursive: true, force: true });
      }
    },
  );

  it(
    isRoot
      ? 'refuses to start on a file system without ACLs with one line saying to set AGENTS_SANDBOX_ROOT'
      : 'refuses a file system without ACLs (skipped: needs root to mount one)',
    { skip: !isRoot },
    async (context) => {
      const mountPoint = await mkdtemp(path.join(os.tmpdir(), 'agents-secrets-ramfs-'));
      try {
        try {
          // ramfs keeps no extended attributes, so no ACL either.
          await execFileAsync('mount', ['-t', 'ramfs', 'ramfs', mountPoint]);
        } catch (error) {
          context.skip(`cannot mount a ramfs here: ${(error as Error).message.split('\n')[0]}`);
          return;
        }
        try {
          const closed = path.join(mountPoint, 'closed');
          await mkdir(closed, { mode: 0o700 });
          await chmod(closed, 0o700);
          await assert.rejects(
            prepareSandboxRoot(path.join(closed, 'sandbox', 'trajectories')),
            (error: Error) => {
              assert.equal(error.name, 'SandboxError');
              assert.doesNotMatch(error.message, /\n/);
              assert.match(
                error.message,
                /does not take a POSIX ACL .*Set AGENTS_SANDBOX_ROOT to a folder the sandbox user can reach/,
              );
              return true;
            },
          );
        } finally {
          await execFileAsync('umount', [mountPoint]);
        }
      } finally {
        await rm(mountPoint, { recursive: true, force: true });
      }
    },
  );
});
