import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ApplicationFailure } from '@temporalio/common';
import type { ModelRequest } from '../models/model-provider';
import { pickScriptedTurn, SCRIPTED_MODEL_ERROR, ScriptedModel } from '../models/scripted-model';
import { TranscriptStore, type Transcript } from '../activities/transcript-store';
import { loadConfig, webUiRunUrl } from '../client/config';
import { DEMO_SCRIPT } from '../client/demo-script';
import { AgentsError } from '../client/errors';
import { MODEL_OPTION_FORMS, parseModelOption } from '../client/model-option';
import { BUILT_IN_TEMPLATES_DIR, listTemplates, loadTemplate } from '../client/templates';
import {
  agentNameSchema,
  agentRunInputSchema,
  describeZodError,
  scriptedModelSchema,
  type AgentRunInputDraft,
  type ModelSpec,
  type ScriptedTurn,
} from '../common/agent-input';
import type { AgentState, TranscriptMessage } from '../common/agent-run-types';
import {
  ANSWER_TEXT_MAX_BYTES,
  MODEL_RESULT_MAX_BYTES,
  TOOL_ARGUMENT_MAX_BYTES,
  TOOL_BATCH_RESULT_MAX_BYTES,
  TRANSCRIPT_UNAVAILABLE,
} from '../common/constants';
import { CUT_MARKER_START, cutToJsonBytes, jsonBytes, jsonStringBytes } from '../common/payload-bounds';
import { fitToolResults } from '../activities/tool-batch';
import { boundAnswer } from '../models/answer-bounds';
import { parseToolCallArguments } from '../models/tool-calls';
import { notTakenMessage } from '../workflows/tool-results';
import { COMPACTED_HEADING, compactTranscript, estimateTokens } from '../workflows/compaction';
import { renderCurrentDetails, type DetailsView } from '../workflows/current-details';
import { approvalTimerSummary, formatWait, pauseTimerSummary } from '../workflows/event-summaries';
import { runSettings } from '../workflows/run-settings';
import { parseHostPort } from '../common/host-port';
import {
  isSearchAttributeNotServedYet,
  retryWhileSearchAttributesNotServed,
} from '../client/search-attributes-served';
import { buildIterationRecord, errorMarker, shortenError, summarize } from '../workflows/iteration-record';
import { buildIterationPrompt, buildSystemPrompt } from '../workflows/prompts';

type ScriptedSpec = Extract<ModelSpec, { provider: 'scripted' }>;

const BUILT_IN_NAMES = ['auto-coder', 'bug-fixer', 'demo', 'paper-writer', 'research-assistant'];

/** Root of every temporary directory this file creates, removed at the end. */
let scratchRoot: string;

before(async () => {
  scratchRoot = await mkdtemp(path.join(os.tmpdir(), 'agents-unit-'));
});

after(async () => {
  await rm(scratchRoot, { recursive: true, force: true });
});

/** A new empty directory of its own for one test. */
function freshDirectory(): Promise<string> {
  return mkdtemp(path.join(scratchRoot, 'case-'));
}

/** Runs `action`, asserts that it throws an AgentsError and returns it for further checks. */
function catchAgentsError(action: () => unknown): AgentsError {
  try {
    action();
  } catch (error) {
    assert.ok(error instanceof AgentsError, `expected an AgentsError, got ${String(error)}`);
    return error;
  }
  assert.fail('expected an AgentsError, but nothing was thrown');
}

function scriptedSpec(
  turns: Array<Partial<ScriptedTurn>>,
  whenExhausted?: 'cycle' | 'repeat-last',
): ScriptedSpec {
  return scriptedModelSchema.parse({
    provider: 'scripted',
    turns,
    ...(whenExhausted ? { whenExhausted } : {}),
  });
}

function modelRequest(
  spec: ScriptedSpec,
  overrides: Partial<ModelRequest<ScriptedSpec>> = {},
): ModelRequest<ScriptedSpec> {
  return {
    spec,
    systemPrompt: 'system',
    messages: [],
    tools: [],
    callIndex: 0,
    attempt: 1,
    signal: new AbortController().signal,
    onProgress: () => {},
    ...overrides,
  };
}

describe('prompts', () => {
  it('wraps the template between the program markers and asks for a 1-2 sentence summary', () => {
    const template = '# Program\n\n1. Do a step.';
    const prompt = buildSystemPrompt(template);
    assert.ok(prompt.includes(`=== TASK PROGRAM ===\n${template}\n=== END PROGRAM ===`));
    assert.ok(prompt.endsWith('=== END PROGRAM ==='));
    assert.match(prompt, /1-2 sentence\s+summary/);
    assert.match(prompt, /faithfully/);
  });

  it('begins the program with its args while the conversation has not started', () => {
    assert.equal(buildIterationPrompt(false, 'fix bug 42'), 'Begin the program. Args: fix bug 42');
  });

  it('begins without args when they are empty or only whitespace', () => {
    assert.equal(buildIterationPrompt(false, ''), 'Begin the program.');
    assert.equal(buildIterationPrompt(false, '  \n\t'), 'Begin the program.');
  });

  it('asks to continue, without the args, once the conversation has started', () => {
    assert.equal(buildIterationPrompt(true, 'fix bug 42'), 'Continue to the next iteration of the program.');
    assert.equal(buildIterationPrompt(true, ''), 'Continue to the next iteration of the program.');
  });
});

