import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { Browser } from 'playwright-core';
import type { ToolResult } from '../sandbox/tool-call';
import { findChromium, launchChromium, RunPage, writeSideBySide } from './helpers/browser';
import { useAgentsEnvironment } from './helpers/environment';
import { completedActivitiesOfType } from './helpers/history';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';

// One dev server (with its Web UI) and one sandbox server for this file, a fresh worker for each test.
const env = useAgentsEnvironment({ withSandbox: true });

const chromiumPath = findChromium();
/** Appended to every test name here, so a run without Chromium says why these tests did not run. */
const skipped = chromiumPath === undefined ? ' (skipped: chromium is not installed)' : '';

/** Where the approval test writes, for the README, the run's current details beside the filled-in form. */
const screenshotPath = process.env.AGENTS_SCREENSHOT;

/** The signal JSON the current details tell a person to paste: `{"requestId": "pr_…", "approve": true}`. */
const APPROVAL_JSON = /\{\s*"requestId":\s*"pr_[0-9a-f]{16}",\s*"approve":\s*true\s*\}/;

let browser: Browser | undefined;

before(async () => {
  if (chromiumPath !== undefined) browser = await launchChromium(chromiumPath);
});

after(async () => {
  await browser?.close();
});

/** The file's browser; the tests that call this are skipped when there is none. */
function chromium(): Browser {
  if (browser === undefined) throw new Error('Chromium was not launched');
  return browser;
}

/** Opens the run's page in the Web UI of this file's dev server. */
async function openRunPage(handle: { workflowId: string; firstExecutionRunId: string }): Promise<RunPage> {
  const { uiPort, namespace } = env.temporal.config.temporal;
  return RunPage.open(chromium(), {
    uiPort,
    namespace,
    workflowId: handle.workflowId,
    runId: handle.firstExecutionRunId,
  });
}

/** The run's signals as the history recorded them: name and decoded input. */
async function signalsInHistory(handle: WorkflowHandle) {
  const history = await handle.fetchHistory();
  return (history.events ?? []).flatMap((event) => {
    const attributes = event.workflowExecutionSignaledEventAttributes;
    const payload = attributes?.input?.payloads?.[0];
    if (attributes === null || attributes === undefined || payload === undefined) return [];
    return [
      {
        signalName: attributes.signalName,
        input: defaultPayloadConverter.fromPayload<unknown>(payload),
      },
    ];
  });
}

/** Every tool result the run's tool batches returned, decoded from the history. */
async function toolResultsInHistory(handle: WorkflowHandle): Promise<ToolResult[]> {
  const events = (await handle.fetchHistory()).events ?? [];
  return completedActivitiesOfType(events, 'toolBatch').flatMap((event) => {
    const payload = event.activityTaskCompletedEventAttributes?.result?.payloads?.[0];
    return payload === undefined ? [] : defaultPayloadConverter.fromPayload<ToolResult[]>(payload);
  });
}

describe('the Temporal Web UI of the dev server, in headless Chromium', () => {
  it(
    `approves a pending tool call with the permission signal sent from the Web UI's form, and the run carries on${skipped}`,
    { skip: chromiumPath === undefined },
    async () => {
      const name = uniqueName('web-ui-approval');
      const handle = await env.agents.start(
        scriptedRun(
          name,
          [
            {
              text: 'Checking.',
              toolCalls: [{ tool: 'bash', arguments: { command: 'echo approved-by-ui' } }],
            },
            { text: 'Done.' },
          ],
          { maxIterations: 1, permissions: { mode: 'ask' } },
        ),
      );
      const status = await waitFor(`agent ${name} to await approval`, async () => {
        const current = await env.agents.status(name);
        return current.state === 'awaiting_approval' && current.pendingPermissions.length === 1
          ? current
          : undefined;
      });
      const [pending] = status.pendingPermissions;
      assert.equal(pending?.tool, 'bash');
      assert.deepEqual(pending?.input, { command: 'echo approved-by-ui' });

      const page = await openRunPage(handle);
      try {
        // The signal input comes from the page, as a person would copy it, not from the query.
        const details = await page.currentDetailsMatching(APPROVAL_JSON);
        const signalInput = APPROVAL_JSON.exec(details)?.[0] ?? '';
        assert.deepEqual(JSON.parse(signalInput), { requestId: pending?.requestId, approve: true });

        const detailsPicture = screenshotPath === undefined ? undefined : await page.currentDetailsPicture();
        await page.fillSignalForm('permission', signalInput);
        if (screenshotPath !== undefined && detailsPicture !== undefined) {
          await mkdir(path.dirname(screenshotPath), { recursive: true });
          await writeSideBySide(chromium(), [detailsPicture, await page.signalFormPicture()], screenshotPath);
        }
        await page.submitSignalForm();

        const result = await waitFor('the approved run to finish', () => handle.result());
        assert.equal(result.exitReason, 'max_iterations');
        await page.waitForStatus('Completed');
      } finally {
        await page.close();
      }

      const records = await env.agents.iterations(name);
      assert.deepEqual(
        records.map(({ iteration, status: recordStatus, summary }) => ({
          iteration,
          status: recordStatus,
          summary,
        })),
        [{ iteration: 1, status: 'permission', summary: 'Checking.\nDone.' }],
      );
      const [toolResult] = await toolResultsInHistory(handle);
      assert.equal(toolResult?.success, true, toolResult?.error);
      assert.equal(toolResult?.output, 'approved-by-ui\n');
      const signals = await signalsInHistory(handle);
      assert.deepEqual(signals, [
        { signalName: 'permission', input: { requestId: pending?.requestId, approve: true } },
      ]);
    },
  );

  it(
    `stops a sleeping run with the stop signal sent from the Web UI's form${skipped}`,
    { skip: chromiumPath === undefined },
    async () => {
      const name = uniqueName('web-ui-stop');
      const handle = await env.agents.start(scriptedRun(name, [{ text: 'One step.' }], { intervalS: 3600 }));
      await waitFor(
        `agent ${name} to sleep`,
        async () => (await env.agents.status(name)).state === 'sleeping',
      );

      const page = await openRunPage(handle);
      try {
        await page.currentDetailsMatching(/State: sleeping/);
        await page.fillSignalForm('stop', '{"reason": "from the web ui"}');
        await page.submitSignalForm();
        // The interval is an hour: only the signal from the page ends the run within the deadline.
        const result = await waitFor('the stopped run to finish', () => handle.result());
        assert.equal(result.exitReason, 'stopped');
        await page.waitForStatus('Completed');
      } finally {
        await page.close();
      }

      assert.equal((await env.agents.status(name)).stopReason, 'from the web ui');
      const signals = await signalsInHistory(handle);
      assert.deepEqual(signals, [{ signalName: 'stop', input: { reason: 'from the web ui' } }]);
    },
  );
});
