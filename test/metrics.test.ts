import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { createAgentMetrics } from '../activities/metrics';
import { parseExposition, type Sample } from '../bench/dashboard/promql-subset';
import { AgentsClient } from '../client/agents-client';
import type { AgentNotification } from '../common/notification';
import { SandboxServer } from '../sandbox/sandbox-server';
import { runSandboxTool } from '../sandbox/tools';
import { metricsAddressFromEnvironment } from '../worker/metrics';
import { assertOneLineFailure, runCli, startCli } from './helpers/cli';
import { startTestSandbox, TEST_SANDBOX_TOKEN, type AgentsTestEnvironment } from './helpers/environment';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { freePort, startTestTemporal, type TestTemporal } from './helpers/temporal-server';
import { waitFor } from './helpers/wait';

/** The sum of the samples called `name` whose labels include `labels`; 0 when there is none. */
function total(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter(
      (sample) =>
        sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
    )
    .reduce((sum, sample) => sum + sample.value, 0);
}

/** Scrapes `url` as Prometheus would, with a bearer token when given. */
async function scrape(url: string, token?: string): Promise<Sample[]> {
  const response = await request(url, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  const text = await response.body.text();
  assert.equal(response.statusCode, 200, text);
  return parseExposition(text);
}

let temporal: TestTemporal;
let agents: AgentsClient;
let sandbox: NonNullable<AgentsTestEnvironment['sandbox']>;
let worker: ChildProcess | undefined;
let workerMetricsUrl: string;
let sandboxMetricsUrl: string;

before(async () => {
  temporal = await startTestTemporal();
  agents = new AgentsClient(temporal.client);
  sandbox = await startTestSandbox();
  sandboxMetricsUrl = `${sandbox.endpoint.url}/metrics`;
  const port = await freePort();
  workerMetricsUrl = `http://127.0.0.1:${port}/metrics`;
  // A process of its own: a Runtime is installed once per process, with its exporter or without.
  worker = await startCli(
    ['worker'],
    {
      ...temporal.environment,
      AGENTS_SANDBOX_URLS: sandbox.endpoint.url,
      AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
      AGENTS_METRICS: `127.0.0.1:${port}`,
    },
    /Worker polling task queue/,
  );
});

after(async () => {
  if (worker !== undefined && worker.exitCode === null) {
    worker.kill('SIGTERM');
    await once(worker, 'exit');
  }
  await sandbox?.server.close();
  if (sandbox !== undefined) await rm(sandbox.root, { recursive: true, force: true });
  await temporal?.close();
});

describe('Prometheus metrics of a worker and a sandbox server', () => {
  it('counts iterations, tokens, tool calls by outcome and pending approvals, beside the SDK’s own metrics', async () => {
    const before = await scrape(workerMetricsUrl);
    const sandboxBefore = await scrape(sandboxMetricsUrl, TEST_SANDBOX_TOKEN);
    const name = uniqueName('metrics');
    const handle = await agents.start(
      scriptedRun(
        name,
        [
          {
            toolCalls: [
              { tool: 'bash', arguments: { command: 'echo metered' } },
              { tool: 'read_file', arguments: { path: 'no-such-file.txt' } },
            ],
            usage: { inputTokens: 100, outputTokens: 20 },
            costUsd: 0.01,
          },
          {
            toolCalls: [{ tool: 'write_file', arguments: { path: 'out.txt', content: 'x' } }],
            usage: { inputTokens: 150, outputTokens: 30 },
            costUsd: 0.02,
          },
          { text: 'done', usage: { inputTokens: 200, outputTokens: 40 }, costUsd: 0.03 },
        ],
        {
          maxIterations: 1,
          permissions: { mode: 'auto-approve', rules: [{ action: 'ask', match: 'write_file' }] },
        },
      ),
    );
    const waiting = await waitFor('the worker to show one pending approval', async () => {
      const samples = await scrape(workerMetricsUrl);
      return total(samples, 'agents_approvals_pending') === 1 ? samples : undefined;
    });
    assert.equal(
      total(waiting, 'agents_approval_requests_total', { tool: 'write_file' }) -
        total(before, 'agents_approval_requests_total', { tool: 'write_file' }),
      1,
    );
    const [pending] = await agents.pending(name);
    assert.ok(pending, 'the run awaits approval');
    await agents.decide(name, { requestId: pending.request.requestId, approve: true });
    assert.equal((await handle.result()).exitReason, 'max_iterations');

    // The last iteration's notice and the stop's are delivered as the run ends.
    const moved = (samples: Sample[], metric: string, labels: Record<string, string> = {}) =>
      total(samples, metric, labels) - total(before, metric, labels);
    const after = await waitFor('the run’s last notices to be counted', async () => {
      const samples = await scrape(workerMetricsUrl);
      return moved(samples, 'agents_runs_stopped_total', { exit_reason: 'max_iterations' }) === 1
        ? samples
        : undefined;
    });
    assert.equal(total(after, 'agents_approvals_pending'), 0);
    // An iteration that waited for a person is recorded with status `permission`.
    assert.equal(moved(after, 'agents_iterations_total'), 1);
    assert.equal(moved(after, 'agents_iterations_total', { status: 'permission' }), 1);
    assert.equal(moved(after, 'agents_runs_started_total'), 1);
    assert.equal(moved(after, 'agents_model_calls_total', { provider: 'scripted', outcome: 'ok' }), 3);
    assert.equal(moved(after, 'agents_model_tokens_total', { model: 'scripted', type: 'input' }), 450);
    assert.equal(moved(after, 'agents_model_tokens_total', { model: 'scripted', type: 'output' }), 90);
    assert.ok(Math.abs(moved(after, 'agents_model_call_cost_usd_sum') - 0.06) < 1e-9);
    assert.equal(total(after, 'agents_circuit_breaker_open', { provider: 'scripted' }), 0);
    assert.equal(moved(after, 'agents_tool_calls_total', { tool: 'bash', outcome: 'success' }), 1);
    assert.equal(moved(after, 'agents_tool_calls_total', { tool: 'read_file', outcome: 'error' }), 1);
    assert.equal(moved(after, 'agents_tool_calls_total', { tool: 'write_file', outcome: 'success' }), 1);
    assert.equal(moved(after, 'agents_tool_call_duration_seconds_count'), 3);
    assert.equal(moved(after, 'agents_permission_decisions_total', { via: 'signal', approved: 'true' }), 1);
    assert.equal(
      moved(after, 'agents_permission_decisions_total', { via: 'auto-approve', approved: 'true' }),
      2,
    );
    // The SDK's own metrics come out of the same endpoint.
    assert.ok(
      moved(after, 'temporal_workflow_task_execution_latency_count') > 0,
      'the Runtime counts the workflow tasks it ran',
    );
    assert.ok(total(after, 'temporal_activity_execution_latency_count', { activity_type: 'toolBatch' }) >= 2);

    const sandboxAfter = await scrape(sandboxMetricsUrl, TEST_SANDBOX_TOKEN);
    const sandboxMoved = (metric: string, labels: Record<string, string> = {}) =>
      total(sandboxAfter, metric, labels) - total(sandboxBefore, metric, labels);
    assert.equal(total(sandboxAfter, 'agents_sandbox_lanes'), 8);
    assert.equal(total(sandboxAfter, 'agents_sandbox_lanes_in_use'), 0);
    assert.equal(total(sandboxAfter, 'agents_sandbox_queued_calls'), 0);
    assert.equal(sandboxMoved('agents_sandbox_call_duration_seconds_count'), 3);
    assert.equal(sandboxMoved('agents_sandbox_calls_total', { tool: 'read_file', outcome: 'error' }), 1);
    assert.ok(total(sandboxAfter, 'agents_sandbox_workspaces') >= 1);
    assert.ok(total(sandboxAfter, 'agents_sandbox_disk_used_bytes') > 0);
  });

  it('counts a budget pause by the budget that paused the run', async () => {
    const before = await scrape(workerMetricsUrl);
    const name = uniqueName('metrics-pause');
    const handle = await agents.start(
      scriptedRun(name, [{ text: 'costly', usage: { inputTokens: 900, outputTokens: 100 } }], {
        budgets: { sessionTokens: 500 },
      }),
    );
    await waitFor('a budget pause to be counted', async () => {
      const samples = await scrape(workerMetricsUrl);
      const paused = (metrics: Sample[]) =>
        total(metrics, 'agents_budget_pauses_total', { budget: 'sessionTokens' });
      return paused(samples) - paused(before) === 1;
    });
    await agents.stop(name);
    assert.equal((await handle.result()).exitReason, 'stopped');
  });

  it('serves the sandbox server’s metrics only with a bearer token', async () => {
    const response = await request(sandboxMetricsUrl);
    await response.body.dump();
    assert.equal(response.statusCode, 401);
  });

  it('lets a metrics token read the sandbox server’s metrics and nothing else', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'agents-test-metrics-'));
    const server = new SandboxServer({
      root,
      token: TEST_SANDBOX_TOKEN,
      metricsToken: 'scraper-token',
      lanes: 2,
      runTool: runSandboxTool,
    });
    try {
      const url = `http://127.0.0.1:${await server.listen(0)}`;
      const statusOf = async (route: string, token: string) => {
        const response = await request(`${url}${route}`, { headers: { authorization: `Bearer ${token}` } });
        await response.body.dump();
        return response.statusCode;
      };
      assert.equal(total(await scrape(`${url}/metrics`, 'scraper-token'), 'agents_sandbox_lanes'), 2);
      assert.equal(await statusOf('/health', 'scraper-token'), 403);
      assert.equal(await statusOf('/slots', 'scraper-token'), 403);
      assert.equal(await statusOf('/metrics', TEST_SANDBOX_TOKEN), 200);
      assert.equal(await statusOf('/metrics', 'wrong-token'), 403);
    } finally {
      await server.close();
      await rm(root, { recursive: true, force: true });
    }
  });
});

