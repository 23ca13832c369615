import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ApplicationFailure, defaultPayloadConverter } from '@temporalio/common';
import { WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import type { PrepareWorkspaceInput, PreparedWorkspace } from '../activities';
import { ToolExecutor } from '../activities/tool-executor';
import { prepareTrajectoryWorkspace } from '../activities/workspace-preparation';
import { workflowIdFor } from '../client/agents-client';
import { networkOption } from '../client/commands/run-lifecycle';
import { packFolder, uploadWorkspace } from '../client/workspace-source';
import { agentRunInputSchema, type AgentRunInput } from '../common/agent-input';
import { WORKSPACE_PREPARATION_FAILURE } from '../common/constants';
import type { ToolResult } from '../sandbox/tool-call';
import type { agentRun } from '../workflows';
import { assertOneLineFailure, runCli, startCli } from './helpers/cli';
import { startTestSandbox, TEST_SANDBOX_TOKEN, useAgentsEnvironment } from './helpers/environment';
import { completedActivitiesOfType, scheduledActivities } from './helpers/history';
import { assertReplays } from './helpers/replay';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';
import { startWorker } from './helpers/worker';
import { createActivityDependencies } from '../worker/create-worker';

// One dev server and sandbox server for the file, a fresh worker for each test.
const env = useAgentsEnvironment({ withSandbox: true });

let scratch: string;
before(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'agents-workspace-start-'));
});
after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** The environment of an `agents` process that uses this file's dev server and sandbox server. */
function cliEnvironment(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    ...env.temporal.environment,
    AGENTS_SANDBOX_URLS: env.sandbox!.endpoint.url,
    AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
    ...extra,
  };
}

/** A script file for `--model scripted:<file>`: one bash call, then an answer without tools. */
async function scriptFile(command: string): Promise<string> {
  const file = path.join(scratch, `${uniqueName('script')}.json`);
  const turns = [{ toolCalls: [{ tool: 'bash', arguments: { command } }] }, { text: 'done' }];
  await writeFile(file, JSON.stringify(turns));
  return file;
}

/** `agents start` of a one-iteration run with the given script and options. */
function startArgs(name: string, script: string, options: string[]): string[] {
  return [
    'start',
    name,
    '--template',
    'demo',
    '--model',
    `scripted:${script}`,
    '--permission-mode',
    'auto-approve',
    '--max-iterations',
    '1',
    '--interval',
    '0',
    ...options,
  ];
}

/** The input the run's first execution was started with, from its history. */
async function startedInput(name: string): Promise<AgentRunInput> {
  const history = await env.temporal.client.workflow.getHandle(workflowIdFor(name)).fetchHistory();
  const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  assert.ok(payload, 'the history has a start event with an input');
  return defaultPayloadConverter.fromPayload<AgentRunInput>(payload);
}

/** The results of every tool batch of a run, in order. */
async function toolResults(name: string): Promise<ToolResult[]> {
  const history = await env.temporal.client.workflow.getHandle(workflowIdFor(name)).fetchHistory();
  return completedActivitiesOfType(history.events ?? [], 'toolBatch').flatMap((event) => {
    const payload = event.activityTaskCompletedEventAttributes?.result?.payloads?.[0];
    return payload === undefined || payload === null
      ? []
      : defaultPayloadConverter.fromPayload<ToolResult[]>(payload);
  });
}

/** What the workflow's prepareWorkspace activities returned, in order. */
async function preparations(name: string): Promise<PreparedWorkspace[]> {
  const history = await env.temporal.client.workflow.getHandle(workflowIdFor(name)).fetchHistory();
  return completedActivitiesOfType(history.events ?? [], 'prepareWorkspace').flatMap((event) => {
    const payload = event.activityTaskCompletedEventAttributes?.result?.payloads?.[0];
    return payload === undefined || payload === null
      ? []
      : [defaultPayloadConverter.fromPayload<PreparedWorkspace>(payload)];
  });
}

/** The folder of a run's trajectory on this file's sandbox server. */
async function trajectoryFolder(name: string): Promise<string> {
  const handle = env.temporal.client.workflow.getHandle(workflowIdFor(name));
  const { runId } = await handle.describe();
  const history = await handle.fetchHistory();
  const firstRunId =
    history.events?.[0]?.workflowExecutionStartedEventAttributes?.firstExecutionRunId ?? runId;
  return path.join(env.sandbox!.root, 'trajectories', `${workflowIdFor(name)}-${firstRunId}`);
}

