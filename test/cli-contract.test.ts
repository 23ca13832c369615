import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { workflowIdFor } from '../client/agents-client';
import type { AuditEntry } from '../client/audit/audit-entries';
import type { AgentListing } from '../client/agents-client';
import type { ScriptedTurnDraft } from '../common/agent-input';
import {
  EXIT_REASONS,
  type AgentStatus,
  type IterationRecord,
  type PendingPermission,
} from '../common/agent-run-types';
import { RUN_ENDED_OTHERWISE_EXIT_CODE, RUN_EXIT_CODES, runExitCode } from '../client/exit-codes';
import { assertOneLineFailure, runCli, spawnCli, type CliResult } from './helpers/cli';
import { useAgentsEnvironment } from './helpers/environment';
import { ModelApiServer, openaiStream } from './helpers/model-api-server';
import { TEST_TEMPLATE, uniqueName } from './helpers/run-input';
import { testTemporalBinary } from './helpers/temporal-server';
import { waitFor } from './helpers/wait';

/**
 * The contract a script relies on, through the `agents` binary against a real dev server: `--json`
 * output that parses, server news on stderr, refusals of signals a run would ignore, exit codes
 * that say how a watched run ended, and watch's progress inside an iteration.
 */

const env = useAgentsEnvironment({ withSandbox: true });

/** The variable the workers read the model server's key from; the in-process worker sees it too. */
const KEY_VARIABLE = 'AGENTS_CLI_CONTRACT_KEY';
process.env[KEY_VARIABLE] = 'sk-test-cli-contract';

/** What the CLI says about the server it uses: news, which belongs on stderr. */
const SERVER_NEWS = /Using the Temporal dev server on 127\.0\.0\.1:\d+/;

let scripts: string;
const servers: ModelApiServer[] = [];
before(async () => {
  scripts = await mkdtemp(path.join(os.tmpdir(), 'agents-cli-contract-'));
});
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});
after(async () => {
  await rm(scripts, { recursive: true, force: true });
});

/** The environment of every `agents` process of this file: the file's dev server, the model key. */
function cliEnvironment(): NodeJS.ProcessEnv {
  return { ...env.temporal.environment, [KEY_VARIABLE]: process.env[KEY_VARIABLE] };
}

/** `--model scripted:<file>` for a script of turns, written to the file's scratch folder. */
async function scriptedModel(name: string, turns: ScriptedTurnDraft[]): Promise<string> {
  const file = path.join(scripts, `${name}.json`);
  await writeFile(file, JSON.stringify(turns));
  return `scripted:${file}`;
}

/** `agents start <name>` of the demo template with `model` and the options given. */
function startArguments(name: string, model: string, ...options: string[]): string[] {
  return ['start', name, '--template', 'demo', '--model', model, ...options];
}

/** A turn that asks to write a file, which waits for a person in the default `ask` mode. */
const WRITE_TURN: ScriptedTurnDraft = {
  text: 'Writing notes.',
  toolCalls: [{ tool: 'write_file', arguments: { path: 'notes.md', content: 'hi' } }],
  usage: { inputTokens: 50, outputTokens: 5 },
};

async function modelServer(): Promise<ModelApiServer> {
  const server = await ModelApiServer.start();
  servers.push(server);
  return server;
}

/** The pending requests of `name` once it waits for a decision. */
async function awaitApproval(name: string): Promise<PendingPermission[]> {
  return waitFor(`agent ${name} to await approval`, async () => {
    const status = await env.agents.status(name);
    return status.state === 'awaiting_approval' && status.pendingPermissions.length > 0
      ? status.pendingPermissions
      : undefined;
  });
}

/** Runs the real `temporal` CLI against the file's dev server, as a person at a terminal would. */
async function temporalCli(args: string[]): Promise<void> {
  const { address, namespace } = env.temporal.config.temporal;
  await promisify(execFile)(await testTemporalBinary(), [
    ...args,
    '--address',
    address,
    '--namespace',
    namespace,
  ]);
}

