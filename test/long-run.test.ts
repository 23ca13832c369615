import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { workflowIdFor } from '../client/agents-client';
import { auditEntries } from '../client/audit/audit-entries';
import { useAgentsEnvironment } from './helpers/environment';
import { scriptedRun, uniqueName } from './helpers/run-input';

// Temporal's own defaults: continue-as-new suggested at 4 MB or 4,096 events, a warning at 10 MB.
const env = useAgentsEnvironment({ withSandbox: true });

/** Temporal warns about a history past this size; no execution of a run may come near it. */
const HISTORY_SIZE_WARNING_BYTES = 10 * 1024 * 1024;

const ITERATIONS = 300;
const OUTPUT_BYTES = 20_000;

describe('a long run with large tool outputs', () => {
  it(`runs ${ITERATIONS} iterations with ${OUTPUT_BYTES / 1000} KB of tool output each, keeps every history under 10 MB, and exports every call`, async (context) => {
    const name = uniqueName('long-tools');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'Printed the block.',
            toolCalls: [
              { tool: 'bash', arguments: { command: `head -c ${OUTPUT_BYTES} /dev/zero | tr '\\0' x` } },
            ],
          },
          { text: 'Read the block.' },
        ],
        { maxIterations: ITERATIONS, contextBudgetTokens: 32_000 },
      ),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.equal(result.iterations, ITERATIONS);

    const executions = [];
    for await (const execution of env.temporal.client.workflow.list({
      query: `WorkflowId = '${workflowIdFor(name)}'`,
    })) {
      executions.push(execution);
    }
    assert.ok(executions.length >= 2, `the run continued as new (${executions.length} executions)`);
    context.diagnostic(
      `${executions.length} executions, history sizes ${executions.map((execution) => `${((execution.historySize ?? 0) / 1e6).toFixed(2)} MB / ${execution.historyLength} events`).join(', ')}`,
    );
    for (const execution of executions) {
      assert.ok(
        (execution.historySize ?? 0) < HISTORY_SIZE_WARNING_BYTES,
        `execution ${execution.runId} has ${execution.historySize} bytes of history`,
      );
    }

    let calls = 0;
    let fullResults = 0;
    let compactedTurns = 0;
    for await (const entry of auditEntries(env.temporal.client, workflowIdFor(name))) {
      if (entry.kind === 'tool_call') calls += 1;
      if (entry.kind === 'tool_result' && JSON.stringify(entry).includes('x'.repeat(OUTPUT_BYTES))) {
        fullResults += 1;
      }
      if (entry.kind === 'conversation_sent' && JSON.stringify(entry).includes('compacted to stay within')) {
        compactedTurns += 1;
      }
    }
    assert.equal(calls, ITERATIONS, 'every tool call is in the export');
    assert.equal(fullResults, ITERATIONS, 'every result is in the export, in full');
    assert.ok(compactedTurns > 0, 'the conversation was compacted to its context budget');
  });
});