describe('iteration records', () => {
  it('cuts the summary to the last 400 characters', () => {
    const tail = `${'z'.repeat(399)}!`;
    const summary = summarize(`${'a'.repeat(250)}${tail}`);
    assert.equal(summary, tail);
    assert.equal(summary.length, 400);
  });

  it('keeps a short text whole, without surrounding whitespace', () => {
    assert.equal(summarize('  Wrote 3 to demo.txt.\n\n'), 'Wrote 3 to demo.txt.');
  });

  it('does not count trailing whitespace in the 400 characters', () => {
    const text = `${'b'.repeat(10)}${'x'.repeat(400)}\n\n   `;
    assert.equal(summarize(text), 'x'.repeat(400));
  });

  it('summarises an empty or whitespace-only text as "(no output)"', () => {
    assert.equal(summarize(''), '(no output)');
    assert.equal(summarize(' \n\t '), '(no output)');
  });

  it('shortens an error to its first 300 characters', () => {
    const message = `${'e'.repeat(300)}TAIL`;
    assert.equal(shortenError(message), 'e'.repeat(300));
    assert.equal(shortenError('boom'), 'boom');
  });

  it('marks a failed call in the text with the shortened error', () => {
    assert.equal(errorMarker('model unavailable'), '\n[ERROR: model unavailable]');
    assert.equal(errorMarker(`${'m'.repeat(300)}cut`), `\n[ERROR: ${'m'.repeat(300)}]`);
  });

  it('builds a record with ISO timestamps, a one-decimal duration and no error field', () => {
    const startedAtMs = Date.UTC(2025, 0, 2, 3, 4, 5);
    const record = buildIterationRecord({
      iteration: 4,
      startedAtMs,
      endedAtMs: startedAtMs + 12_360,
      text: 'Did the work. Next I will test it.',
      status: 'ok',
      tokensIn: 120,
      tokensOut: 30,
      costUsd: 0.0021,
    });
    assert.deepEqual(record, {
      iteration: 4,
      timestamp: '2025-01-02T03:04:17.360Z',
      startedAt: '2025-01-02T03:04:05.000Z',
      summary: 'Did the work. Next I will test it.',
      status: 'ok',
      durationS: 12.4,
      tokensIn: 120,
      tokensOut: 30,
      costUsd: 0.0021,
    });
    assert.ok(!('error' in record));
  });

  it('rounds the duration to tenths of a second', () => {
    const base = { iteration: 1, text: 'x', status: 'ok' as const, tokensIn: 0, tokensOut: 0, costUsd: 0 };
    const duration = (ms: number) =>
      buildIterationRecord({ ...base, startedAtMs: 1_000, endedAtMs: 1_000 + ms }).durationS;
    assert.equal(duration(0), 0);
    assert.equal(duration(1_249), 1.2);
    assert.equal(duration(1_250), 1.3);
    assert.equal(duration(61_040), 61);
  });

  it('keeps the error, shortened to 300 characters, when one is given', () => {
    const record = buildIterationRecord({
      iteration: 2,
      startedAtMs: 0,
      endedAtMs: 500,
      text: `partial answer${errorMarker('x')}`,
      status: 'error',
      tokensIn: 0,
      tokensOut: 0,
      costUsd: 0,
      error: `${'r'.repeat(300)}dropped`,
    });
    assert.equal(record.status, 'error');
    assert.equal(record.error, 'r'.repeat(300));
    assert.equal(record.durationS, 0.5);
  });
});

describe('conversation compaction', () => {
  const user = (content: string): TranscriptMessage => ({ role: 'user', content });
  const answer = (content: string, tool?: string): TranscriptMessage =>
    tool === undefined
      ? { role: 'assistant', content }
      : {
          role: 'assistant',
          content,
          toolCalls: [{ id: `call-${content}`, tool, arguments: { command: 'ls' } }],
        };
  const result = (content: string, success = true): TranscriptMessage => ({
    role: 'tool',
    toolCallId: 'call',
    tool: 'bash',
    content,
    success,
  });
  /** Ten iterations of a prompt, an answer with a tool call, a 4,000-character result and a summary. */
  const conversation = Array.from({ length: 10 }, (_, index) => [
    user(`Continue (iteration ${index + 1}).`),
    answer(`Listing files ${index + 1}.`, 'bash'),
    result('f'.repeat(4000), index !== 3),
    answer(`Summary of iteration ${index + 1}.`),
  ]).flat();

  it('leaves a conversation within its budget alone', () => {
    assert.equal(compactTranscript(conversation, [user('next')], 20_000, 'system'), undefined);
  });

  it('replaces older turns with one summary and keeps the recent ones, cut at a user message', () => {
    const compaction = compactTranscript(conversation, [user('next')], 5_000, 'system');
    assert.ok(compaction !== undefined);
    const [summary, ...kept] = compaction.messages;
    assert.equal(summary?.role, 'user');
    assert.ok(summary?.content.startsWith(COMPACTED_HEADING));
    assert.equal(
      kept[0]?.role,
      'user',
      'the recent part starts at a prompt, no tool result without its call',
    );
    assert.deepEqual(kept, conversation.slice(compaction.replaced));
    assert.ok(estimateTokens([...compaction.messages, user('next')], 'system') <= 5_000);
    assert.ok(summary?.content.includes('said: Summary of iteration 1.'));
    assert.ok(summary?.content.includes('called bash {"command":"ls"}'));
    assert.ok(summary?.content.includes('bash failed: ffff'), 'failed tools are remembered');
  });

  it('folds an earlier summary into the next one', () => {
    const first = compactTranscript(conversation, [], 5_000, '');
    assert.ok(first !== undefined);
    const grown = [...first.messages, ...conversation.slice(0, 12)];
    const second = compactTranscript(grown, [], 5_000, '');
    assert.ok(second !== undefined);
    assert.ok(second.messages[0]?.content.includes('said: Summary of iteration 1.'));
    assert.equal(second.messages[0]?.content.split(COMPACTED_HEADING).length, 2, 'one heading');
  });

  it('is deterministic', () => {
    assert.deepEqual(
      compactTranscript(conversation, [], 5_000, 'system'),
      compactTranscript(structuredClone(conversation), [], 5_000, 'system'),
    );
  });
});

describe('runs started by earlier versions', () => {
  it('keep running tools without asking, with no budgets and no guard that could end them', () => {
    const legacy = {
      name: 'old',
      template: { name: 't', source: 'file', content: '# T' },
      args: '',
      intervalS: 2,
      model: { provider: 'scripted', turns: [{ text: 'hi' }] },
      guards: { errorBackoffS: 10 },
      sandbox: { network: false, resetOnEnd: false },
    } as unknown as Parameters<typeof runSettings>[0];
    const settings = runSettings(legacy);
    assert.equal(settings.permissions.mode, 'auto-approve');
    assert.deepEqual(settings.budgets, {
      sessionTokens: 0,
      sessionCostUsd: 0,
      dailyTokens: 0,
      dailyCostUsd: 0,
    });
    assert.equal(settings.guards.stagnationWindow, 0);
    assert.equal(settings.guards.errorBackoffS, 10);
  });

  it('from before the sandbox settings get no network, and the workspace kept', () => {
    const legacy = {
      name: 'older',
      template: { name: 't', source: 'file', content: '# T' },
      args: '',
      intervalS: 2,
      model: { provider: 'scripted', turns: [{ text: 'hi' }] },
    } as unknown as Parameters<typeof runSettings>[0];
    assert.deepEqual(runSettings(legacy).sandbox, { network: false, resetOnEnd: false });
  });
});

