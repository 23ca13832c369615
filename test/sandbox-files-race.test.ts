import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { gunzipSync } from 'node:zlib';
import { request } from 'undici';
import { archiveArtifacts } from '../sandbox/artifacts';
import { SandboxServer } from '../sandbox/sandbox-server';
import { closeStatefulSessions } from '../sandbox/stateful-sessions';
import type { ToolResult } from '../sandbox/tool-call';
import { runSandboxTool } from '../sandbox/tools';
import { waitFor } from './helpers/wait';

/**
 * The sandbox server's file work under attack, on real bubblewrap and a real server over HTTP, run
 * as root as on the machines it serves: a run swaps folders and files of its workspace with
 * symlinks to root-only host paths (`renameat2(RENAME_EXCHANGE)` in a loop, from its own stateful
 * shell and tmux session) while read_file, write_file and the artifact endpoints go through those
 * paths. Also: identifiers that are not plain names, NUL bytes in paths, and what the sandbox can
 * learn of the host's paths.
 */

const TOKEN = 'files-race-token-0123456789';

/**
 * Swaps two entries of the workspace for as long as it runs. python3 is in /usr, which the sandbox
 * sees; its ctypes reaches glibc's renameat2 without a compiler.
 */
const SWAPPER = [
  'import ctypes, sys',
  'libc = ctypes.CDLL(None, use_errno=True)',
  'first, second = sys.argv[1].encode(), sys.argv[2].encode()',
  'AT_FDCWD, RENAME_EXCHANGE = -100, 2',
  'while True:',
  '    libc.renameat2(AT_FDCWD, first, AT_FDCWD, second, RENAME_EXCHANGE)',
  '',
].join('\n');

const notRoot = process.getuid?.() !== 0;
const skipReason = notRoot ? 'skipped: needs root, as the sandbox server runs on its machines' : false;

/** A suite's name, with the reason when it cannot run here. */
function suiteName(name: string): string {
  return skipReason === false ? name : `${name} (${skipReason})`;
}

let scratch: string;
let root: string;
let hostFolder: string;
let secretFile: string;
let secret: string;
let server: SandboxServer;
let baseUrl: string;
let callNumber = 0;

interface HttpAnswer {
  status: number;
  text: string;
  bytes: Buffer;
}

