import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AgentNotification } from '../common/notification';
import { useAgentsEnvironment } from './helpers/environment';
import { scheduledInputs, scheduledModelTurns } from './helpers/history';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';

const env = useAgentsEnvironment();

/** A chat webhook that answers every POST with `status`, keeping what it received. */
class RecordingWebhook {
  readonly received: Array<{ text: string; kind: string; iteration: number }> = [];
  private readonly server: Server;
  url = '';

  constructor(private readonly status: number) {
    this.server = createServer((request: IncomingMessage, response) => {
      let body = '';
      request.on('data', (chunk: Buffer) => (body += chunk.toString()));
      request.on('end', () => {
        this.received.push(JSON.parse(body) as { text: string; kind: string; iteration: number });
        response.writeHead(this.status).end();
      });
    });
  }

  async listen(): Promise<void> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    const address = this.server.address();
    if (address === null || typeof address === 'string') throw new Error('no address');
    this.url = `http://127.0.0.1:${address.port}/hooks/secret-token`;
  }

  async close(): Promise<void> {
    this.server.close();
    await once(this.server, 'close');
  }
}

describe("a run's notices", () => {
  const working = new RecordingWebhook(200);
  const failing = new RecordingWebhook(500);
  before(async () => {
    await working.listen();
    await failing.listen();
  });
  after(async () => {
    await working.close();
    await failing.close();
  });

  it('posts start, each iteration and the end to the webhook, and writes one log.jsonl line per iteration', async () => {
    const name = uniqueName('notices');
    const handle = await env.agents.start(
      scriptedRun(name, [{ text: 'First step.' }, { text: 'Second step.' }], {
        maxIterations: 2,
        notifications: { webhookUrl: working.url },
      }),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');

    const received = await waitFor('the end notice at the webhook', () =>
      working.received.some((notice) => notice.kind === 'stopped') ? working.received : undefined,
    );
    assert.deepEqual(
      received.map((notice) => notice.kind),
      ['started', 'iteration', 'iteration', 'stopped'],
    );
    assert.match(received[1]?.text ?? '', new RegExp(`^${name}: Iteration 1 done \\(.*\\): First step\\.$`));
    assert.match(received[3]?.text ?? '', /Stopped after 2 iterations \(max_iterations\)/);

    const log = await readFile(path.join(env.temporal.home, 'logs', name, 'log.jsonl'), 'utf8');
    const lines = log
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { iteration: number; summary: string; status: string });
    assert.deepEqual(
      lines.map((line) => [line.iteration, line.status, line.summary]),
      [
        [1, 'ok', 'First step.'],
        [2, 'ok', 'Second step.'],
      ],
    );
  });

  it('delivers each iteration notice with the next model turn, in order and once, when iterations run back to back', async () => {
    const name = uniqueName('notices-with-turns');
    const texts = ['One.', 'Two.', 'Three.', 'Four.'];
    const handle = await env.agents.start(
      scriptedRun(
        name,
        texts.map((text) => ({ text })),
        {
          maxIterations: texts.length,
          intervalS: 0,
          notifications: { webhookUrl: working.url, logFile: true },
        },
      ),
    );
    assert.equal((await handle.result()).exitReason, 'max_iterations');

    // The notices of iterations 1–3 rode with the turns of iterations 2–4: no notify activity of their own.
    const notified = await scheduledInputs<AgentNotification>(handle, 'notify');
    const carried = (await scheduledModelTurns(handle)).flatMap((turn) => turn.input.notices ?? []);
    assert.deepEqual(
      carried.map((notice) => [notice.kind, notice.iteration]),
      [
        ['iteration', 1],
        ['iteration', 2],
        ['iteration', 3],
      ],
    );
    assert.deepEqual(
      notified.map((notice) => [notice.kind, notice.iteration]),
      [
        ['started', 0],
        ['iteration', 4],
        ['stopped', 4],
      ],
    );
    const received = await waitFor('the end notice at the webhook', () => {
      const ours = working.received.filter((notice) => notice.text.startsWith(`${name}:`));
      return ours.some((notice) => notice.kind === 'stopped') ? ours : undefined;
    });
    assert.deepEqual(
      received.map((notice) => [notice.kind, notice.iteration]),
      [
        ['started', 0],
        ['iteration', 1],
        ['iteration', 2],
        ['iteration', 3],
        ['iteration', 4],
        ['stopped', 4],
      ],
    );
    const log = await readFile(path.join(env.temporal.home, 'logs', name, 'log.jsonl'), 'utf8');
    const lines = log
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { iteration: number; summary: string });
    assert.deepEqual(
      lines.map((line) => [line.iteration, line.summary]),
      texts.map((text, index) => [index + 1, text]),
    );
  });

  it('completes a run whose webhook keeps failing, the failures left to the worker log', async () => {
    const name = uniqueName('failing-webhook');
    const handle = await env.agents.start(
      scriptedRun(name, [{ text: 'Step.' }], {
        maxIterations: 3,
        notifications: { webhookUrl: failing.url },
      }),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.equal(result.iterations, 3);
    await waitFor('the webhook to be tried', () => failing.received.length > 0);
  });
});