describe('current details', () => {
  const running: DetailsView = {
    state: 'running',
    iteration: 3,
    maxIterations: 10,
    lastSummary: 'Wrote 3 to demo.txt.',
    inputTokens: 1200,
    outputTokens: 80,
    costUsd: 0.0123,
    lastError: null,
    pendingPermissions: [],
    pauseReason: null,
  };

  it('shows each pending request with the exact signal JSON that approves it', () => {
    const details = renderCurrentDetails({
      ...running,
      state: 'awaiting_approval',
      pendingPermissions: [
        {
          requestId: 'pr_0123456789abcdef',
          tool: 'bash',
          input: { command: 'git push' },
          rationale: 'bash: git push (ask mode)',
          iteration: 3,
          requestedAt: '2026-11-21T10:00:00.000Z',
          expiresAt: '2026-11-21T10:30:00.000Z',
        },
      ],
    });
    assert.ok(details.includes('`{"requestId":"pr_0123456789abcdef","approve":true}`'));
    assert.ok(details.includes('{"command":"git push"}'));
    assert.ok(details.includes('expires 2026-11-21T10:30:00.000Z'));
  });

  it('shows why a paused run is paused and how to resume it', () => {
    const details = renderCurrentDetails({
      ...running,
      state: 'paused_budget',
      pauseReason: 'session token budget reached',
    });
    assert.ok(details.includes('**Paused:** session token budget reached'));
    assert.ok(details.includes('signal `resume`'));
  });

  it('shows the state, the progress as "N of M", the usage and the last summary', () => {
    const details = renderCurrentDetails(running);
    assert.ok(details.includes('**State:** running'));
    assert.ok(details.includes('**Iteration:** 3 of 10'));
    assert.ok(details.includes('1200 tokens in, 80 out, $0.0123'));
    assert.ok(details.includes('**Last summary:** Wrote 3 to demo.txt.'));
    assert.ok(!details.includes('Last error'));
  });

  it('shows only the iteration number when the run has no maximum', () => {
    const details = renderCurrentDetails({ ...running, maxIterations: undefined });
    assert.match(details, /\*\*Iteration:\*\* 3$/m);
    assert.ok(!details.includes(' of '));
  });

  it('shows the last error and leaves out a summary the run does not have yet', () => {
    const details = renderCurrentDetails({
      ...running,
      lastSummary: undefined,
      lastError: 'model timed out',
    });
    assert.ok(details.includes('**Last error:** model timed out'));
    assert.ok(!details.includes('Last summary'));
  });

  it('gives stop-signal input that parses as JSON with a reason while the run can still stop', () => {
    const live: AgentState[] = ['running', 'sleeping', 'awaiting_approval', 'paused_budget', 'stopping'];
    for (const state of live) {
      const details = renderCurrentDetails({ ...running, state });
      const hint = /send signal `stop` with input `(\{.*\})`/.exec(details);
      assert.ok(hint?.[1] !== undefined, `no stop hint for state ${state}`);
      assert.ok('reason' in (JSON.parse(hint[1]) as object));
    }
  });

  it('leaves out the stop hint once the run is stopped or failed', () => {
    for (const state of ['stopped', 'failed'] as const) {
      const details = renderCurrentDetails({ ...running, state });
      assert.ok(!details.includes('signal `stop`'), `stop hint shown for state ${state}`);
      assert.ok(details.includes(`**State:** ${state}`));
    }
  });
});

describe('scripted model', () => {
  const threeTurns = [{ text: 'first' }, { text: 'second' }, { text: 'third' }];

  it('cycles through the turns by default', () => {
    const spec = scriptedSpec(threeTurns);
    const texts = [0, 1, 2, 3, 4, 5].map((callIndex) => pickScriptedTurn(spec, callIndex).text);
    assert.deepEqual(texts, ['first', 'second', 'third', 'first', 'second', 'third']);
  });

  it('repeats the last turn once exhausted when asked to', () => {
    const spec = scriptedSpec(threeTurns, 'repeat-last');
    const texts = [0, 1, 2, 3, 9].map((callIndex) => pickScriptedTurn(spec, callIndex).text);
    assert.deepEqual(texts, ['first', 'second', 'third', 'third', 'third']);
  });

  it('answers with the turn text, usage and cost, and reports progress', async () => {
    const spec = scriptedSpec([
      { text: 'zero' },
      { text: 'one', usage: { inputTokens: 40, outputTokens: 7 }, costUsd: 0.25 },
    ]);
    let progress = 0;
    const response = await new ScriptedModel().generate(
      modelRequest(spec, { callIndex: 1, onProgress: () => (progress += 1) }),
    );
    assert.deepEqual(response, {
      text: 'one',
      toolCalls: [],
      usage: { inputTokens: 40, outputTokens: 7 },
      costUsd: 0.25,
    });
    assert.equal(progress, 1);
  });

  it('throws a non-retryable ScriptedModelError for a turn scripted to fail', async () => {
    const spec = scriptedSpec([{ text: 'never played', error: 'model exploded' }]);
    for (const attempt of [1, 5]) {
      await assert.rejects(new ScriptedModel().generate(modelRequest(spec, { attempt })), (error) => {
        assert.ok(error instanceof ApplicationFailure);
        assert.equal(error.type, SCRIPTED_MODEL_ERROR);
        assert.equal(error.type, 'ScriptedModelError');
        assert.equal(error.nonRetryable, true);
        assert.equal(error.message, 'model exploded');
        return true;
      });
    }
  });

  it('fails retryably on the first failAttempts attempts and answers afterwards', async () => {
    const spec = scriptedSpec([{ text: 'recovered', error: 'rate limited', failAttempts: 2 }]);
    const model = new ScriptedModel();
    for (const attempt of [1, 2]) {
      await assert.rejects(model.generate(modelRequest(spec, { attempt })), (error) => {
        assert.ok(error instanceof ApplicationFailure);
        assert.equal(error.type, SCRIPTED_MODEL_ERROR);
        assert.equal(error.nonRetryable, false);
        return true;
      });
    }
    const response = await model.generate(modelRequest(spec, { attempt: 3 }));
    assert.equal(response.text, 'recovered');
  });

  it('reports progress while it waits out the scripted delay', async () => {
    const spec = scriptedSpec([{ text: 'slow', delayMs: 20 }]);
    let progress = 0;
    const response = await new ScriptedModel().generate(
      modelRequest(spec, { onProgress: () => (progress += 1) }),
    );
    assert.equal(response.text, 'slow');
    assert.equal(progress, 2, 'one report after the delay slice and one with the answer');
  });

  it('rejects during a long delay as soon as the call is aborted', { timeout: 10_000 }, async () => {
    const spec = scriptedSpec([{ text: 'never', delayMs: 60_000 }]);
    const controller = new AbortController();
    let progress = 0;
    const pending = new ScriptedModel().generate(
      modelRequest(spec, { signal: controller.signal, onProgress: () => (progress += 1) }),
    );
    setImmediate(() => controller.abort());
    await assert.rejects(pending, (error) => {
      assert.ok(error instanceof Error);
      assert.equal(error.name, 'AbortError');
      return true;
    });
    assert.equal(progress, 0);
  });
});