async function send(method: 'GET' | 'POST', route: string, body?: unknown): Promise<HttpAnswer> {
  const response = await request(`${baseUrl}${route}`, {
    method,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${TOKEN}` },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const bytes = Buffer.from(await response.body.arrayBuffer());
  return { status: response.statusCode, text: bytes.toString('utf8'), bytes };
}

async function tool(trajectoryId: string, name: string, args: Record<string, unknown>): Promise<ToolResult> {
  callNumber += 1;
  const answer = await send('POST', '/execute', {
    callId: `race-${callNumber}`,
    trajectoryId,
    tool: name,
    arguments: args,
    timeoutS: 30,
  });
  assert.equal(answer.status, 200, answer.text);
  return JSON.parse(answer.text) as ToolResult;
}

function artifacts(kind: 'list' | 'read' | 'archive', trajectoryId: string, query: Record<string, string>) {
  const search = new URLSearchParams({ trajectoryId, ...query });
  return send('GET', `/artifacts/${kind}?${search.toString()}`);
}

/** What the host folder holds and what the secret is: compared before and after an attack. */
async function hostState(): Promise<{ listing: string[]; content: string; mtimeMs: number; mode: number }> {
  const { mtimeMs, mode } = await stat(secretFile);
  return {
    listing: (await readdir(hostFolder)).sort(),
    content: await readFile(secretFile, 'utf8'),
    mtimeMs,
    mode,
  };
}

/** The host folder of a trajectory's workspace, found by a file written into it (the layout is the server's). */
async function hostWorkspaceOf(trajectoryId: string): Promise<string> {
  const marker = `marker-${randomUUID()}.txt`;
  const written = await tool(trajectoryId, 'write_file', { path: marker, content: 'here' });
  assert.equal(written.success, true, written.error);
  const entries = await readdir(root, { recursive: true });
  const found = entries.find((entry) => path.basename(entry) === marker);
  assert.ok(found !== undefined, 'the marker is somewhere under the server root');
  return path.dirname(path.join(root, found));
}

describe(suiteName('workspace files under a symlink-swapping run'), { skip: skipReason }, () => {
  before(async () => {
    scratch = await mkdtemp(path.join(os.tmpdir(), 'agents-files-race-'));
    await chmod(scratch, 0o755);
    root = path.join(scratch, 'server');
    // Root's own: a folder nobody else may enter and a file nobody else may read.
    hostFolder = path.join(scratch, `host-only-${randomUUID()}`);
    await mkdir(hostFolder, { mode: 0o700 });
    await chmod(hostFolder, 0o700);
    secret = `TOP-SECRET-${randomUUID()}`;
    secretFile = path.join(hostFolder, `secret-${randomUUID()}.txt`);
    await writeFile(secretFile, `${secret}\n`, { mode: 0o600 });
    server = new SandboxServer({ root, token: TOKEN, lanes: 4, runTool: runSandboxTool });
    baseUrl = `http://127.0.0.1:${await server.listen(0)}`;
  });

  after(async () => {
    await server.close();
    await closeStatefulSessions();
    await rm(scratch, { recursive: true, force: true });
  });

  it('returns no byte of a root-only host file and creates nothing outside while folders and files are swapped with symlinks', async () => {
    const trajectoryId = `race-${randomUUID()}`;
    const before = await hostState();
    const setup = await tool(trajectoryId, 'bash', {
      command: [
        'set -e',
        'for pair in d e; do mkdir -p $pair/sub && echo decoy > $pair/secret.txt && echo deep > $pair/sub/deep.txt; done',
        'echo decoy > f.txt && echo decoy > g.txt',
        // Inside the sandbox these lead nowhere; a server that follows them on the host leaks.
        `ln -s ${hostFolder} d.link && ln -s ${hostFolder} e.link`,
        `ln -s ${secretFile} f.link && ln -s ${secretFile} g.link`,
      ].join('\n'),
    });
    assert.equal(setup.success, true, setup.output);
    const script = await tool(trajectoryId, 'write_file', { path: 'swap.py', content: SWAPPER });
    assert.equal(script.success, true, script.error);
    const workspace = await hostWorkspaceOf(trajectoryId);

    // Two swappers from the run's own stateful shell, two from a tmux session of the same sandbox.
    const started = await tool(trajectoryId, 'bash_stateful', {
      command:
        '(python3 /workspace/swap.py d d.link >/dev/null 2>&1 &) ; (python3 /workspace/swap.py f.txt f.link >/dev/null 2>&1 &) ; echo started',
    });
    assert.equal(started.output.trim(), 'started', started.output);
    const tmuxStarted = await tool(trajectoryId, 'tmux', { action: 'start', session: 'swappers' });
    assert.equal(tmuxStarted.success, true, tmuxStarted.error);
    const keys = await tool(trajectoryId, 'tmux', {
      action: 'send_keys',
      session: 'swappers',
      keys: 'python3 /workspace/swap.py e e.link & python3 /workspace/swap.py g.txt g.link &\n',
    });
    assert.equal(keys.success, true, keys.error);
    await waitFor('four swappers to run in the sandbox', async () => {
      const count = await tool(trajectoryId, 'bash_stateful', {
        command: "pgrep -fc '^python3 /workspace/swap.py' || true",
      });
      return count.output.trim() === '4';
    });

    const answers: HttpAnswer[] = [];
    const toolResults: ToolResult[] = [];
    const attack = async (round: number): Promise<void> => {
      const folder = round % 2 === 0 ? 'd' : 'e';
      const file = round % 2 === 0 ? 'f.txt' : 'g.txt';
      const reads = [
        `${folder}/secret.txt`,
        file,
        `/workspace/${folder}/sub/../secret.txt`,
        `${folder}/sub/deep.txt`,
      ];
      for (const requested of reads)
        toolResults.push(await tool(trajectoryId, 'read_file', { path: requested }));
      toolResults.push(
        await tool(trajectoryId, 'write_file', { path: `${folder}/written-${round}.txt`, content: 'mine' }),
        await tool(trajectoryId, 'write_file', { path: `${folder}/new-${round}/x.txt`, content: 'mine' }),
        await tool(trajectoryId, 'write_file', { path: file, content: `overwritten ${round}` }),
      );
      answers.push(
        ...(await Promise.all([
          artifacts('read', trajectoryId, { path: `${folder}/secret.txt`, encoding: 'base64' }),
          artifacts('read', trajectoryId, { path: file, encoding: 'base64' }),
          artifacts('read', trajectoryId, { path: `${folder}/sub/deep.txt` }),
          artifacts('list', trajectoryId, { path: folder, recursive: 'true' }),
          artifacts('list', trajectoryId, { path: '.', recursive: 'true' }),
          artifacts('archive', trajectoryId, { path: folder }),
          artifacts('archive', trajectoryId, { path: '.' }),
        ])),
      );
    };
    const rounds = 40;
    // Four rounds at once: artifact requests overlap each other and the tool calls.
    for (let round = 0; round < rounds; round += 4) {
      await Promise.all([0, 1, 2, 3].map((offset) => attack(round + offset)));
    }
    const requests = answers.length + toolResults.length;
    assert.ok(requests >= 500, `${requests} requests`);

    // Nothing of the secret in any answer: raw, decoded from base64, or inside an archive.
    for (const result of toolResults)
      assert.ok(!JSON.stringify(result).includes(secret), JSON.stringify(result));
    const denied = toolResults.filter((result) => result.error === 'Access denied: path outside workspace');
    assert.ok(denied.length > 0, 'the swaps were live: some paths led outside when they were resolved');
    for (const answer of answers) {
      assert.ok(answer.status < 500, answer.text);
      assert.ok(!answer.text.includes(secret));
      assert.ok(!answer.text.includes(path.basename(secretFile)), 'the host folder was never listed');
      if (answer.bytes[0] === 0x1f && answer.bytes[1] === 0x8b) {
        const tar = gunzipSync(answer.bytes);
        assert.ok(!tar.includes(secret) && !tar.includes(path.basename(secretFile)));
      } else if (answer.status === 200) {
        const body = JSON.parse(answer.text) as { encoding?: string; content?: string };
        if (body.encoding === 'base64')
          assert.ok(!Buffer.from(body.content ?? '', 'base64').includes(secret));
      }
    }
    const archived = answers.filter((answer) => answer.bytes[0] === 0x1f && answer.bytes[1] === 0x8b);
    assert.ok(archived.length > 0, 'archives were built while the swaps ran');

    // Nothing created or changed outside the workspace.
    assert.deepEqual(await hostState(), before);
    const health = await send('GET', '/health');
    assert.equal(health.status, 200);
    assert.equal((JSON.parse(health.text) as { status: string }).status, 'ok');

    // Reset removes the workspace, its links included, and nothing they point to.
    const released = await send('POST', '/release', { trajectoryId, reset: true });
    assert.equal(released.status, 200, released.text);
    await assert.rejects(lstat(workspace), { code: 'ENOENT' });
    assert.deepEqual(await hostState(), before);
  });

  it('removes a workspace on reset while a command swaps a folder and a host link in it, and nothing outside', async () => {
    const trajectoryId = `reset-race-${randomUUID()}`;
    const before = await hostState();
    const workspace = await hostWorkspaceOf(trajectoryId);
    const script = await tool(trajectoryId, 'write_file', { path: 'swap.py', content: SWAPPER });
    assert.equal(script.success, true, script.error);
    const setup = await tool(trajectoryId, 'bash', {
      command: `mkdir -p d/inner && echo decoy > d/inner/file.txt && ln -s ${hostFolder} d.link`,
    });
    assert.equal(setup.success, true, setup.output);
    // A one-shot command (no session to close on release) keeps swapping while the reset runs.
    callNumber += 1;
    const swapping = send('POST', '/execute', {
      callId: `race-${callNumber}`,
      trajectoryId,
      tool: 'bash',
      arguments: { command: 'python3 /workspace/swap.py d d.link' },
      timeoutS: 5,
    });
    const kinds = new Set<string>();
    await waitFor('the folder to be seen both as a folder and as a link', async () => {
      const stats = await lstat(path.join(workspace, 'd')).catch(() => undefined);
      if (stats !== undefined) kinds.add(stats.isSymbolicLink() ? 'link' : 'folder');
      return kinds.size === 2;
    });
    const released = await send('POST', '/release', { trajectoryId, reset: true });
    assert.equal(released.status, 200, released.text);
    await swapping;
    await assert.rejects(lstat(workspace), { code: 'ENOENT' });
    assert.deepEqual(await hostState(), before);
    assert.equal((await send('GET', '/health')).status, 200);
  });
});