describe('AGENTS_METRICS', () => {
  it('takes host:port and a bracketed IPv6 address, and nothing when unset', () => {
    assert.deepEqual(metricsAddressFromEnvironment({ AGENTS_METRICS: '127.0.0.1:9464' }), {
      address: { host: '127.0.0.1', port: 9464, bindAddress: '127.0.0.1:9464' },
    });
    assert.deepEqual(metricsAddressFromEnvironment({ AGENTS_METRICS: '[::1]:9464' }), {
      address: { host: '::1', port: 9464, bindAddress: '[::1]:9464' },
    });
    assert.deepEqual(metricsAddressFromEnvironment({}), { address: undefined });
    for (const wrong of ['9464', 'localhost', '::1:9464', 'host:0', 'host:70000', 'http://host:9464'])
      assert.ok('problem' in metricsAddressFromEnvironment({ AGENTS_METRICS: wrong }), wrong);
  });

  it('fails a worker with one line naming the variable and what it accepts', async () => {
    const result = await runCli(['worker'], { ...temporal.environment, AGENTS_METRICS: 'localhost' });
    assertOneLineFailure(
      result,
      /AGENTS_METRICS: must be host:port, such as 127\.0\.0\.1:9464.* not 'localhost'/,
    );
  });

  it('counts a notice delivered twice once, and forgets the pending approvals of a stopped run', () => {
    const recorded: string[] = [];
    const meter = {
      createCounter: (name: string) => ({ add: () => recorded.push(name) }),
      createHistogram: () => ({ record: () => {} }),
      createGauge: (name: string) => ({ set: (value: number) => recorded.push(`${name}=${value}`) }),
    };
    const metrics = createAgentMetrics(() => meter as never);
    const notice = {
      id: 'run:1',
      agent: 'a',
      runKey: 'run',
      kind: 'approval_needed',
      text: 'Approval needed',
      at: new Date(0).toISOString(),
      iteration: 1,
      request: { requestId: 'pr_0000000000000001', tool: 'bash' },
    } as unknown as AgentNotification;
    metrics.notice(notice);
    metrics.notice(notice);
    assert.deepEqual(recorded, ['agents_approval_requests_total', 'agents_approvals_pending=1']);
    metrics.notice({ ...notice, id: 'run:2', kind: 'stopped', text: 'Stopped after 1 iterations (stopped)' });
    assert.deepEqual(recorded.slice(2), ['agents_runs_stopped_total', 'agents_approvals_pending=0']);
  });
});