describe('transcript store', () => {
  const user = (content: string): TranscriptMessage => ({ role: 'user', content });
  const assistant = (content: string): TranscriptMessage => ({ role: 'assistant', content });

  async function assertUnavailable(promise: Promise<unknown>): Promise<void> {
    await assert.rejects(promise, (error) => {
      assert.ok(error instanceof ApplicationFailure);
      assert.equal(error.type, TRANSCRIPT_UNAVAILABLE);
      assert.equal(error.nonRetryable, true);
      return true;
    });
  }

  it('extends a transcript given whole without reading the store', async () => {
    const store = new TranscriptStore(path.join(await freshDirectory(), 'never-created'));
    const full: Transcript = { systemPrompt: 'sys', messages: [user('u1'), assistant('a1')] };
    const extended = await store.extend('run-1', 0, 2, [user('u2')], full);
    assert.deepEqual(extended, { systemPrompt: 'sys', messages: [user('u1'), assistant('a1'), user('u2')] });
    assert.equal(full.messages.length, 2, 'the given transcript is not changed');
  });

  it('appends to a transcript saved earlier', async () => {
    const store = new TranscriptStore(path.join(await freshDirectory(), 'nested', 'store'));
    await store.save('run-1', { systemPrompt: 'sys', messages: [user('u1'), assistant('a1')] });
    const extended = await store.extend('run-1', 0, 2, [user('u2')]);
    assert.deepEqual(extended, { systemPrompt: 'sys', messages: [user('u1'), assistant('a1'), user('u2')] });
  });

  it('cuts a stored transcript longer than the base back to the base, as a crashed attempt leaves it', async () => {
    const store = new TranscriptStore(await freshDirectory());
    await store.save('run-1', {
      systemPrompt: 'sys',
      messages: [user('u1'), assistant('a1'), user('u2'), assistant('a2 from a crashed attempt')],
    });
    const extended = await store.extend('run-1', 0, 3, [user('u3')]);
    assert.deepEqual(extended.messages, [user('u1'), assistant('a1'), user('u2'), user('u3')]);
  });

  it('fails with TranscriptUnavailable when the stored transcript is shorter than the base', async () => {
    const store = new TranscriptStore(await freshDirectory());
    await store.save('run-1', { systemPrompt: 'sys', messages: [user('u1')] });
    await assertUnavailable(store.extend('run-1', 0, 3, [user('u3')]));
  });

  it('fails with TranscriptUnavailable when the stored transcript is of another revision, as after a compaction', async () => {
    const store = new TranscriptStore(await freshDirectory());
    await store.save('run-1', { systemPrompt: 'sys', messages: [user('u1'), assistant('a1'), user('u2')] });
    await assertUnavailable(store.extend('run-1', 1, 2, [user('u3')]));
    await store.save('run-1', { revision: 1, systemPrompt: 'sys', messages: [user('summary'), user('u2')] });
    const extended = await store.extend('run-1', 1, 2, [user('u3')]);
    assert.deepEqual(extended.messages, [user('summary'), user('u2'), user('u3')]);
  });

  it('fails with TranscriptUnavailable when the worker has no transcript for the key', async () => {
    const store = new TranscriptStore(await freshDirectory());
    await assertUnavailable(store.extend('unknown-run', 0, 0, [user('u1')]));
  });

  it('fails with TranscriptUnavailable when a transcript given whole is shorter than the base', async () => {
    const store = new TranscriptStore(await freshDirectory());
    await assertUnavailable(store.extend('run-1', 0, 2, [], { systemPrompt: 'sys', messages: [user('u1')] }));
  });

  it('stores a key with odd characters as one safe file inside its directory', async () => {
    const parent = await freshDirectory();
    const directory = path.join(parent, 'store');
    const store = new TranscriptStore(directory);
    const key = 'agent-x/../../evil key:1';
    await store.save(key, { systemPrompt: 'sys', messages: [user('u1')] });
    assert.deepEqual(await readdir(parent), ['store']);
    assert.deepEqual(await readdir(directory), ['agent-x_.._.._evil_key_1.json']);
    const extended = await store.extend(key, 0, 1, [assistant('a1')]);
    assert.deepEqual(extended.messages, [user('u1'), assistant('a1')]);
  });
});

describe('agent run input', () => {
  const minimal: AgentRunInputDraft = {
    name: 'a',
    template: { name: 'test-program', source: 'file', content: '# Program' },
    model: { provider: 'scripted', turns: [{ text: 'hi' }] },
  };

  it('applies the defaults: 2 s interval, empty args, the guards, budgets and policy of the reference', () => {
    const input = agentRunInputSchema.parse(minimal);
    assert.equal(input.intervalS, 2);
    assert.equal(input.args, '');
    assert.deepEqual(input.guards, {
      errorBackoffS: 10,
      sameFailureLimit: 3,
      anyFailureLimit: 4,
      stagnationWindow: 3,
      emptyWindow: 3,
      maxToolCallsPerAnswer: 64,
    });
    assert.deepEqual(input.budgets, {
      sessionTokens: 200_000,
      sessionCostUsd: 2,
      dailyTokens: 2_000_000,
      dailyCostUsd: 20,
    });
    assert.deepEqual(input.permissions, { mode: 'ask', rules: [], timeoutS: 1800, onDeny: 'stop' });
    assert.deepEqual(input.notifications, { console: true, logFile: true });
    assert.equal(input.maxIterations, undefined);
  });

  it('rejects a malformed permission rule and a webhook that is not http(s), saying what is accepted', () => {
    const badRule = agentRunInputSchema.safeParse({
      ...minimal,
      permissions: { rules: [{ action: 'allow', match: 'bash git status' }] },
    });
    assert.ok(!badRule.success);
    assert.match(
      describeZodError(badRule.error),
      /permissions\.rules\.0\.match: must be "tool" or "tool\(pattern\)"/,
    );
    const badWebhook = agentRunInputSchema.safeParse({
      ...minimal,
      notifications: { webhookUrl: 'ftp://x' },
    });
    assert.ok(!badWebhook.success);
    assert.match(describeZodError(badWebhook.error), /notifications\.webhookUrl: must be an http\(s\) URL/);
  });

  it('accepts an interval of 0 for back-to-back iterations', () => {
    assert.equal(agentRunInputSchema.parse({ ...minimal, intervalS: 0 }).intervalS, 0);
    assert.equal(agentRunInputSchema.parse({ ...minimal, intervalS: 0.5 }).intervalS, 0.5);
  });

  it('rejects an interval below 0.5 s with a message naming the minimum', () => {
    const result = agentRunInputSchema.safeParse({ ...minimal, intervalS: 0.3 });
    assert.ok(!result.success);
    const message = describeZodError(result.error);
    assert.ok(message.startsWith('intervalS: '), message);
    assert.ok(message.includes('0.5'), message);
  });

  it('accepts lowercase names of letters, digits, "-" and "_" up to 63 characters', () => {
    for (const name of ['a', 'my-agent_1', '9lives', 'x'.repeat(63)]) {
      assert.ok(agentNameSchema.safeParse(name).success, name);
      assert.ok(agentRunInputSchema.safeParse({ ...minimal, name }).success, name);
    }
  });

  it('rejects uppercase, a leading "-", 64 characters and an empty name', () => {
    for (const name of ['Bad', '-x', '_x', 'x'.repeat(64), '', 'has space', 'dot.name']) {
      assert.ok(!agentNameSchema.safeParse(name).success, JSON.stringify(name));
      assert.ok(!agentRunInputSchema.safeParse({ ...minimal, name }).success, JSON.stringify(name));
    }
  });

  it('rejects an unknown top-level key', () => {
    const result = agentRunInputSchema.safeParse({ ...minimal, intervalSeconds: 5 });
    assert.ok(!result.success);
    assert.ok(describeZodError(result.error).includes('intervalSeconds'));
  });

  it('describes an error as "path: message", nested paths joined with dots', () => {
    const badName = agentRunInputSchema.safeParse({ ...minimal, name: 'Bad' });
    assert.ok(!badName.success);
    assert.equal(
      describeZodError(badName.error),
      'name: must be 1-63 characters of a-z, 0-9, "_" or "-", starting with a letter or digit',
    );
    const emptyTemplate = agentRunInputSchema.safeParse({
      ...minimal,
      template: { ...minimal.template, content: '' },
    });
    assert.ok(!emptyTemplate.success);
    assert.equal(describeZodError(emptyTemplate.error), 'template.content: the template is empty');
  });

  it('joins several problems into one line', () => {
    const result = agentRunInputSchema.safeParse({ ...minimal, name: 'Bad', intervalS: 0.3 });
    assert.ok(!result.success);
    const parts = describeZodError(result.error).split('; ');
    assert.equal(parts.length, 2);
    assert.ok(parts[0]?.startsWith('name: '));
    assert.ok(parts[1]?.startsWith('intervalS: '));
  });
});

