import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { loadWorkflowBundle } from '../worker/workflow-bundle';
import { quietRuntime } from './helpers/temporal-server';

const FIXTURES = path.join(__dirname, 'fixtures', 'histories');

/**
 * Histories recorded from earlier versions of `agentRun` (record more with
 * `AGENTS_RECORD_HISTORIES=test/fixtures/histories node --import tsx --test test/<file>.test.ts` for
 * agent-run, permissions, budgets or guards).
 * Replaying them against today's workflow code catches a change that would break runs already in
 * flight: the runs users leave going for days.
 */
describe('recorded agentRun histories', () => {
  it('replay against the current workflow code without a determinism error', async () => {
    quietRuntime();
    const files = (await readdir(FIXTURES)).filter((file) => file.endsWith('.json')).sort();
    assert.ok(files.length >= 8, `expected recorded histories in ${FIXTURES}`);
    const histories = await Promise.all(
      files.map(async (file) => ({
        workflowId: path.basename(file, '.json'),
        // Recorded with JSON.stringify of the fetched history: protobufjs's own object form.
        history: temporal.api.history.v1.History.fromObject(
          JSON.parse(await readFile(path.join(FIXTURES, file), 'utf8')) as Record<string, unknown>,
        ),
      })),
    );
    const bundle = await loadWorkflowBundle(path.join(os.tmpdir(), 'agents-replay-cache'));
    const replayed: string[] = [];
    for await (const result of Worker.runReplayHistories({ workflowBundle: bundle }, histories)) {
      assert.equal(result.error, undefined, `${result.workflowId}: ${String(result.error)}`);
      replayed.push(result.workflowId);
    }
    assert.deepEqual(replayed.sort(), files.map((file) => path.basename(file, '.json')).sort());
  });
});
