import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { HistoryAndWorkflowId } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import { loadWorkflowBundle } from '../../worker/workflow-bundle';
import type { TestTemporal } from './temporal-server';

/**
 * Fetches the history of each workflow and replays it against today's workflow code, failing on
 * the first determinism error: the proof that runs in flight survive a worker picking them up.
 * With `AGENTS_RECORD_HISTORIES=<folder>` the histories are also written there, named for the
 * workflow ID without its random suffix, as fixtures `test/replay.test.ts` replays from then on.
 */
export async function assertReplays(
  temporal: Pick<TestTemporal, 'client' | 'home'>,
  workflowIds: string[],
): Promise<HistoryAndWorkflowId[]> {
  const histories = await Promise.all(
    workflowIds.map(async (workflowId) => ({
      workflowId,
      history: await temporal.client.workflow.getHandle(workflowId).fetchHistory(),
    })),
  );
  const recordTo = process.env.AGENTS_RECORD_HISTORIES;
  if (recordTo !== undefined && recordTo !== '') {
    await mkdir(recordTo, { recursive: true });
    for (const { workflowId, history } of histories) {
      const file = path.join(recordTo, `${workflowId.replace(/-[0-9a-f]{8}$/, '')}.json`);
      await writeFile(file, JSON.stringify(history));
    }
  }
  const bundle = await loadWorkflowBundle(path.join(temporal.home, 'cache'));
  let replayed = 0;
  for await (const result of Worker.runReplayHistories({ workflowBundle: bundle }, histories)) {
    assert.equal(result.error, undefined, `${result.workflowId}: ${String(result.error)}`);
    replayed += 1;
  }
  assert.equal(replayed, histories.length);
  return histories;
}