describe(suiteName('identifiers and paths the sandbox server refuses'), { skip: skipReason }, () => {
  before(async () => {
    scratch = await mkdtemp(path.join(os.tmpdir(), 'agents-identifiers-'));
    await chmod(scratch, 0o755);
    root = path.join(scratch, 'server');
    server = new SandboxServer({ root, token: TOKEN, lanes: 4, runTool: runSandboxTool });
    baseUrl = `http://127.0.0.1:${await server.listen(0)}`;
  });

  after(async () => {
    await server.close();
    await closeStatefulSessions();
    await rm(scratch, { recursive: true, force: true });
  });

  const NUL_REFUSAL = 'Invalid arguments for tool ';
  const NUL_REASON = 'must not contain NUL characters';
  const invalidIds = ['.', '..', '', 'a/b', '.hidden', 'a\0b', '../trajectories'];
  const plainNameError = /^Invalid request: .*trajectoryId: must be a plain name: 1-200 characters/;

  it('refuses ., .., empty, slashes, a leading dot and NUL as trajectory IDs with 400 on every endpoint', async () => {
    for (const trajectoryId of invalidIds) {
      const call = { callId: 'c', trajectoryId, tool: 'bash', arguments: { command: 'true' } };
      const answers = [
        await send('POST', '/execute', call),
        await send('POST', '/batch', { calls: [call] }),
        await send('POST', '/release', { trajectoryId, reset: true }),
        await artifacts('list', trajectoryId, {}),
        await artifacts('read', trajectoryId, { path: 'x' }),
        await artifacts('archive', trajectoryId, {}),
      ];
      for (const answer of answers) {
        assert.equal(answer.status, 400, `${JSON.stringify(trajectoryId)}: ${answer.text}`);
        const { error } = JSON.parse(answer.text) as { error: string };
        assert.match(error, plainNameError);
        assert.ok(!error.includes('\n'));
      }
    }
    assert.equal((await send('GET', '/health')).status, 200);
  });

  it('deletes nothing on a release with reset of "..": the root, its trajectories and their files stay', async () => {
    const kept = `kept-${randomUUID()}`;
    const workspace = await hostWorkspaceOf(kept);
    const listing = async () => (await readdir(root, { recursive: true })).sort();
    const before = await listing();
    for (const trajectoryId of ['..', '.', '../..', '']) {
      const answer = await send('POST', '/release', { trajectoryId, reset: true });
      assert.equal(answer.status, 400, answer.text);
    }
    assert.deepEqual(await listing(), before);
    assert.ok((await readdir(workspace)).length > 0);
    const still = await tool(kept, 'bash', { command: 'ls marker-*.txt | wc -l' });
    assert.equal(still.output.trim(), '1');
  });

  it('answers a NUL or an impossible path on the artifact endpoints with 400, never 500', async () => {
    const trajectoryId = `nul-${randomUUID()}`;
    await hostWorkspaceOf(trajectoryId);
    for (const requested of ['a\0b', '\0', 'ok/\0/x', 'x'.repeat(300), `${'a/'.repeat(2100)}a`]) {
      for (const kind of ['list', 'read', 'archive'] as const) {
        const answer = await artifacts(kind, trajectoryId, { path: requested });
        assert.equal(answer.status, 400, `${kind} ${JSON.stringify(requested.slice(0, 20))}: ${answer.text}`);
        assert.match((JSON.parse(answer.text) as { error: string }).error, /^Invalid (request: path|path)/);
      }
    }
    const read = await tool(trajectoryId, 'read_file', { path: 'a\0b' });
    assert.deepEqual([read.success, read.error], [false, `${NUL_REFUSAL}read_file: path ${NUL_REASON}`]);
    const write = await tool(trajectoryId, 'write_file', { path: 'a\0b', content: 'x' });
    assert.deepEqual([write.success, write.error], [false, `${NUL_REFUSAL}write_file: path ${NUL_REASON}`]);
    assert.equal((await send('GET', '/health')).status, 200);
  });

  it("keeps the workspace's host path out of the sandbox's /proc/1/cmdline and environment", async () => {
    const trajectoryId = `cmdline-${randomUUID()}`;
    const workspace = await hostWorkspaceOf(trajectoryId);
    for (const toolName of ['bash', 'bash_stateful'] as const) {
      const shown = await tool(trajectoryId, toolName, {
        command: "tr '\\0' '\\n' < /proc/1/cmdline; tr '\\0' '\\n' < /proc/1/environ",
      });
      assert.equal(shown.success, true, shown.output);
      assert.match(shown.output, /bwrap/);
      assert.ok(!shown.output.includes(workspace), shown.output);
      assert.ok(!shown.output.includes(scratch), shown.output);
    }
  });
});