describe('templates', () => {
  it('loads an existing file path first, named after the file without .md', async () => {
    const home = await freshDirectory();
    const elsewhere = await freshDirectory();
    const file = path.join(elsewhere, 'demo.md');
    await writeFile(file, '# My own demo');
    await mkdir(path.join(home, 'templates'));
    await writeFile(path.join(home, 'templates', 'demo.md'), '# User demo');
    assert.deepEqual(loadTemplate(file, home), { name: 'demo', source: 'file', content: '# My own demo' });
  });

  it('lets a user template shadow the built-in of the same name', async () => {
    const home = await freshDirectory();
    await mkdir(path.join(home, 'templates'));
    await writeFile(path.join(home, 'templates', 'demo.md'), '# User demo');
    assert.deepEqual(loadTemplate('demo', home), { name: 'demo', source: 'user', content: '# User demo' });
  });

  it('finds every built-in template by name', async () => {
    const home = await freshDirectory();
    for (const name of BUILT_IN_NAMES) {
      const template = loadTemplate(name, home);
      assert.equal(template.name, name);
      assert.equal(template.source, 'built-in');
      assert.equal(template.content, readFileSync(path.join(BUILT_IN_TEMPLATES_DIR, `${name}.md`), 'utf8'));
      assert.ok(template.content.trim().length > 0, `${name} is empty`);
    }
  });

  it('rejects an unknown name with a message listing every available name, the user ones too', async () => {
    const home = await freshDirectory();
    await mkdir(path.join(home, 'templates'));
    await writeFile(path.join(home, 'templates', 'my-own.md'), '# Mine');
    const error = catchAgentsError(() => loadTemplate('no-such-template', home));
    assert.equal(error.code, 'unknown_template');
    assert.ok(error.message.includes("'no-such-template'"), error.message);
    for (const name of [...BUILT_IN_NAMES, 'my-own']) {
      assert.ok(error.message.includes(name), `${name} missing from: ${error.message}`);
    }
  });

  it('lists built-ins then user templates, without looking into subfolders', async () => {
    const home = await freshDirectory();
    await mkdir(path.join(home, 'templates', 'drafts'), { recursive: true });
    await writeFile(path.join(home, 'templates', 'my-own.md'), '# Mine');
    await writeFile(path.join(home, 'templates', 'notes.txt'), 'not a template');
    await writeFile(path.join(home, 'templates', 'drafts', 'nested.md'), '# Nested');
    const listed = listTemplates(home).map(({ name, source }) => `${source}:${name}`);
    assert.deepEqual(listed, [...BUILT_IN_NAMES.map((name) => `built-in:${name}`), 'user:my-own']);
  });

  it('does not resolve a name with a slash inside the template folders', async () => {
    const home = await freshDirectory();
    await mkdir(path.join(home, 'templates', 'drafts'), { recursive: true });
    await writeFile(path.join(home, 'templates', 'drafts', 'nested.md'), '# Nested');
    const error = catchAgentsError(() => loadTemplate('drafts/nested', home));
    assert.equal(error.code, 'unknown_template');
  });
});

describe('--model option', () => {
  async function scriptFile(content: string): Promise<string> {
    const file = path.join(await freshDirectory(), 'script.json');
    await writeFile(file, content);
    return file;
  }

  function assertModelError(value: string, ...mentions: string[]): AgentsError {
    const error = catchAgentsError(() => parseModelOption(value));
    assert.equal(error.code, 'unknown_model');
    assert.ok(!error.message.includes('\n'), `not one line: ${JSON.stringify(error.message)}`);
    for (const mention of mentions) assert.ok(error.message.includes(mention), error.message);
    return error;
  }

  it('plays the demo script for "scripted"', () => {
    assert.deepEqual(parseModelOption('scripted'), {
      provider: 'scripted',
      turns: DEMO_SCRIPT.map((turn) => ({ toolCalls: [], ...turn })),
      whenExhausted: 'cycle',
    });
  });

  it('reads a script file holding an array of turns, with turn defaults applied', async () => {
    const file = await scriptFile(
      JSON.stringify([{ text: 'one' }, { text: 'two', usage: { inputTokens: 5, outputTokens: 2 } }]),
    );
    assert.deepEqual(parseModelOption(`scripted:${file}`), {
      provider: 'scripted',
      turns: [
        { text: 'one', usage: { inputTokens: 0, outputTokens: 0 }, costUsd: 0, delayMs: 0, toolCalls: [] },
        { text: 'two', usage: { inputTokens: 5, outputTokens: 2 }, costUsd: 0, delayMs: 0, toolCalls: [] },
      ],
      whenExhausted: 'cycle',
    });
  });

  it('reads a script file holding turns and whenExhausted', async () => {
    const file = await scriptFile(
      JSON.stringify({ turns: [{ text: 'only' }], whenExhausted: 'repeat-last' }),
    );
    const spec = parseModelOption(`scripted:${file}`);
    assert.ok(spec.provider === 'scripted');
    assert.equal(spec.whenExhausted, 'repeat-last');
    assert.deepEqual(
      spec.turns.map((turn) => turn.text),
      ['only'],
    );
  });

  it('rejects a missing script file with a one-line message naming it', async () => {
    const file = path.join(await freshDirectory(), 'missing.json');
    assertModelError(`scripted:${file}`, file);
  });

  it('rejects a script file that is not JSON with a one-line message naming it', async () => {
    const file = await scriptFile('not json at all');
    assertModelError(`scripted:${file}`, file);
  });

  it('keeps the message on one line when a multi-line script has a JSON syntax error', async () => {
    const file = await scriptFile('[\n  {"text": "a"},\n]\n');
    assertModelError(`scripted:${file}`, file);
  });

  it('rejects a script with no turns, as an array or as an object', async () => {
    for (const content of ['[]', '{"turns": []}']) {
      const file = await scriptFile(content);
      assertModelError(`scripted:${file}`, file, 'at least one turn');
    }
  });

  it('rejects a script whose turn has an unknown field', async () => {
    const file = await scriptFile(JSON.stringify([{ text: 'x', delay: 5 }]));
    assertModelError(`scripted:${file}`, file);
  });

  it('rejects an unknown model, listing the accepted forms', () => {
    const error = assertModelError('gpt-9', "'gpt-9'");
    for (const form of MODEL_OPTION_FORMS) assert.ok(error.message.includes(form), error.message);
  });
});