/** A folder of a project: two files to copy, an ignored file and folder, a nested file. */
async function projectFolder(): Promise<string> {
  const folder = path.join(scratch, uniqueName('project'));
  await mkdir(path.join(folder, 'src', 'lib'), { recursive: true });
  await mkdir(path.join(folder, 'build'));
  await writeFile(path.join(folder, '.gitignore'), 'build/\n*.log\n.env\n');
  await writeFile(path.join(folder, 'README.md'), '# Project\n');
  await writeFile(path.join(folder, 'src', 'lib', 'main.ts'), 'export const answer = 42;\n');
  await writeFile(path.join(folder, 'build', 'bundle.js'), 'compiled');
  await writeFile(path.join(folder, 'debug.log'), 'noise');
  await writeFile(path.join(folder, '.env'), 'API_KEY=do-not-copy');
  await symlink('README.md', path.join(folder, 'readme-link'));
  return folder;
}

async function assertNeverStarted(name: string): Promise<void> {
  await assert.rejects(
    env.temporal.client.workflow.getHandle(workflowIdFor(name)).describe(),
    WorkflowNotFoundError,
  );
}

/** Waits until the sandbox server serves the workspace routes, which `agents start` needs. */
async function sandboxServesUploads(): Promise<boolean> {
  const response = await fetch(`${env.sandbox!.endpoint.url}/uploads/${'0'.repeat(64)}`, {
    headers: { authorization: `Bearer ${TEST_SANDBOX_TOKEN}` },
  });
  const body = (await response.json()) as { error?: string };
  return !(body.error ?? '').startsWith('No route');
}

describe('agents start --workspace', () => {
  it('starts a run whose first tool call sees exactly the files git would add, and records the digest', async () => {
    assert.ok(await sandboxServesUploads(), 'the sandbox server serves PUT /uploads');
    const folder = await projectFolder();
    const name = uniqueName('workspace-folder');
    const script = await scriptFile('find . -mindepth 1 | sort');
    const result = await runCli(startArgs(name, script, ['--workspace', folder]), cliEnvironment());
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /Workspace: folder .* \(3 files, .*, sha256 [0-9a-f]{12}\)/);
    const handle = env.temporal.client.workflow.getHandle<typeof agentRun>(workflowIdFor(name));
    assert.equal((await handle.result()).exitReason, 'max_iterations');

    const [listing] = await toolResults(name);
    assert.equal(listing?.success, true, listing?.error);
    assert.deepEqual(listing.output.trim().split('\n'), [
      './.gitignore',
      './README.md',
      './readme-link',
      './src',
      './src/lib',
      './src/lib/main.ts',
    ]);
    const input = await startedInput(name);
    assert.equal(input.workspace?.kind, 'folder');
    assert.match(input.workspace.digest, /^[0-9a-f]{64}$/);
    assert.equal(input.workspace.files, 3);
    assert.ok(result.stdout.includes(input.workspace.digest.slice(0, 12)));
    const scheduled = await scheduledActivities<PrepareWorkspaceInput>(handle, 'prepareWorkspace');
    assert.equal(scheduled.length, 1);
    assert.equal(scheduled[0]?.input.digest, input.workspace.digest);
    assert.equal(scheduled[0]?.summary, `workspace: folder ${input.workspace.digest.slice(0, 12)}`);
    assert.equal((await preparations(name))[0]?.prepared, 'now');
    await assertReplays(env.temporal, [workflowIdFor(name)]);
  });

  it('refuses a folder with a symlink out, a FIFO or a 5 GB sparse file with one line, and starts nothing', async () => {
    const linkOut = path.join(scratch, uniqueName('link-out'));
    await mkdir(linkOut);
    await writeFile(path.join(linkOut, 'ok.txt'), 'fine');
    await symlink('/etc/passwd', path.join(linkOut, 'passwd'));
    const withFifo = path.join(scratch, uniqueName('fifo'));
    await mkdir(withFifo);
    execFileSync('mkfifo', [path.join(withFifo, 'pipe')]);
    const sparse = path.join(scratch, uniqueName('sparse'));
    await mkdir(sparse);
    execFileSync('truncate', ['-s', '5G', path.join(sparse, 'disk.img')]);
    const cases: Array<[string, RegExp]> = [
      [linkOut, /passwd is a symlink to \/etc\/passwd, outside the folder/],
      [withFifo, /pipe is a FIFO \(named pipe\); only files, folders and symlinks are copied/],
      [
        sparse,
        /holds 5\.0 GiB in 1 files, over the 1\.0 GiB limit for a workspace \(AGENTS_WORKSPACE_LIMIT\)/,
      ],
    ];
    const script = await scriptFile('true');
    for (const [folder, pattern] of cases) {
      const name = uniqueName('refused');
      const started = Date.now();
      assertOneLineFailure(
        await runCli(startArgs(name, script, ['--workspace', folder]), cliEnvironment()),
        pattern,
      );
      await assertNeverStarted(name);
      // The sparse file was refused from its size, not read: 5 GB would take far longer.
      if (folder === sparse) assert.ok(Date.now() - started < 60_000);
    }
  });

  it('puts --network and --reset-on-end in the input, and refuses a bad --network naming the accepted forms', async () => {
    const name = uniqueName('network');
    const script = await scriptFile('true');
    const args = [
      ...startArgs(name, script, []),
      '--network',
      'allow:example.com,*.pypi.org',
      '--reset-on-end',
    ];
    const result = await runCli(args, cliEnvironment());
    assert.equal(result.code, 0, result.stderr);
    const input = await startedInput(name);
    assert.deepEqual(input.sandbox, { network: { allow: ['example.com', '*.pypi.org'] }, resetOnEnd: true });
    await env.temporal.client.workflow.getHandle(workflowIdFor(name)).result();

    const bad = uniqueName('bad-network');
    assertOneLineFailure(
      await runCli([...startArgs(bad, script, []), '--network', 'x'], cliEnvironment()),
      /--network 'x'\. Accepted: off, on, allow:HOST\[,HOST…\]/,
    );
    assertOneLineFailure(
      await runCli([...startArgs(bad, script, []), '--network', 'allow:exa mple.com'], cliEnvironment()),
      /--network 'allow:exa mple\.com': 'exa mple\.com' must be a host name/,
    );
    await assertNeverStarted(bad);
    assert.equal(networkOption('off'), false);
    assert.equal(networkOption('on'), true);
  });
});