/** Asserts the server news went to stderr and returns stdout parsed as one JSON document. */
function parsedJson<T>(result: CliResult): T {
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, SERVER_NEWS, 'the server news is on stderr');
  return JSON.parse(result.stdout) as T;
}

/** Asserts the server news went to stderr and returns every line of stdout parsed as JSON. */
function parsedJsonLines<T>(result: CliResult): T[] {
  assert.match(result.stderr, SERVER_NEWS, 'the server news is on stderr');
  const lines = result.stdout.split('\n').filter((line) => line !== '');
  return lines.map((line) => JSON.parse(line) as T);
}

describe('the exit codes of a watched run', () => {
  it('gives 0 to the normal ends and a code of its own to every other end', () => {
    const normal = EXIT_REASONS.filter((reason) => RUN_EXIT_CODES[reason] === 0);
    assert.deepEqual([...normal].sort(), ['finished', 'max_iterations', 'stopped']);
    const others = EXIT_REASONS.filter((reason) => RUN_EXIT_CODES[reason] !== 0).map(
      (reason) => RUN_EXIT_CODES[reason],
    );
    others.push(RUN_ENDED_OTHERWISE_EXIT_CODE);
    assert.equal(new Set(others).size, others.length, 'no two ends share a code');
    assert.ok(
      others.every((code) => code > 2),
      'none is taken for a failed command (1) or a missing one (2)',
    );
    const usage = { inputTokens: 0, outputTokens: 0, costUsd: 0 };
    const unknownReason = { exitReason: 'a_newer_reason', iterations: 1, usage } as never;
    assert.equal(runExitCode({ outcome: 'completed', result: unknownReason }), RUN_ENDED_OTHERWISE_EXIT_CODE);
    assert.equal(runExitCode({ outcome: 'cancelled', message: '' }), RUN_EXIT_CODES.cancelled);
  });
});