describe('the archive the server builds itself', () => {
  it('is a tar.gz that tar extracts as it was, names over 100 bytes and non-ASCII ones included, links left out', async () => {
    const folder = await mkdtemp(path.join(os.tmpdir(), 'agents-archive-'));
    try {
      const workspace = path.join(folder, 'workspace');
      const longFolder = 'é'.repeat(40);
      await mkdir(path.join(workspace, longFolder), { recursive: true });
      await writeFile(path.join(workspace, longFolder, 'x'.repeat(150)), 'long name\n');
      for (const length of [99, 100, 101])
        await writeFile(path.join(workspace, 'n'.repeat(length)), `${length}`);
      await writeFile(path.join(workspace, 'empty'), '');
      await symlink('/etc/passwd', path.join(workspace, 'link'));
      const archive = path.join(folder, 'archive.tar.gz');
      await writeFile(archive, await archiveArtifacts(workspace, '.'));
      const extracted = path.join(folder, 'extracted');
      await mkdir(extracted);
      await promisify(execFile)('tar', ['--extract', '--gzip', '--file', archive, '--directory', extracted]);
      const files = async (base: string) =>
        (await readdir(base, { recursive: true, withFileTypes: true }))
          .filter((entry) => entry.isFile())
          .map((entry) => path.relative(base, path.join(entry.parentPath, entry.name)))
          .sort();
      const expected = (await files(workspace)).filter((name) => name !== 'link');
      assert.deepEqual(await files(extracted), expected);
      for (const name of expected) {
        assert.deepEqual(
          await readFile(path.join(extracted, name)),
          await readFile(path.join(workspace, name)),
        );
      }
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });
});