describe('agents start --repo', () => {
  it('clones a local repository at an older commit, records that commit, and the agent sees it in git log', async () => {
    const repository = path.join(scratch, uniqueName('repository'));
    await mkdir(repository);
    const git = (...args: string[]) =>
      execFileSync('git', ['-C', repository, ...args], { encoding: 'utf8' }).trim();
    git('init', '--quiet');
    git('config', 'user.email', 'dev@example.com');
    git('config', 'user.name', 'Dev');
    await writeFile(path.join(repository, 'notes.txt'), 'first\n');
    git('add', 'notes.txt');
    git('commit', '--quiet', '-m', 'first commit');
    const older = git('rev-parse', 'HEAD');
    await writeFile(path.join(repository, 'notes.txt'), 'second\n');
    git('commit', '--quiet', '-am', 'second commit');

    const name = uniqueName('repo');
    const script = await scriptFile('git log --oneline && cat notes.txt');
    const result = await runCli(
      startArgs(name, script, ['--repo', repository, '--ref', older.slice(0, 10)]),
      cliEnvironment(),
    );
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`Workspace: repository .* at ${older.slice(0, 12)}`));
    await env.temporal.client.workflow.getHandle(workflowIdFor(name)).result();
    const input = await startedInput(name);
    assert.equal(input.workspace?.kind, 'repository');
    assert.equal(input.workspace.commit, older);
    assert.equal(input.workspace.url, repository);
    const [log] = await toolResults(name);
    assert.equal(log?.success, true, log?.error);
    assert.match(log.output, /first commit/);
    assert.doesNotMatch(log.output, /second commit/);
    assert.match(log.output, /^first$/m);
  });

  it('refuses a URL with credentials, and a ref that is not there, with one line', async () => {
    const script = await scriptFile('true');
    const name = uniqueName('bad-repo');
    assertOneLineFailure(
      await runCli(
        startArgs(name, script, ['--repo', 'https://user:secret@example.com/project.git']),
        cliEnvironment(),
      ),
      /--repo '.*': must not contain credentials/,
    );
    assertOneLineFailure(
      await runCli(
        startArgs(name, script, ['--repo', path.join(scratch, 'no-such-repository')]),
        cliEnvironment(),
      ),
      /git clone .*no-such-repository failed: /,
    );
    // git's protocol.allow default refuses the transports that run commands.
    const marker = path.join(scratch, uniqueName('ext-ran'));
    assertOneLineFailure(
      await runCli(startArgs(name, script, ['--repo', `ext::sh -c touch% ${marker}`]), cliEnvironment()),
      /git clone ext::.* failed: .*transport 'ext' not allowed/,
    );
    await assert.rejects(readFile(marker), { code: 'ENOENT' });
    assertOneLineFailure(
      await runCli(startArgs(name, script, ['--repo=--upload-pack=touch /tmp/x']), cliEnvironment()),
      /must not start with "-"/,
    );
    await assertNeverStarted(name);
    assert.equal(
      agentRunInputSchema.shape.workspace.safeParse({
        kind: 'repository',
        url: 'https://token@example.com/x.git',
        commit: 'a'.repeat(40),
        digest: 'b'.repeat(64),
        files: 1,
        bytes: 1,
      }).success,
      false,
    );
  });
});