describe('configuration', () => {
  /** An environment that reads no Temporal config file: its config folders are empty. */
  async function isolatedEnvironment(values: NodeJS.ProcessEnv): Promise<NodeJS.ProcessEnv> {
    const emptyHome = await freshDirectory();
    return {
      HOME: emptyHome,
      XDG_CONFIG_HOME: emptyHome,
      AGENTS_HOME: path.join(emptyHome, 'agents'),
      ...values,
    };
  }

  /** Embedded configurations only compute paths under AGENTS_HOME: nothing is created there. */
  const unusedHome = path.join(os.tmpdir(), 'agents-unit-unused-home');

  function assertInvalidEnvironment(environment: NodeJS.ProcessEnv, variable: string): void {
    const error = catchAgentsError(() => loadConfig(environment));
    assert.equal(error.code, 'invalid_environment');
    assert.ok(error.message.includes(variable), error.message);
  }

  it('uses the embedded server on 127.0.0.1:7233 with the UI on 8233 when no address is set', () => {
    const config = loadConfig({ AGENTS_HOME: 'relative/agents-home' });
    assert.ok(path.isAbsolute(config.home));
    assert.equal(config.home, path.resolve('relative/agents-home'));
    assert.deepEqual(config.temporal, {
      kind: 'embedded',
      address: '127.0.0.1:7233',
      port: 7233,
      uiPort: 8233,
      namespace: 'default',
      binary: undefined,
    });
  });

  it('honours AGENTS_TEMPORAL_PORT and AGENTS_UI_PORT', () => {
    const config = loadConfig({
      AGENTS_HOME: unusedHome,
      AGENTS_TEMPORAL_PORT: '17233',
      AGENTS_UI_PORT: '18233',
    });
    assert.equal(config.temporal.kind, 'embedded');
    assert.equal(config.temporal.address, '127.0.0.1:17233');
    if (config.temporal.kind !== 'embedded') return;
    assert.equal(config.temporal.port, 17233);
    assert.equal(config.temporal.uiPort, 18233);
  });

  it('treats empty variables as unset', () => {
    const config = loadConfig({ AGENTS_HOME: unusedHome, AGENTS_TEMPORAL_PORT: '', TEMPORAL_ADDRESS: '' });
    assert.equal(config.temporal.kind, 'embedded');
    assert.equal(config.temporal.address, '127.0.0.1:7233');
  });

  it('rejects a port that is not a number from 1 to 65535, naming the variable', () => {
    for (const value of ['abc', '70000', '0', '80.5']) {
      assertInvalidEnvironment(
        { AGENTS_HOME: unusedHome, AGENTS_TEMPORAL_PORT: value },
        'AGENTS_TEMPORAL_PORT',
      );
      assertInvalidEnvironment({ AGENTS_HOME: unusedHome, AGENTS_UI_PORT: value }, 'AGENTS_UI_PORT');
    }
  });

  it('rejects a TEMPORAL_ADDRESS without a port', () => {
    assertInvalidEnvironment({ AGENTS_HOME: unusedHome, TEMPORAL_ADDRESS: 'nocolon' }, 'TEMPORAL_ADDRESS');
  });

  it('rejects an AGENTS_UI_URL that is not a URL', () => {
    assertInvalidEnvironment({ AGENTS_HOME: unusedHome, AGENTS_UI_URL: 'not a url' }, 'AGENTS_UI_URL');
  });

  it('connects to an external cluster with its namespace and API key from the environment', async () => {
    const config = loadConfig(
      await isolatedEnvironment({
        TEMPORAL_ADDRESS: 'temporal.example.com:7233',
        TEMPORAL_NAMESPACE: 'prod',
        TEMPORAL_API_KEY: 'k',
      }),
    );
    assert.equal(config.temporal.kind, 'external');
    if (config.temporal.kind !== 'external') return;
    assert.equal(config.temporal.address, 'temporal.example.com:7233');
    assert.equal(config.temporal.namespace, 'prod');
    assert.equal(config.temporal.connectionOptions.address, 'temporal.example.com:7233');
    assert.equal(config.temporal.connectionOptions.apiKey, 'k');
    assert.equal(config.temporal.connectionOptions.tls, true, 'an API key implies TLS');
    assert.equal(config.temporal.uiUrl, undefined);
  });

  it('links to a run in the embedded Web UI', () => {
    const config = loadConfig({ AGENTS_HOME: unusedHome, AGENTS_UI_PORT: '18233' });
    assert.equal(
      webUiRunUrl(config, 'agent-demo', '0195a3c4-run'),
      'http://localhost:18233/namespaces/default/workflows/agent-demo/0195a3c4-run/history',
    );
  });

  it('links to a run in an external Web UI through AGENTS_UI_URL', async () => {
    const config = loadConfig(
      await isolatedEnvironment({
        TEMPORAL_ADDRESS: 'temporal.example.com:7233',
        TEMPORAL_NAMESPACE: 'prod',
        AGENTS_UI_URL: 'https://ui.example.com/',
      }),
    );
    assert.equal(
      webUiRunUrl(config, 'agent-demo', 'run-1'),
      'https://ui.example.com/namespaces/prod/workflows/agent-demo/run-1/history',
    );
  });

  it('gives no link for an external cluster without AGENTS_UI_URL', async () => {
    const config = loadConfig(await isolatedEnvironment({ TEMPORAL_ADDRESS: 'temporal.example.com:7233' }));
    assert.equal(config.temporal.kind, 'external');
    assert.equal(webUiRunUrl(config, 'agent-demo', 'run-1'), undefined);
  });

  it('reads bracketed IPv6 addresses wherever an address is read, and refuses a bare one in one line', async () => {
    const config = loadConfig(
      await isolatedEnvironment({
        TEMPORAL_ADDRESS: '[::1]:7233',
        AGENTS_SANDBOX_URLS: 'http://[::1]:7300,http://[fd12::5]:7300',
        AGENTS_TOOL_SERVER_URL: 'http://[::1]:7400',
      }),
    );
    assert.equal(config.temporal.address, '[::1]:7233');
    assert.deepEqual(config.sandbox.urls, ['http://[::1]:7300', 'http://[fd12::5]:7300']);
    assert.equal(config.toolServer.url, 'http://[::1]:7400');
    assert.deepEqual(parseHostPort('[fe80::1%eth0]:7233'), {
      host: 'fe80::1%eth0',
      port: 7233,
      address: '[fe80::1%eth0]:7233',
    });
    for (const bad of ['::1:7233', '[::1]', 'temporal.example.com', 'host:99999', 'a b:1']) {
      assert.throws(
        () => loadConfig({ TEMPORAL_ADDRESS: bad }),
        (error: Error) =>
          /^Invalid environment: TEMPORAL_ADDRESS: must be host:port, .*\[::1\]:7233/.test(error.message) &&
          !error.message.includes('\n'),
        bad,
      );
    }
  });

  it('waits for an AGENTS_WORKER_CONNECT_TIMEOUT_S of whole seconds, 300 by default', async () => {
    const defaults = loadConfig(await isolatedEnvironment({ TEMPORAL_ADDRESS: '127.0.0.1:7233' }));
    assert.equal(defaults.temporal.kind === 'external' && defaults.temporal.workerConnectTimeoutS, 300);
    const never = loadConfig(
      await isolatedEnvironment({ TEMPORAL_ADDRESS: '127.0.0.1:7233', AGENTS_WORKER_CONNECT_TIMEOUT_S: '0' }),
    );
    assert.equal(never.temporal.kind === 'external' && never.temporal.workerConnectTimeoutS, 0);
    assert.throws(
      () => loadConfig({ TEMPORAL_ADDRESS: '127.0.0.1:7233', AGENTS_WORKER_CONNECT_TIMEOUT_S: '-5' }),
      /AGENTS_WORKER_CONNECT_TIMEOUT_S/,
    );
  });
});