describe('the agents CLI as a script sees it', () => {
  it('prints only JSON on stdout for list, status, log, pending and watch --json, and the server news on stderr', async () => {
    const name = uniqueName('json');
    const model = await scriptedModel(name, [WRITE_TURN, { text: 'Wrote notes.' }]);
    const started = await runCli(
      startArguments(name, model, '--max-iterations', '1', '--interval', '0'),
      cliEnvironment(),
    );
    assert.equal(started.code, 0, started.stderr);
    assert.match(started.stderr, SERVER_NEWS);
    assert.doesNotMatch(started.stdout, SERVER_NEWS);
    const [request] = await awaitApproval(name);
    const watched = runCli(['watch', name, '--json'], cliEnvironment());

    const pending = parsedJson<Array<{ name: string; request: PendingPermission }>>(
      await runCli(['pending', name, '--json'], cliEnvironment()),
    );
    assert.deepEqual(
      pending.map((entry) => [entry.name, entry.request.requestId, entry.request.input]),
      [[name, request!.requestId, { path: 'notes.md', content: 'hi' }]],
    );
    const status = parsedJson<AgentStatus>(await runCli(['status', name, '--json'], cliEnvironment()));
    assert.equal(status.state, 'awaiting_approval');
    assert.equal(status.pendingPermissions[0]?.requestId, request!.requestId);
    const listings = parsedJson<AgentListing[]>(await runCli(['list', '--json'], cliEnvironment()));
    assert.ok(
      listings.some((listing) => listing.name === name),
      'list --json holds the run',
    );

    const approved = await runCli(['approve', name, request!.requestId], cliEnvironment());
    assert.equal(approved.code, 0, approved.stderr);

    const watch = await watched;
    assert.equal(watch.code, 0, watch.stderr);
    const entries = parsedJsonLines<AuditEntry>(watch);
    const kinds = entries.map((entry) => entry.kind);
    for (const kind of [
      'model_output',
      'tool_call',
      'permission_decided',
      'tool_result',
      'notice',
    ] as const) {
      assert.ok(kinds.includes(kind), `watch --json shows ${kind}: ${kinds.join(', ')}`);
    }
    const record = entries.find((entry) => entry.kind === 'notice' && entry.record !== undefined);
    assert.equal(record?.kind === 'notice' ? record.record?.iteration : undefined, 1);
    const last = entries.at(-1);
    assert.equal(last?.kind, 'run_ended', 'the last line is the end of the run');
    assert.deepEqual(last?.kind === 'run_ended' ? last.result : undefined, {
      exitReason: 'max_iterations',
      iterations: 1,
      usage: { inputTokens: 50, outputTokens: 5, costUsd: 0 },
    });

    const log = parsedJsonLines<IterationRecord>(await runCli(['log', name, '--json'], cliEnvironment()));
    assert.deepEqual(
      log.map((entry) => [entry.iteration, entry.status]),
      [[1, 'permission']],
    );
  });

  it('refuses approve, deny and extend of an unknown or decided request and resume of a run that is not paused: exit 1, one line, no signal sent', async () => {
    const name = uniqueName('refusals');
    const model = await scriptedModel(name, [WRITE_TURN, { text: 'Wrote notes.' }]);
    const started = await runCli(
      startArguments(name, model, '--max-iterations', '2', '--interval', '3600'),
      cliEnvironment(),
    );
    assert.equal(started.code, 0, started.stderr);
    const [request] = await awaitApproval(name);
    const requestId = request!.requestId;
    const unknown = 'pr_0000000000000000';

    const neverOpened = new RegExp(
      `Request ${unknown} of agent ${name} is not pending: the run never opened it \\(waiting: ${requestId}\\)`,
    );
    const refused = await Promise.all([
      runCli(['approve', name, unknown], cliEnvironment()),
      runCli(['deny', name, unknown], cliEnvironment()),
      runCli(['extend', name, unknown], cliEnvironment()),
    ]);
    for (const result of refused) assertOneLineFailure(result, neverOpened);
    assertOneLineFailure(
      await runCli(['approve', name, 'pr_nothex'], cliEnvironment()),
      /Invalid request ID 'pr_nothex': must be "pr_" followed by 16 hex digits/,
    );
    assertOneLineFailure(
      await runCli(['resume', name], cliEnvironment()),
      new RegExp(
        `Agent ${name} is not paused \\(state: awaiting_approval\\): resume lifts a budget pause only`,
      ),
    );

    const approved = await runCli(['approve', name, requestId, '--by', 'ana'], cliEnvironment());
    assert.equal(approved.code, 0, approved.stderr);
    assert.match(approved.stdout, new RegExp(`Approved ${requestId} of agent ${name}`));
    await waitFor(
      'the first iteration to end',
      async () => (await env.agents.status(name)).state === 'sleeping',
    );

    const decided = new RegExp(
      `Request ${requestId} of agent ${name} is not pending: it was already approved by ana \\(none is waiting\\)`,
    );
    const again = await Promise.all([
      runCli(['approve', name, requestId], cliEnvironment()),
      runCli(['deny', name, requestId], cliEnvironment()),
      runCli(['extend', name, requestId], cliEnvironment()),
    ]);
    for (const result of again) assertOneLineFailure(result, decided);
    assertOneLineFailure(
      await runCli(['resume', name], cliEnvironment()),
      new RegExp(`Agent ${name} is not paused \\(state: sleeping\\)`),
    );
    const status = await env.agents.status(name);
    assert.equal(status.ignoredSignals, 0, 'the run was sent no signal it would ignore');

    const stopped = await runCli(['stop', name], cliEnvironment());
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(stopped.stdout, new RegExp(`Asked agent ${name} to stop\\.`));
    const handle = env.temporal.client.workflow.getHandle(workflowIdFor(name));
    assert.equal(((await handle.result()) as { exitReason: string }).exitReason, 'stopped');
    const history = (await handle.fetchHistory()).events ?? [];
    assert.deepEqual(
      history.flatMap((event) => {
        const signal = event.workflowExecutionSignaledEventAttributes?.signalName;
        return signal === undefined || signal === null ? [] : [signal];
      }),
      ['permission', 'stop'],
      'one decision and one stop reached the run, nothing else',
    );

    const ended = new RegExp(`Agent ${name} is not running: it ended with stopped`);
    const afterEnd = await Promise.all([
      runCli(['stop', name], cliEnvironment()),
      runCli(['resume', name], cliEnvironment()),
      runCli(['approve', name, requestId], cliEnvironment()),
      runCli(['approve', name, '--all'], cliEnvironment()),
    ]);
    for (const result of afterEnd) assertOneLineFailure(result, ended);
  });

  it('exits watch and start --watch with the code of each end: permission_denied 3, permission_timeout 4, repeated_failures 5, stagnation 6, no_output 7, cancelled 8, terminated 9', async () => {
    const names = {
      denied: uniqueName('exit-denied'),
      timeout: uniqueName('exit-timeout'),
      failures: uniqueName('exit-failures'),
      stagnation: uniqueName('exit-stagnation'),
      silent: uniqueName('exit-silent'),
      cancelled: uniqueName('exit-cancelled'),
      terminated: uniqueName('exit-terminated'),
    };
    const failing = await modelServer();
    failing.replyAlways({
      status: 400,
      body: {
        error: { message: 'no such model here', type: 'invalid_request_error', param: null, code: null },
      },
    });
    const [deniedModel, timeoutModel, stagnantModel, silentModel, sleepyModel] = await Promise.all([
      scriptedModel(names.denied, [WRITE_TURN]),
      scriptedModel(names.timeout, [WRITE_TURN]),
      scriptedModel(names.stagnation, [{ text: 'Checked the same file again.' }]),
      scriptedModel(names.silent, [{ text: '' }]),
      scriptedModel(names.cancelled, [{ text: 'One step.' }]),
    ]);

    const deniedWatch = runCli(startArguments(names.denied, deniedModel, '--watch'), cliEnvironment());
    const timeoutWatch = runCli(
      startArguments(names.timeout, timeoutModel, '--permission-timeout', '1', '--watch'),
      cliEnvironment(),
    );
    const stagnationWatch = runCli(
      startArguments(names.stagnation, stagnantModel, '--interval', '0', '--watch'),
      cliEnvironment(),
    );
    const silentWatch = runCli(
      startArguments(names.silent, silentModel, '--interval', '0', '--watch'),
      cliEnvironment(),
    );
    // The model API refuses every call; the typed client sets the no-wait backoff the CLI does not offer.
    await env.agents.start({
      name: names.failures,
      template: { name: 'test-program', source: 'file', content: TEST_TEMPLATE },
      model: {
        provider: 'openai',
        model: 'test-model',
        baseUrl: `${failing.url}/v1`,
        apiKeyEnv: KEY_VARIABLE,
      },
      intervalS: 0,
      guards: { errorBackoffS: 0 },
    });
    const failuresWatch = runCli(['watch', names.failures], cliEnvironment());
    for (const name of [names.cancelled, names.terminated]) {
      const started = await runCli(
        startArguments(name, sleepyModel, '--interval', '3600', '--max-iterations', '2'),
        cliEnvironment(),
      );
      assert.equal(started.code, 0, started.stderr);
    }
    await awaitApproval(names.denied);
    const deniedSecondWatch = runCli(['watch', names.denied], cliEnvironment());
    const denied = await runCli(['deny', names.denied, '--all'], cliEnvironment());
    assert.equal(denied.code, 0, denied.stderr);
    for (const name of [names.cancelled, names.terminated]) {
      await waitFor(`${name} to sleep after its first iteration`, async () => {
        return (await env.agents.status(name)).state === 'sleeping';
      });
    }
    // Both watches follow their run from before it ends: each has shown the first iteration's record.
    const cancelledWatch = spawnCli(['watch', names.cancelled], cliEnvironment());
    const terminatedWatch = spawnCli(['watch', names.terminated], cliEnvironment());
    await waitFor('both watches to show the first iteration', () =>
      [cancelledWatch, terminatedWatch].every((watch) => watch.stdout.includes('#1 ok')),
    );
    await temporalCli(['workflow', 'cancel', '--workflow-id', workflowIdFor(names.cancelled)]);
    await temporalCli([
      'workflow',
      'terminate',
      '--workflow-id',
      workflowIdFor(names.terminated),
      '--reason',
      'no longer needed',
    ]);

    const expectations: Array<[string, Promise<CliResult>, number, RegExp]> = [
      ['start --watch, denied', deniedWatch, 3, /ended: permission_denied after 1 iteration/],
      ['watch, denied', deniedSecondWatch, 3, /ended: permission_denied after 1 iteration/],
      ['start --watch, timed out', timeoutWatch, 4, /ended: permission_timeout after 1 iteration/],
      ['watch, failing model', failuresWatch, 5, /ended: repeated_failures after 3 iteration/],
      ['start --watch, stagnant', stagnationWatch, 6, /ended: stagnation after 3 iteration/],
      ['start --watch, silent', silentWatch, 7, /ended: no_output after 3 iteration/],
      ['watch, cancelled', cancelledWatch.done, 8, /ended: cancelled after 1 iteration/],
      ['watch, terminated', terminatedWatch.done, 9, /was terminated: no longer needed/],
    ];
    for (const [label, pending, code, ending] of expectations) {
      const result = await pending;
      assert.equal(result.code, code, `${label}: exit ${result.code}\n${result.stdout}\n${result.stderr}`);
      assert.match(result.stdout, ending, label);
    }
    const failures = await failuresWatch;
    assert.match(failures.stdout, /model turn \d+\.1 failed: .*no such model here/);

    // Watching a run that has ended says the same, at once.
    const late = await runCli(['watch', names.denied], cliEnvironment());
    assert.equal(late.code, 3, late.stderr);
    assert.match(late.stdout, /#1 permission[\s\S]*ended: permission_denied/);
  });

  it('shows each model turn and tool call of an iteration in watch before the iteration ends', async () => {
    const name = uniqueName('progress');
    const server = await modelServer();
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    server.reply(
      {
        events: openaiStream({
          textPieces: ['Listing ', 'files.'],
          toolCalls: [{ id: 'call_1', name: 'bash', argumentPieces: ['{"command":', '"echo hi"}'] }],
          usage: { inputTokens: 120, outputTokens: 12 },
        }),
      },
      // The second turn holds its stream open: the iteration stays under way until the test lets go.
      {
        events: [
          { until: released },
          ...openaiStream({ textPieces: ['All done.'], usage: { inputTokens: 150, outputTokens: 4 } }),
        ],
      },
    );
    const started = await runCli(
      [
        'start',
        name,
        '--template',
        'demo',
        '--model',
        'openai:test-model',
        '--base-url',
        `${server.url}/v1`,
        '--api-key-env',
        KEY_VARIABLE,
        '--permission-mode',
        'auto-approve',
        '--max-iterations',
        '1',
        '--interval',
        '0',
      ],
      cliEnvironment(),
    );
    assert.equal(started.code, 0, started.stderr);
    const watch = spawnCli(['watch', name], cliEnvironment());
    try {
      await waitFor('watch to show the tool call ending', () => watch.stdout.includes('← bash ok'));
      assert.equal(server.requests.length, 2, 'the second model turn is under way');
      assert.equal(server.requests[1]?.state, 'replying');
      const lines = watch.stdout.split('\n');
      const turn = lines.findIndex((line) =>
        /model turn 1\.1 {2}120→12 tok, 1 tool call: Listing files\./.test(line),
      );
      const call = lines.findIndex((line) => line.includes('→ bash {"command":"echo hi"}'));
      const result = lines.findIndex((line) => line.includes('← bash ok'));
      assert.ok(turn >= 0 && turn < call && call < result, watch.stdout);
      assert.doesNotMatch(watch.stdout, /#1 /, 'the iteration has not ended yet');
    } finally {
      release();
    }
    const ended = await watch.done;
    assert.equal(ended.code, 0, ended.stderr);
    assert.match(
      ended.stdout,
      /← bash ok\n {4}model turn 1\.2 {2}150→4 tok: All done\.\n {2}#1 ok .*All done\.\nAgent progress-[0-9a-f]+ ended: max_iterations after 1 iteration\(s\), 270 tokens in, 16 out/,
    );
  });
});
