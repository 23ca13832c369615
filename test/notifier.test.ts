import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Notifier, type NotifierOptions } from '../activities/notifier';
import type { AgentNotification, NotificationKind } from '../common/notification';
import { uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';

/** A request as the test webhook received it. */
interface ReceivedRequest {
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
  receivedAt: number;
}

/** Answers one request; `undefined` means never, until the webhook is closed. */
type Answer = { status: number; headers?: Record<string, string> } | undefined;

/** A real HTTP server on 127.0.0.1 that answers the n-th request (from 0) as `answer(n)` says. */
async function startWebhook(answer: (index: number) => Answer) {
  const requests: ReceivedRequest[] = [];
  const held: http.ServerResponse[] = [];
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const index = requests.length;
      requests.push({
        url: request.url ?? '',
        headers: request.headers,
        body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>,
        receivedAt: performance.now(),
      });
      const reply = answer(index);
      if (reply === undefined) held.push(response);
      else response.writeHead(reply.status, reply.headers).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    origin: `http://127.0.0.1:${port}`,
    requests,
    held,
    async close() {
      for (const response of held) response.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

let root: string;

/** A fresh `$AGENTS_HOME` below the file's temporary folder. */
async function newHome(): Promise<string> {
  const home = path.join(root, uniqueName('home'));
  await mkdir(home);
  return home;
}

let sequence = 0;

/** An iteration notice with its record; anything else can be overridden. */
function notice(agent: string, overrides: Partial<AgentNotification> = {}): AgentNotification {
  sequence += 1;
  const iteration = overrides.iteration ?? sequence;
  return {
    id: `agent-${agent}:run-1:${sequence}`,
    agent,
    runKey: `agent-${agent}:run-1`,
    kind: 'iteration',
    text: `Iteration ${iteration} done`,
    at: '2025-01-02T03:04:05.000Z',
    iteration,
    record: {
      iteration,
      timestamp: '2025-01-02T03:04:05.000Z',
      startedAt: '2025-01-02T03:04:00.000Z',
      summary: 'Did one small step.',
      status: 'ok',
      durationS: 5,
      tokensIn: 120,
      tokensOut: 30,
      costUsd: 0.001,
    },
    sinks: { console: false, logFile: true },
    ...overrides,
  };
}

/** A notifier whose log lines are collected, with small webhook limits unless told otherwise. */
function newNotifier(home: string, webhook: NotifierOptions['webhook'] = {}) {
  const lines: Array<{ level: 'info' | 'warn'; message: string; fields?: Record<string, unknown> }> = [];
  const notifier = new Notifier({
    home,
    log: (level, message, fields) => lines.push({ level, message, ...(fields ? { fields } : {}) }),
    webhook: { attempts: 3, timeoutMs: 2_000, backoffMs: 1, ...webhook },
  });
  const warnings = () => lines.filter((line) => line.level === 'warn');
  return { notifier, lines, warnings };
}

async function readLogLines(home: string, agent: string): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(path.join(home, 'logs', agent, 'log.jsonl'), 'utf8');
  assert.ok(text.endsWith('\n'), 'the file ends with a complete line');
  return text
    .trimEnd()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

describe('the notifier', () => {
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'agents-notifier-'));
  });

  after(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('writes one log.jsonl line per iteration even when the same notice is delivered twice', async () => {
    const home = await newHome();
    const agent = uniqueName('log');
    const first = notice(agent);
    const second = notice(agent);
    const { notifier, warnings } = newNotifier(home);
    try {
      await notifier.deliver(first);
      await notifier.deliver(first);
      await Promise.all([notifier.deliver(second), notifier.deliver(second), notifier.deliver(first)]);
    } finally {
      await notifier.close();
    }
    // A worker started after a crash retries the activity with the same notice.
    const restarted = newNotifier(home);
    try {
      await restarted.notifier.deliver(second);
    } finally {
      await restarted.notifier.close();
    }

    const lines = await readLogLines(home, agent);
    assert.deepEqual(
      lines.map((line) => line.id),
      [first.id, second.id],
    );
    assert.deepEqual(Object.keys(lines[0]!).slice(0, 3), ['id', 'agent', 'runKey']);
    assert.deepEqual(lines[0], { id: first.id, agent, runKey: first.runKey, ...first.record });
    assert.deepEqual([...warnings(), ...restarted.warnings()], []);
  });

  it('writes nothing to log.jsonl for other kinds', async () => {
    const home = await newHome();
    const agent = uniqueName('kinds');
    const { notifier, warnings } = newNotifier(home);
    try {
      for (const kind of ['started', 'warning', 'paused', 'stopped'] satisfies NotificationKind[]) {
        await notifier.deliver(notice(agent, { kind, record: undefined }));
      }
      // The sink off: an iteration is not written either.
      await notifier.deliver(notice(agent, { sinks: { console: false, logFile: false } }));
    } finally {
      await notifier.close();
    }
    await assert.rejects(stat(path.join(home, 'logs', agent, 'log.jsonl')), { code: 'ENOENT' });
    assert.deepEqual(warnings(), []);
  });

  it('prints one console line per notice', async () => {
    const home = await newHome();
    const agent = uniqueName('console');
    const { notifier, lines } = newNotifier(home);
    try {
      await notifier.deliver(
        notice(agent, {
          iteration: 3,
          kind: 'warning',
          text: 'Budget at 80 %\nof the session tokens',
          record: undefined,
          sinks: { console: true, logFile: false },
        }),
      );
    } finally {
      await notifier.close();
    }
    assert.deepEqual(
      lines.map((line) => [line.level, line.message]),
      [['info', `[${agent}] iteration 3: Budget at 80 % of the session tokens`]],
    );
  });

  it('posts a text field to the webhook', async () => {
    const webhook = await startWebhook(() => ({ status: 200 }));
    const agent = uniqueName('post');
    const { notifier } = newNotifier(await newHome());
    try {
      const sent = notice(agent, { sinks: { console: false, logFile: false, webhookUrl: webhook.url } });
      await notifier.deliver(sent);
      await waitFor('the webhook delivered', () => notifier.stats().delivered === 1, 5_000);

      assert.equal(webhook.requests.length, 1);
      const [received] = webhook.requests;
      assert.equal(received!.headers['content-type'], 'application/json');
      assert.deepEqual(received!.body, {
        text: `${agent}: ${sent.text}`,
        agent,
        kind: 'iteration',
        iteration: sent.iteration,
        at: sent.at,
        id: sent.id,
      });
      assert.deepEqual(notifier.stats(), { delivered: 1, failed: 0, dropped: 0, pending: 0 });
    } finally {
      await notifier.close();
      await webhook.close();
    }
  });

  it('retries a webhook that answers 500 then succeeds', async () => {
    const webhook = await startWebhook((index) => ({ status: index === 0 ? 500 : 204 }));
    const { notifier, warnings } = newNotifier(await newHome());
    try {
      const sent = notice(uniqueName('retry'), {
        sinks: { console: false, logFile: false, webhookUrl: webhook.url },
      });
      await notifier.deliver(sent);
      await waitFor('the webhook delivered', () => notifier.stats().delivered === 1, 5_000);

      assert.deepEqual(
        webhook.requests.map((request) => request.body.id),
        [sent.id, sent.id],
      );
      assert.equal(notifier.stats().failed, 0);
      assert.deepEqual(warnings(), []);
    } finally {
      await notifier.close();
      await webhook.close();
    }
  });

  it('honours Retry-After on 429', async () => {
    const webhook = await startWebhook((index) =>
      index === 0 ? { status: 429, headers: { 'retry-after': '1' } } : { status: 200 },
    );
    // Without the header the retry would wait a minute, past the deadline below.
    const { notifier } = newNotifier(await newHome(), { backoffMs: 60_000 });
    try {
      await notifier.deliver(
        notice(uniqueName('later'), { sinks: { console: false, logFile: false, webhookUrl: webhook.url } }),
      );
      await waitFor('the webhook delivered', () => notifier.stats().delivered === 1, 10_000);

      assert.equal(webhook.requests.length, 2);
      const [first, second] = webhook.requests;
      // Timers never fire early: the retry came no sooner than the server asked.
      assert.ok(second!.receivedAt - first!.receivedAt >= 950, 'the retry waited for Retry-After');
    } finally {
      await notifier.close();
      await webhook.close();
    }
  });

  it('does not retry a 400', async () => {
    const webhook = await startWebhook(() => ({ status: 400 }));
    const { notifier, warnings } = newNotifier(await newHome());
    try {
      await notifier.deliver(
        notice(uniqueName('bad'), { sinks: { console: false, logFile: false, webhookUrl: webhook.url } }),
      );
      await waitFor('the delivery given up', () => notifier.stats().failed === 1, 5_000);

      assert.equal(webhook.requests.length, 1);
      assert.deepEqual(notifier.stats(), { delivered: 0, failed: 1, dropped: 0, pending: 0 });
      assert.equal(warnings().length, 1);
      assert.match(warnings()[0]!.message, /after 1 attempt: HTTP 400$/);
    } finally {
      await notifier.close();
      await webhook.close();
    }
  });

  it("gives up after the attempts and logs a warning without the URL's secret path/query", async () => {
    const webhook = await startWebhook(() => ({ status: 503 }));
    const secretUrl = `${webhook.origin}/services/T000SECRETPATH/B000?token=SECRETQUERY`;
    const { notifier, lines, warnings } = newNotifier(await newHome());
    try {
      await notifier.deliver(
        notice(uniqueName('down'), { sinks: { console: true, logFile: false, webhookUrl: secretUrl } }),
      );
      await waitFor('the delivery given up', () => notifier.stats().failed === 1, 5_000);

      assert.equal(webhook.requests.length, 3);
      assert.equal(webhook.requests[0]!.url, '/services/T000SECRETPATH/B000?token=SECRETQUERY');
      assert.equal(warnings().length, 1);
      const [warning] = warnings();
      assert.match(warning!.message, /after 3 attempts: HTTP 503$/);
      assert.ok(warning!.message.includes(webhook.origin), 'the warning names the origin');
      assert.doesNotMatch(JSON.stringify(lines), /SECRET/);
    } finally {
      await notifier.close();
      await webhook.close();
    }
  });

  it('a webhook that never answers does not slow deliver (deliver resolves at once; the attempt times out)', async () => {
    const webhook = await startWebhook(() => undefined);
    const home = await newHome();
    const { notifier, warnings } = newNotifier(home, { attempts: 1, timeoutMs: 300 });
    try {
      const agent = uniqueName('silent');
      await notifier.deliver(
        notice(agent, { sinks: { console: false, logFile: true, webhookUrl: webhook.url } }),
      );
      // deliver has resolved, its log line written, while the webhook's attempt is still under way.
      assert.deepEqual(notifier.stats(), { delivered: 0, failed: 0, dropped: 0, pending: 1 });
      assert.equal((await readLogLines(home, agent)).length, 1);

      await waitFor('the attempt timed out', () => notifier.stats().failed === 1, 5_000);
      assert.equal(webhook.requests.length, 1);
      assert.equal(webhook.held.length, 1);
      assert.equal(webhook.held[0]!.headersSent, false, 'the server never answered');
      assert.match(warnings()[0]!.message, /after 1 attempt: no answer within 0\.3s$/);
    } finally {
      await notifier.close();
      await webhook.close();
    }
  });

  it('a failing log folder does not stop the webhook', async () => {
    const webhook = await startWebhook(() => ({ status: 200 }));
    // A file where the home folder should be: no folder can be made below it.
    const home = path.join(root, uniqueName('not-a-folder'));
    await writeFile(home, 'a file');
    const { notifier, warnings } = newNotifier(home);
    try {
      const agent = uniqueName('disk');
      await notifier.deliver(
        notice(agent, { sinks: { console: false, logFile: true, webhookUrl: webhook.url } }),
      );
      await waitFor('the webhook delivered', () => notifier.stats().delivered === 1, 5_000);

      assert.equal(warnings().length, 1);
      assert.match(warnings()[0]!.message, new RegExp(`of ${agent} not written to the log file: .*ENOTDIR`));
    } finally {
      await notifier.close();
      await webhook.close();
    }
  });

  it('drops the oldest when more than maxPending are waiting', async () => {
    let answering = false;
    const webhook = await startWebhook(() => (answering ? { status: 200 } : undefined));
    const { notifier, warnings } = newNotifier(await newHome(), { maxPending: 2, timeoutMs: 10_000 });
    try {
      const agent = uniqueName('flood');
      const sent = Array.from({ length: 5 }, () =>
        notice(agent, { sinks: { console: false, logFile: false, webhookUrl: webhook.url } }),
      );
      for (const notification of sent) await notifier.deliver(notification);
      // The first is being sent, one at a time per URL; of the four behind it, the two oldest go.
      assert.deepEqual(notifier.stats(), { delivered: 0, failed: 0, dropped: 2, pending: 3 });
      assert.equal(warnings().length, 2);

      await waitFor('the first notice held by the webhook', () => webhook.held.length === 1, 5_000);
      answering = true;
      webhook.held[0]!.writeHead(200).end('{}');
      await waitFor('the rest delivered', () => notifier.stats().delivered === 3, 5_000);

      assert.deepEqual(
        webhook.requests.map((request) => request.body.id),
        [sent[0]!.id, sent[3]!.id, sent[4]!.id],
      );
      assert.deepEqual(notifier.stats(), { delivered: 3, failed: 0, dropped: 2, pending: 0 });
    } finally {
      await notifier.close();
      await webhook.close();
    }
  });
});