describe('search attributes a namespace does not serve yet', () => {
  const refusal = new Error(
    '3 INVALID_ARGUMENT: Namespace fresh has no mapping defined for search attribute AgentIteration',
  );

  it('retries exactly that refusal, saying once why, until the attempt succeeds', async () => {
    const lines: string[] = [];
    let attempts = 0;
    const result = await retryWhileSearchAttributesNotServed(
      'fresh',
      () => {
        attempts += 1;
        if (attempts < 3) {
          return Promise.reject(Object.assign(new Error('Failed to start Workflow'), { cause: refusal }));
        }
        return Promise.resolve('started');
      },
      (line) => lines.push(line),
    );
    assert.equal(result, 'started');
    assert.equal(attempts, 3);
    assert.equal(lines.length, 1);
    assert.match(
      lines[0]!,
      /^Namespace fresh does not serve the agents' search attributes yet .*retrying for up to 30 s$/,
    );
  });

  it('passes any other failure through at once', async () => {
    let attempts = 0;
    await assert.rejects(
      retryWhileSearchAttributesNotServed(
        'fresh',
        () => {
          attempts += 1;
          return Promise.reject(new Error('3 INVALID_ARGUMENT: WorkflowId is not set'));
        },
        () => assert.fail('no wait for another failure'),
      ),
      /WorkflowId is not set/,
    );
    assert.equal(attempts, 1);
  });

  it('recognises the refusal of a query too', () => {
    assert.ok(
      isSearchAttributeNotServedYet(
        new Error('3 INVALID_ARGUMENT: invalid query: invalid search attribute: AgentName'),
      ),
    );
    assert.ok(!isSearchAttributeNotServedYet(new Error('14 UNAVAILABLE: connection refused')));
  });
});