describe('workspace preparation', () => {
  it('copies an upload from the server that has it to the trajectory server, then prepares it there once', async () => {
    const other = await startTestSandbox();
    try {
      const tools = new ToolExecutor({ endpoints: [env.sandbox!.endpoint, other.endpoint] });
      // A trajectory that lives on this file's server while the upload went to the other one.
      let trajectoryId = '';
      for (let index = 0; trajectoryId === ''; index += 1) {
        const candidate = `agent-transfer-${index}-run`;
        if (tools.serverFor(candidate).url === env.sandbox!.endpoint.url) trajectoryId = candidate;
      }
      const packed = await packFolder(await projectFolder(), await mkdtemp(path.join(scratch, 'pack-')), {
        limitBytes: 1024 ** 3,
      });
      await uploadWorkspace(packed, other.endpoint);
      const heartbeats: unknown[] = [];
      const context = {
        heartbeat: (details?: unknown) => heartbeats.push(details),
        signal: new AbortController().signal,
      };
      const first = await prepareTrajectoryWorkspace({ trajectoryId, digest: packed.digest }, tools, context);
      assert.equal(first.prepared, 'now');
      assert.equal(first.copiedFrom, other.endpoint.url);
      assert.ok(heartbeats.length > 0, 'the copy heartbeats');
      const workspace = path.join(env.sandbox!.root, 'trajectories', trajectoryId, 'workspace');
      assert.equal(
        await readFile(path.join(workspace, 'src', 'lib', 'main.ts'), 'utf8'),
        'export const answer = 42;\n',
      );
      assert.deepEqual((await readdir(workspace)).sort(), ['.gitignore', 'README.md', 'readme-link', 'src']);
      // A retried activity finds it done and unpacks nothing again.
      const again = await prepareTrajectoryWorkspace({ trajectoryId, digest: packed.digest }, tools, context);
      assert.equal(again.prepared, 'before');
      assert.equal(again.copiedFrom, undefined);
      await tools.close();
    } finally {
      await other.server.close();
      await rm(other.root, { recursive: true, force: true });
    }
  });

  it('ends the run failed, saying so, when no sandbox server has the upload', async () => {
    const name = uniqueName('no-upload');
    const digest = 'f'.repeat(64);
    const draft = scriptedRun(name, [{ text: 'never asked' }], {
      workspace: { kind: 'folder', path: '/nowhere', digest, files: 1, bytes: 1 },
      maxIterations: 1,
    });
    const handle = await env.agents.start(draft);
    const failure = await handle.result().then(
      () => assert.fail('the run should fail'),
      (error: unknown) => error,
    );
    assert.ok(failure instanceof WorkflowFailedError);
    assert.ok(failure.cause instanceof ApplicationFailure);
    assert.equal(failure.cause.type, WORKSPACE_PREPARATION_FAILURE);
    assert.match(failure.cause.message, new RegExp(`No sandbox server has upload ${digest}`));
    const history = await handle.fetchHistory();
    assert.equal(completedActivitiesOfType(history.events ?? [], 'modelTurn').length, 0);
  });

  it('a worker SIGKILLed once preparation is scheduled leaves one unpacked workspace, and the run goes on', async () => {
    await env.worker.stop();
    const folder = await projectFolder();
    const name = uniqueName('killed');
    const script = await scriptFile('find . -mindepth 1 | sort');
    const worker = await startCli(['worker'], cliEnvironment(), /Worker polling task queue/);
    let killed = false;
    try {
      const result = await runCli(startArgs(name, script, ['--workspace', folder]), cliEnvironment());
      assert.equal(result.code, 0, result.stderr);
      const handle = env.temporal.client.workflow.getHandle(workflowIdFor(name));
      await waitFor(
        'prepareWorkspace scheduled',
        async () => (await scheduledActivities(handle, 'prepareWorkspace')).length > 0,
        30_000,
      );
      worker.kill('SIGKILL');
      killed = true;
      env.worker = await startWorker(
        env.temporal,
        createActivityDependencies(env.temporal.home, [env.sandbox!.endpoint]),
      );
      await handle.result();
      const trajectory = await trajectoryFolder(name);
      const [listing] = await toolResults(name);
      assert.equal(listing?.success, true, listing?.error);
      assert.equal(listing.output.trim().split('\n').length, 6);
      // Nothing left half-done beside the workspace: no staging folder from the killed attempt.
      const leftovers = (await readdir(trajectory)).filter((entry) => /stag/i.test(entry));
      assert.deepEqual(leftovers, []);
      const prepared = await preparations(name);
      assert.equal(prepared.length, 1);
    } finally {
      if (!killed) worker.kill('SIGKILL');
    }
  });
});
