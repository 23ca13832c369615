import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { lstat, mkdir, readdir, readFile, readlink, realpath, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { workflowIdFor } from '../client/agents-client';
import { formatListing, formatPullSummary, renderForTerminal } from '../client/commands/workspace';
import type { ScriptedTurnDraft } from '../common/agent-input';
import { createTarGzip } from '../sandbox/tar-archive';
import type { agentRun } from '../workflows';
import { AGENTS_BIN, assertOneLineFailure, runCli, type CliResult } from './helpers/cli';
import { TEST_SANDBOX_TOKEN, useAgentsEnvironment } from './helpers/environment';
import { uniqueName } from './helpers/run-input';
import { useScratchFolder } from './helpers/scratch';
import { waitFor } from './helpers/wait';

const execFileAsync = promisify(execFile);

// One dev server and one real sandbox server (bubblewrap) for the file, a fresh worker per test.
const env = useAgentsEnvironment({ withSandbox: true });
const scratch = useScratchFolder('agents-workspace-cli-');

/** The environment of an `agents` process that reads workspaces from the file's sandbox server (or `sandboxUrl`). */
function cliEnvironment(sandboxUrl = env.sandbox!.endpoint.url): NodeJS.ProcessEnv {
  return {
    ...env.temporal.environment,
    AGENTS_SANDBOX_URLS: sandboxUrl,
    AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
  };
}

function cli(args: string[], sandboxUrl?: string): Promise<CliResult> {
  return runCli(args, cliEnvironment(sandboxUrl));
}

/** Starts a run of `template` whose scripted model plays `turns`; `extra` are more `agents start` options. */
async function startScripted(
  name: string,
  turns: ScriptedTurnDraft[],
  extra: string[],
  template = 'demo',
): Promise<CliResult> {
  const script = path.join(scratch.root, `${name}.json`);
  await writeFile(script, JSON.stringify({ turns, whenExhausted: 'repeat-last' }));
  return cli([
    'start',
    name,
    '--template',
    template,
    '--model',
    `scripted:${script}`,
    '--max-iterations',
    '1',
    '--interval',
    '0',
    ...extra,
  ]);
}

async function runResult(name: string) {
  return env.temporal.client.workflow.getHandle<typeof agentRun>(workflowIdFor(name)).result();
}

/** Runs `command` in a shell with the CLI's environment: for redirections, as a user types them. */
async function shell(command: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync('/bin/bash', ['-c', command], { env: cliEnvironment() });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

/** Runs `agents …` on a real pseudo-terminal (`script`), so stdout is a TTY; its output as the terminal got it. */
async function onTerminal(args: string[]): Promise<string> {
  const quoted = [AGENTS_BIN, ...args].map((part) => `'${part.replace(/'/g, `'\\''`)}'`).join(' ');
  const { stdout } = await shell(`script -qec ${JSON.stringify(quoted)} /dev/null`);
  return stdout;
}

/** Every path below `folder`, relative, with symlinks reported (never followed). */
async function treeOf(folder: string, prefix = ''): Promise<string[]> {
  const names: string[] = [];
  for (const name of (await readdir(folder)).sort()) {
    const relative = prefix === '' ? name : `${prefix}/${name}`;
    names.push(relative);
    const status = await lstat(path.join(folder, name));
    if (status.isDirectory()) names.push(...(await treeOf(path.join(folder, name), relative)));
  }
  return names;
}

/** Fails unless every symlink below `folder` resolves (or would) to a place inside it. */
async function assertLinksStayInside(folder: string): Promise<void> {
  for (const relative of await treeOf(folder)) {
    const entry = path.join(folder, relative);
    if (!(await lstat(entry)).isSymbolicLink()) continue;
    const target = path.resolve(path.dirname(entry), await readlink(entry));
    assert.ok(
      target === folder || target.startsWith(`${folder}${path.sep}`),
      `${relative} points outside ${folder}: ${target}`,
    );
  }
}

describe('reading a workspace on a terminal', () => {
  it('shows escape sequences, CR and bidi controls as their escapes, and keeps lines and tabs', () => {
    const rendering = renderForTerminal(
      Buffer.from('title\x1b[2J\x1b]8;;http://x\x07\nover\rwritten\t\u202eend\n'),
    );
    assert.deepEqual(rendering, {
      kind: 'text',
      text: 'title\\x1b[2J\\x1b]8;;http://x\\x07\nover\\rwritten\t\\u202eend\n',
    });
  });

  it('refuses bytes that are not UTF-8 text, or hold a NUL, as binary', () => {
    assert.deepEqual(renderForTerminal(Buffer.from([0xff, 0xfe, 0x41])), { kind: 'binary' });
    assert.deepEqual(renderForTerminal(Buffer.from('a\0b')), { kind: 'binary' });
  });

  it('lists names from the workspace visibly escaped, folders without a size', () => {
    const listing = formatListing([
      { path: 'evil\x1b[31mred', type: 'file', size: 1 },
      { path: 'src', type: 'directory', size: 4096 },
      { path: 'up', type: 'symlink', size: 8 },
    ]);
    assert.equal(
      listing,
      [
        'file               1  evil\\x1b[31mred',
        'directory          -  src',
        'symlink            8  up',
      ].join('\n'),
    );
  });

  it('lists what a pull left out, its names and reasons escaped', () => {
    const summary = formatPullSummary('coder', '/tmp/out', {
      files: 2,
      folders: 1,
      symlinks: 0,
      unpackedBytes: 10,
      skipped: [{ path: 'up\x1b[1A', reason: 'a symlink leaving the folder: "../.."' }],
    });
    assert.equal(
      summary,
      [
        'Pulled the workspace of agent coder into /tmp/out: 2 files, 1 folders, 0 symlinks, 10 B',
        'Left out 1 unsafe entry:',
        '  up\\x1b[1A: a symlink leaving the folder: "../.."',
      ].join('\n'),
    );
  });
});

describe('agents files, cat, pull and diff', () => {
  it('reads what a live run wrote while it waits for approval, and again after it ended', async () => {
    const name = uniqueName('read-back');
    const notes = 'line one\nline two\n';
    const started = await startScripted(
      name,
      [
        {
          text: 'Writing.',
          toolCalls: [
            { tool: 'write_file', arguments: { path: 'notes.md', content: notes } },
            { tool: 'write_file', arguments: { path: 'escape.txt', content: 'hello\x1b[2Jworld\n' } },
            {
              tool: 'bash',
              arguments: {
                command:
                  "mkdir -p src && printf 'print(1)\\n' > src/main.py && printf 'a\\377\\000b' > data.bin && head -c 6000000 /dev/zero > huge.bin",
              },
            },
          ],
        },
        { text: 'Cleaning up.', toolCalls: [{ tool: 'bash', arguments: { command: 'rm notes.md' } }] },
        { text: 'Done.' },
      ],
      ['--rule', 'allow write_file', '--rule', 'allow bash(mkdir*)'],
    );
    assert.equal(started.code, 0, started.stderr);
    await waitFor(
      'the run to ask about rm',
      async () => (await env.agents.status(name)).state === 'awaiting_approval',
      60_000,
    );

    const files = await cli(['files', name]);
    assert.equal(files.code, 0, files.stderr);
    assert.match(files.stdout, /^file {14}18 {2}notes\.md$/m);
    assert.match(files.stdout, /^directory {10}- {2}src$/m);
    assert.match(files.stdout, /^file {15}9 {2}src\/main\.py$/m);
    const listed = JSON.parse((await cli(['files', name, 'src', '--json'])).stdout) as {
      entries: Array<{ path: string; type: string; size: number }>;
    };
    assert.deepEqual(listed.entries, [{ path: 'src/main.py', type: 'file', size: 9 }]);

    const cat = await cli(['cat', name, 'notes.md']);
    assert.equal(cat.code, 0, cat.stderr);
    assert.equal(cat.stdout, notes, 'piped, the bytes are exact');
    const copied = path.join(scratch.root, `${name}-data.bin`);
    const redirected = await shell(`'${AGENTS_BIN}' cat ${name} data.bin > '${copied}'`);
    assert.equal(redirected.code, 0, redirected.stderr);
    assert.deepEqual(await readFile(copied), Buffer.from([0x61, 0xff, 0x00, 0x62]));
    assertOneLineFailure(
      await cli(['cat', name, 'huge.bin']),
      /'huge\.bin' is 6000000 bytes .*over the 5\.0 MiB read limit: `agents pull/,
    );
    assertOneLineFailure(
      await cli(['cat', name, 'missing.txt']),
      /Cannot read 'missing\.txt' in the workspace of agent .*404: No such file/,
    );

    const terminal = await onTerminal(['cat', name, 'escape.txt']);
    assert.ok(terminal.includes('hello\\x1b[2Jworld'), terminal);
    assert.ok(!terminal.includes('\x1b[2J'), 'no live escape reaches the terminal');
    const binaryOnTerminal = await onTerminal(['cat', name, 'data.bin']);
    assert.match(binaryOnTerminal, /'data\.bin' is binary \(4 bytes\): redirect it to a file or a pipe/);

    const diff = await cli(['diff', name]);
    assert.equal(diff.code, 0, diff.stderr);
    assert.match(diff.stdout, /notes\.md/);
    assert.match(diff.stdout, /\+line two/);
    const diffJson = JSON.parse((await cli(['diff', name, '--json'])).stdout) as {
      kind: string;
      changes: Array<{ path: string; change: string }>;
    };
    assert.equal(diffJson.kind, 'files');
    assert.ok(diffJson.changes.some((change) => change.path === 'notes.md' && change.change === 'added'));

    const status = await cli(['status', name]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(
      status.stdout,
      new RegExp(
        `^  workspace   agent-${name}-[0-9a-f-]{36} on http://127\\.0\\.0\\.1:\\d+: \\d+ files, `,
        'm',
      ),
    );
    assert.match(status.stdout, /^ {2}started from empty$/m);
    const statusJson = JSON.parse((await cli(['status', name, '--json'])).stdout) as {
      state: string;
      workspace: { trajectoryId: string; files: number; startedFrom: unknown; unavailable: unknown };
    };
    assert.equal(statusJson.state, 'awaiting_approval');
    assert.ok(statusJson.workspace.files >= 5, JSON.stringify(statusJson.workspace));
    assert.equal(statusJson.workspace.startedFrom, null);
    assert.equal(statusJson.workspace.unavailable, null);

    const denied = await cli(['deny', name, '--all']);
    assert.equal(denied.code, 0, denied.stderr);
    assert.equal((await runResult(name)).exitReason, 'permission_denied');

    const after = await cli(['cat', name, 'notes.md']);
    assert.equal(after.stdout, notes, 'the workspace outlives the run');
    const destination = path.join(scratch.root, `${name}-pulled`);
    const pulled = await cli(['pull', name, '-o', destination]);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.match(
      pulled.stdout,
      new RegExp(`^Pulled the workspace of agent ${name} into ${destination}: \\d+ files`),
    );
    assert.equal(await readFile(path.join(destination, 'notes.md'), 'utf8'), notes);
    assert.equal(await readFile(path.join(destination, 'src', 'main.py'), 'utf8'), 'print(1)\n');
    assert.equal((await lstat(path.join(destination, 'huge.bin'))).size, 6_000_000);
    assertOneLineFailure(
      await cli(['pull', name, '-o', destination]),
      /exists and is not empty: give an empty or new folder with -o DIR/,
    );
    const subfolder = path.join(scratch.root, `${name}-src`);
    const pulledFolder = await cli(['pull', name, 'src', '-o', subfolder]);
    assert.equal(pulledFolder.code, 0, pulledFolder.stderr);
    assert.ok(
      (await treeOf(subfolder)).some((entry) => entry.endsWith('main.py')),
      'one folder of the workspace',
    );
  });

  it('says why there is no workspace: no such agent, no tool run yet, deleted at the end', async () => {
    assertOneLineFailure(await cli(['files', uniqueName('nobody')]), /No agent named 'nobody-[0-9a-f]+'/);
    const idle = uniqueName('no-tools');
    assert.equal((await startScripted(idle, [{ text: 'Nothing to do.' }], [])).code, 0);
    await runResult(idle);
    assertOneLineFailure(
      await cli(['cat', idle, 'x']),
      /Agent no-tools-[0-9a-f]+ has no workspace \(trajectory agent-no-tools-.*\): the run never ran a tool/,
    );
    const status = await cli(['status', idle]);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^ {2}workspace {3}agent-no-tools-\S+: none: the run never ran a tool$/m);

    const reset = uniqueName('reset');
    const started = await startScripted(
      reset,
      [
        { text: 'Writing.', toolCalls: [{ tool: 'write_file', arguments: { path: 'a.txt', content: 'a' } }] },
        { text: 'Done.' },
      ],
      ['--permission-mode', 'auto-approve', '--reset-on-end'],
    );
    assert.equal(started.code, 0, started.stderr);
    await runResult(reset);
    assertOneLineFailure(
      await cli(['pull', reset, '-o', path.join(scratch.root, `${reset}-out`)]),
      /has no workspace .*: it was deleted when the run ended \(--reset-on-end\)/,
    );

    const unreachable = await cli(['status', reset], 'http://127.0.0.1:9');
    assert.equal(unreachable.code, 0, unreachable.stderr);
    assert.match(unreachable.stdout, /^ {2}state {7}stopped/m);
    assert.match(
      unreachable.stdout,
      /^ {2}workspace {3}agent-reset-\S+: cannot be read: Sandbox server http:\/\/127\.0\.0\.1:9 cannot be reached/m,
    );
  });

  it('keeps a hostile workspace from reaching outside: links out are refused by cat and not followed by pull, names shown escaped', async () => {
    const name = uniqueName('hostile');
    const command = [
      'ln -s /etc/passwd passwd-link',
      'ln -s ../../.. up',
      'mkdir sub',
      'ln -s ../../../.. sub/deep',
      "printf 'x' > \"$(printf 'evil\\033[31mred')\"",
      "printf 'ok\\n' > notes.txt",
      'ln -s notes.txt inside-link',
    ].join(' && ');
    const started = await startScripted(
      name,
      [{ text: 'Setting traps.', toolCalls: [{ tool: 'bash', arguments: { command } }] }, { text: 'Done.' }],
      ['--permission-mode', 'auto-approve'],
    );
    assert.equal(started.code, 0, started.stderr);
    await runResult(name);

    const files = await cli(['files', name]);
    assert.equal(files.code, 0, files.stderr);
    assert.ok(files.stdout.includes('  evil\\x1b[31mred\n'), files.stdout);
    assert.ok(!files.stdout.includes('\x1b'), 'no live escape in the listing');
    assert.match(files.stdout, /^symlink +\d+ {2}passwd-link$/m);
    const json = await cli(['files', name, '--json']);
    assert.ok(!json.stdout.includes('\x1b'), 'no live escape in the JSON');
    const entries = (JSON.parse(json.stdout) as { entries: Array<{ path: string }> }).entries;
    assert.ok(
      entries.some((entry) => entry.path === 'evil\x1b[31mred'),
      'the JSON keeps the exact name',
    );

    for (const target of ['passwd-link', 'up/etc/passwd', 'sub/deep/etc/passwd']) {
      const refused = await cli(['cat', name, target]);
      assertOneLineFailure(refused, /Cannot read .* 403: Access denied: path outside workspace/);
      assert.equal(refused.stdout, '');
    }
    assert.equal(
      (await cli(['cat', name, 'inside-link'])).stdout,
      'ok\n',
      'a link inside the workspace reads',
    );

    const parent = path.join(scratch.root, `${name}-parent`);
    await mkdir(parent);
    const destination = path.join(parent, 'out');
    const pulled = await cli(['pull', name, '-o', destination]);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.ok(!pulled.stdout.includes('\x1b'), pulled.stdout);
    assert.deepEqual(await readdir(parent), ['out'], 'nothing written beside the folder');
    const tree = await treeOf(destination);
    assert.ok(
      tree.includes('notes.txt') && tree.includes('evil\x1b[31mred') && tree.includes('sub'),
      tree.join(', '),
    );
    for (const gone of ['passwd-link', 'up', 'sub/deep'])
      assert.ok(!tree.includes(gone), `${gone} was pulled`);
    assert.equal(await readlink(path.join(destination, 'inside-link')), 'notes.txt');
    await assertLinksStayInside(await realpath(destination));
  });

  it('unpacks nothing outside DIR from a sandbox server that sends a hostile archive, and lists what it left out', async () => {
    const name = uniqueName('hostile-server');
    assert.equal((await startScripted(name, [{ text: 'Nothing.' }], [])).code, 0);
    await runResult(name);
    const now = Date.now();
    const file = (entryName: string, content: string) => ({
      name: entryName,
      data: Buffer.from(content),
      mode: 0o644,
      uid: 0,
      gid: 0,
      mtimeMs: now,
    });
    const archive = await createTarGzip([
      file('../escape.txt', 'out'),
      file('/tmp/absolute-escape.txt', 'out'),
      { type: 'symlink', name: 'etc-link', linkTarget: '/etc', uid: 0, gid: 0, mtimeMs: now },
      file('etc-link/evil-passwd', 'x'),
      { type: 'symlink', name: 'climb', linkTarget: '../../..', uid: 0, gid: 0, mtimeMs: now },
      file('climb/evil.txt', 'x'),
      file('ok.txt', 'fine\n'),
      { ...file('setuid.sh', '#!/bin/sh\n'), mode: 0o4755 },
    ]);
    const server = createServer((request, response) => {
      const url = new URL(request.url ?? '/', 'http://fake');
      if (url.pathname === '/workspaces/info') {
        response.writeHead(200, { 'content-type': 'application/json' });
        response.end(
          JSON.stringify({
            trajectoryId: url.searchParams.get('trajectoryId'),
            bytes: 5,
            files: 1,
            origin: null,
          }),
        );
      } else if (url.pathname === '/workspaces/archive') {
        response.writeHead(200, { 'content-type': 'application/gzip' });
        response.end(archive);
      } else {
        response.writeHead(404, { 'content-type': 'application/json' });
        response.end(JSON.stringify({ error: `No route ${url.pathname}` }));
      }
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const parent = path.join(scratch.root, `${name}-parent`);
      await mkdir(parent);
      const destination = path.join(parent, 'out');
      const pulled = await cli(
        ['pull', name, '-o', destination],
        `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      );
      assert.equal(pulled.code, 0, pulled.stderr);
      assert.deepEqual(await readdir(parent), ['out']);
      // The links were left out, so the names below them are plain folders of DIR: nothing went through them.
      assert.deepEqual(await treeOf(destination), [
        'climb',
        'climb/evil.txt',
        'etc-link',
        'etc-link/evil-passwd',
        'ok.txt',
        'setuid.sh',
      ]);
      for (const folder of ['climb', 'etc-link'])
        assert.ok(
          (await lstat(path.join(destination, folder))).isDirectory(),
          `${folder} is not a folder of DIR`,
        );
      await assert.rejects(lstat(path.resolve(destination, '../../..', 'evil.txt')));
      assert.equal((await lstat(path.join(destination, 'setuid.sh'))).mode & 0o7000, 0, 'setuid dropped');
      await assert.rejects(lstat('/tmp/absolute-escape.txt'));
      await assert.rejects(lstat('/etc/evil-passwd'));
      assert.match(pulled.stdout, /^Left out \d+ unsafe entries:$/m);
      for (const left of ['../escape.txt', '/tmp/absolute-escape.txt', 'etc-link', 'climb']) {
        assert.ok(pulled.stdout.includes(`  ${left}`), `${left} not listed:\n${pulled.stdout}`);
      }
    } finally {
      server.close();
    }
  });
});

describe('the auto-coder on a repository, end to end', () => {
  it('fixes the bug of a task, commits it, and the work comes back with diff and pull', async () => {
    const repository = path.join(scratch.root, 'calculator');
    await mkdir(repository);
    await writeFile(path.join(repository, 'tasks.md'), '# Tasks\n\n- [ ] Fix add() so it returns the sum\n');
    await writeFile(path.join(repository, 'calc.py'), 'def add(a, b):\n    return a - b\n');
    await writeFile(
      path.join(repository, 'test_calc.py'),
      'import unittest\n\nfrom calc import add\n\n\nclass AddTest(unittest.TestCase):\n    def test_adds(self):\n        self.assertEqual(add(2, 3), 5)\n\n\nif __name__ == "__main__":\n    unittest.main()\n',
    );
    const git = (...args: string[]) => execFileAsync('git', ['-C', repository, ...args]);
    await git('init', '-q', '-b', 'main');
    await git('add', '.');
    await git(
      '-c',
      'user.name=Tester',
      '-c',
      'user.email=tester@example.com',
      'commit',
      '-q',
      '-m',
      'Start the calculator',
    );
    await assert.rejects(
      execFileAsync('python3', ['-m', 'unittest', '-q'], { cwd: repository }),
      'the bug fails its test',
    );

    const name = uniqueName('auto-coder');
    const started = await startScripted(
      name,
      [
        { text: 'Reading the tasks.', toolCalls: [{ tool: 'read_file', arguments: { path: 'tasks.md' } }] },
        {
          text: 'Fixing add().',
          toolCalls: [
            {
              tool: 'write_file',
              arguments: { path: 'calc.py', content: 'def add(a, b):\n    return a + b\n' },
            },
          ],
        },
        {
          text: 'Running the tests.',
          toolCalls: [
            {
              tool: 'bash',
              arguments: { command: 'python3 -m unittest -q 2>&1 && echo UNITTEST-$((40 + 2))' },
            },
          ],
        },
        {
          text: 'Committing.',
          toolCalls: [
            {
              tool: 'bash',
              arguments: {
                command:
                  'git add calc.py && git commit -q -m "Fix add() to return the sum" && git log --oneline -1',
              },
            },
          ],
        },
        {
          text: 'Recording.',
          toolCalls: [
            {
              tool: 'write_file',
              arguments: { path: 'tasks.md', content: '# Tasks\n\n- [x] Fix add() so it returns the sum\n' },
            },
            {
              tool: 'write_file',
              arguments: { path: 'coding_log.md', content: 'today | Fix add() | done | tests pass\n' },
            },
          ],
        },
        { text: 'Finishing.', toolCalls: [{ tool: 'finish', arguments: { summary: 'Fixed add()' } }] },
        { text: 'Fixed add(); no task is left.' },
      ],
      ['--repo', repository, '--permission-mode', 'auto-approve', '--watch'],
      'auto-coder',
    );
    assert.equal(started.code, 0, `${started.stdout}\n${started.stderr}`);
    assert.equal((await runResult(name)).exitReason, 'finished');

    const exported = await cli(['export', name]);
    assert.ok(exported.stdout.includes('UNITTEST-42'), 'the tests passed in the sandbox');

    const diff = await cli(['diff', name]);
    assert.equal(diff.code, 0, diff.stderr);
    assert.match(diff.stdout, /^[0-9a-f]{7,} Fix add\(\) to return the sum$/m);
    assert.match(diff.stdout, /^\+ {4}return a \+ b$/m);
    assert.match(diff.stdout, /^- {4}return a - b$/m);
    const diffJson = JSON.parse((await cli(['diff', name, '--json'])).stdout) as {
      kind: string;
      base: string;
    };
    const { stdout: startCommit } = await git('rev-parse', 'HEAD');
    assert.deepEqual([diffJson.kind, diffJson.base], ['git', startCommit.trim()]);

    const status = await cli(['status', name]);
    assert.match(
      status.stdout,
      new RegExp(
        `^ {2}started from repository ${repository.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} at ${startCommit.slice(0, 12)}`,
        'm',
      ),
    );

    const destination = path.join(scratch.root, `${name}-pulled`);
    const pulled = await cli(['pull', name, '-o', destination]);
    assert.equal(pulled.code, 0, pulled.stderr);
    const { stdout: log } = await execFileAsync('git', ['-C', destination, 'log', '--oneline']);
    assert.match(log, /Fix add\(\) to return the sum\n.*Start the calculator/s);
    assert.match(await readFile(path.join(destination, 'tasks.md'), 'utf8'), /- \[x\] Fix add\(\)/);
    assert.match(await readFile(path.join(destination, 'coding_log.md'), 'utf8'), /done/);
    await execFileAsync('python3', ['-m', 'unittest', '-q'], { cwd: destination });
  });
});