describe('bounds of what a model turn and a tool batch return', () => {
  const utf8JsonBytes = (value: unknown) => Buffer.byteLength(JSON.stringify(value), 'utf8');
  const TRICKY_TEXTS = [
    '',
    'plain',
    'a"b\\c',
    'line\nbreak\ttab\u0001\u001f',
    'é€',
    '😀 and 🎉',
    '\ud83d lone',
    'x\udc00',
  ];

  it('measures a text and a value as the UTF-8 bytes of their JSON, escapes included', () => {
    for (const text of TRICKY_TEXTS) {
      assert.equal(jsonStringBytes(text), utf8JsonBytes(text), JSON.stringify(text));
      assert.equal(jsonBytes({ text, list: [text, 1] }), utf8JsonBytes({ text, list: [text, 1] }));
    }
  });

  it('cuts a text to fit its bound as JSON, never in the middle of a surrogate pair, ending with how much was cut', () => {
    const text = '😀'.repeat(1000);
    const cut = cutToJsonBytes(text, 300, 'a test keeps at most 300 bytes');
    assert.ok(utf8JsonBytes(cut) <= 300, `${utf8JsonBytes(cut)} bytes`);
    const [kept = '', marker = ''] = cut.split(CUT_MARKER_START);
    assert.ok(/^(?:😀)+$/u.test(kept), 'only whole characters are kept');
    const removed = Number(/^([\d,]+) more characters/.exec(marker)?.[1]?.replace(/,/g, ''));
    assert.equal(kept.length + removed, text.length);
    assert.ok(cut.endsWith('; a test keeps at most 300 bytes]'));
    assert.equal(cutToJsonBytes('short', 300, 'unused'), 'short');
  });

  it('cuts a 5 MB answer text to its bound and takes at most the run’s number of tool calls, counting the rest', () => {
    const calls = Array.from({ length: 2500 }, (_, index) => ({
      id: `call_${index}`,
      tool: 'bash',
      arguments: { command: `echo ${index}` },
    }));
    const answer = boundAnswer(
      {
        text: 'x'.repeat(5_000_000),
        toolCalls: calls,
        usage: { inputTokens: 1, outputTokens: 1 },
        costUsd: 0,
      },
      64,
    );
    assert.ok(jsonStringBytes(answer.text) <= ANSWER_TEXT_MAX_BYTES);
    assert.ok(answer.text.includes(CUT_MARKER_START));
    assert.deepEqual(
      answer.toolCalls.map((call) => call.id),
      calls.slice(0, 64).map((call) => call.id),
    );
    assert.equal(answer.toolCallsNotTaken, 2436);
    assert.ok(jsonBytes(answer) <= MODEL_RESULT_MAX_BYTES);
  });

  it('makes a call with an oversized argument invalid, its argument cut with a marker, so nothing runs on it', () => {
    const [call] = boundAnswer(
      {
        text: '',
        toolCalls: [
          { id: 'a', tool: 'write_file', arguments: { path: 'big.txt', content: 'y'.repeat(5_000_000) } },
        ],
        usage: { inputTokens: 0, outputTokens: 0 },
        costUsd: 0,
      },
      64,
    ).toolCalls;
    assert.equal(call?.arguments.path, 'big.txt');
    const content = String(call?.arguments.content);
    assert.ok(content.startsWith('yyyy') && content.includes(CUT_MARKER_START));
    assert.ok(jsonStringBytes(content) <= TOOL_ARGUMENT_MAX_BYTES);
    assert.equal(
      call?.invalid,
      'Invalid arguments for tool write_file: content (5,000,002 bytes) over the 128 KiB an argument may take; nothing ran. Send it in smaller parts.',
    );
  });

  it('takes no more calls than fit in a model turn’s result, however few there are', () => {
    const big = (index: number) => ({
      id: `call_${index}`,
      tool: 'write_file',
      arguments: { path: `${index}.txt`, content: 'z'.repeat(120 * 1024) },
    });
    const answer = boundAnswer(
      {
        text: 'w'.repeat(200_000),
        toolCalls: [0, 1, 2, 3].map(big),
        usage: { inputTokens: 0, outputTokens: 0 },
        costUsd: 0,
      },
      64,
    );
    assert.ok(jsonBytes(answer) <= MODEL_RESULT_MAX_BYTES, `${jsonBytes(answer)} bytes`);
    assert.equal(answer.toolCalls.length, 2);
    assert.equal(answer.toolCallsNotTaken, 2);
    assert.equal(answer.toolCalls[0]?.invalid, undefined, 'a call that fits is taken whole');
  });

  it('keeps the arguments text a model sent when it is not a JSON object, cut to the argument bound', () => {
    const sent = `{"command": "${'q'.repeat(5_000_000)}`;
    const call = parseToolCallArguments('call_1', 'bash', sent);
    assert.deepEqual(call.arguments, {});
    assert.match(call.invalid ?? '', /^Invalid arguments for tool bash: not valid JSON: \{"command": "q+…$/);
    const kept = call.rawArguments ?? '';
    assert.ok(kept.startsWith('{"command": "qqq'));
    assert.ok(kept.includes(CUT_MARKER_START));
    assert.ok(jsonStringBytes(kept) <= TOOL_ARGUMENT_MAX_BYTES);
    assert.equal(parseToolCallArguments('call_2', 'bash', '[1, 2]').rawArguments, '[1, 2]');
    assert.equal(parseToolCallArguments('call_3', 'bash', '{"command": "ls"}').rawArguments, undefined);
  });

  it('cuts the outputs of a batch to fit together, sharing the room fairly and leaving small results whole', () => {
    const result = (callId: string, output: string, error?: string) => ({
      callId,
      success: error === undefined,
      output,
      ...(error === undefined ? {} : { error }),
      metadata: { exitCode: 0 },
    });
    const results = [
      result('small', 'ok'),
      ...Array.from({ length: 63 }, (_, index) =>
        result(`big-${index}`, 'o'.repeat(100_000), 'e'.repeat(20_000)),
      ),
    ];
    const fitted = fitToolResults(results);
    assert.ok(jsonBytes(fitted) <= TOOL_BATCH_RESULT_MAX_BYTES, `${jsonBytes(fitted)} bytes`);
    assert.deepEqual(fitted[0], results[0]);
    const big = fitted[1]!;
    assert.ok(big.output.startsWith('ooo') && big.output.includes(CUT_MARKER_START));
    assert.ok(big.error?.startsWith('eee') && big.error.includes(CUT_MARKER_START));
    assert.deepEqual(big.metadata, { exitCode: 0 });
    const within = [result('a', 'fine')];
    assert.equal(fitToolResults(within), within, 'a batch within its bound is returned as it is');
  });

  it('tells the model how many calls were not taken and the limits, and nothing when all were', () => {
    assert.equal(notTakenMessage(undefined, 64), undefined);
    assert.equal(notTakenMessage(0, 64), undefined);
    assert.deepEqual(notTakenMessage(2436, 64), {
      role: 'user',
      content:
        '[2,436 more tool calls of your last answer were not taken, and none of them ran: one answer may make at most 64 tool calls, of at most 384 KiB together. Ask again in later answers for those still needed.]',
    });
  });

  it('accepts guards.maxToolCallsPerAnswer from 1 to 256 and refuses anything else, saying what is accepted', () => {
    const withLimit = (maxToolCallsPerAnswer: number) =>
      agentRunInputSchema.safeParse({
        name: 'a',
        template: { name: 't', source: 'file', content: '# T' },
        model: { provider: 'scripted', turns: [{ text: 'hi' }] },
        guards: { maxToolCallsPerAnswer },
      });
    for (const accepted of [1, 256]) assert.equal(withLimit(accepted).success, true);
    for (const refused of [0, 257, 1.5]) {
      const parsed = withLimit(refused);
      if (parsed.success) assert.fail(`${refused} was accepted`);
      assert.equal(
        describeZodError(parsed.error),
        'guards.maxToolCallsPerAnswer: must be a whole number from 1 to 256',
      );
    }
  });

  it('gives a run started before the limit existed the default limit of tool calls per answer', () => {
    const legacy = {
      name: 'old',
      template: { name: 't', source: 'file', content: '# T' },
      model: { provider: 'scripted', turns: [{ text: 'hi' }] },
      guards: { errorBackoffS: 10 },
    } as unknown as Parameters<typeof runSettings>[0];
    assert.equal(runSettings(legacy).guards.maxToolCallsPerAnswer, 64);
  });
});

describe('labels of timers and costs', () => {
  it('reads a wait in its largest whole units', () => {
    assert.deepEqual([400, 45_000, 1_800_000, 630_000, 7_200_000, 5_400_000].map(formatWait), [
      '1s',
      '45s',
      '30m',
      '10m30s',
      '2h',
      '1h30m',
    ]);
  });

  it('names the requests an approval timer waits for, counting those beyond three', () => {
    assert.equal(approvalTimerSummary(['pr_a'], 1_800_000), 'approval pr_a (30m)');
    assert.equal(
      approvalTimerSummary(['pr_a', 'pr_b', 'pr_c', 'pr_d', 'pr_e'], 60_000),
      'approval pr_a, pr_b, pr_c +2 more (1m)',
    );
  });

  it('says why a pause between iterations is longer than the interval', () => {
    const iteration = { text: '', summary: 'x' };
    assert.equal(pauseTimerSummary({ ...iteration, status: 'ok' }), 'interval');
    assert.equal(
      pauseTimerSummary({ ...iteration, status: 'error', failure: { message: 'boom' } }),
      'error backoff',
    );
    assert.equal(
      pauseTimerSummary({
        ...iteration,
        status: 'error',
        failure: { message: 'open', type: 'ModelCircuitOpen', cooldownS: 5 },
      }),
      'circuit cooldown',
    );
  });

  it('rounds the cost of a record to a millionth of a dollar', () => {
    const record = buildIterationRecord({
      iteration: 2,
      startedAtMs: 0,
      endedAtMs: 1000,
      text: 'done',
      status: 'ok',
      tokensIn: 700,
      tokensOut: 100,
      costUsd: 0.00030000000000000003 - 0.0002,
    });
    assert.equal(record.costUsd, 0.0001);
  });
});
