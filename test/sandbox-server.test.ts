import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { SandboxServer } from '../sandbox/sandbox-server';
import type { ToolResult } from '../sandbox/tool-call';
import { runSandboxTool } from '../sandbox/tools';
import { uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';

const TOKEN = 'test-token-0123456789';
let root: string;
let server: SandboxServer;
let baseUrl: string;

async function startServer(): Promise<void> {
  server = new SandboxServer({ root, token: TOKEN, lanes: 4, runTool: runSandboxTool });
  baseUrl = `http://127.0.0.1:${await server.listen(0)}`;
}

async function send(method: 'GET' | 'POST', route: string, body?: unknown, token: string | null = TOKEN) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  return request(`${baseUrl}${route}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
}

async function call(method: 'GET' | 'POST', route: string, body?: unknown, token: string | null = TOKEN) {
  const response = await send(method, route, body, token);
  return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
}

function bash(trajectoryId: string, callId: string, command: string) {
  return { callId, trajectoryId, tool: 'bash', arguments: { command }, timeoutS: 30 };
}

/** Sends a batch and returns its results in the order of the calls (they stream in completion order). */
async function batch(...calls: Array<{ callId: string }>): Promise<ToolResult[]> {
  const response = await send('POST', '/batch', { calls });
  const text = await response.body.text();
  assert.equal(response.statusCode, 200, text);
  assert.equal(response.headers['content-type'], 'application/x-ndjson');
  const results = text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as ToolResult);
  return calls.map(({ callId }) => results.find((result) => result.callId === callId)!);
}

describe('the sandbox server', () => {
  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'agents-sandbox-'));
    await startServer();
  });

  after(async () => {
    await server.close();
    await rm(root, { recursive: true, force: true });
  });

  it('refuses a request without a token with 401 and a wrong token with 403', async () => {
    const missing = await call('GET', '/health', undefined, null);
    assert.equal(missing.status, 401);
    assert.deepEqual(missing.body, { error: 'Missing bearer token' });
    const wrong = await call('GET', '/health', undefined, 'guess');
    assert.equal(wrong.status, 403);
    assert.deepEqual(wrong.body, { error: 'Invalid bearer token' });
  });

  it('answers bad JSON and invalid bodies with 400 and a one-line message, never a stack', async () => {
    const badJson = await call('POST', '/batch', '{"calls": [');
    assert.equal(badJson.status, 400);
    assert.match(String(badJson.body.error), /^Invalid JSON: /);
    const invalid = await call('POST', '/batch', { calls: [{ trajectoryId: 'x', tool: 'bash' }] });
    assert.equal(invalid.status, 400);
    assert.match(String(invalid.body.error), /^Invalid request: calls\.0\.callId/);
    const unknown = await call('GET', '/nowhere');
    assert.equal(unknown.status, 404);
    for (const response of [badJson, invalid, unknown])
      assert.doesNotMatch(JSON.stringify(response.body), /\n\s+at /);
  });

  it('keeps one workspace per trajectory across calls, separate from the others', async () => {
    const first = uniqueName('trajectory');
    const second = uniqueName('trajectory');
    const [written, other] = await batch(
      bash(first, `${first}-1`, 'echo kept > note.txt && pwd'),
      bash(second, `${second}-1`, 'ls'),
    );
    assert.equal(written?.success, true, written?.error);
    assert.equal(written?.output.trim(), '/workspace');
    assert.equal(other?.output.trim(), '');
    const [read] = await batch(bash(first, `${first}-2`, 'cat note.txt'));
    assert.equal(read?.output.trim(), 'kept');
  });

  it('runs the calls of one trajectory in the order of the batch', async () => {
    const trajectory = uniqueName('order');
    const calls = [0, 1, 2, 3, 4].map((index) =>
      bash(trajectory, `${trajectory}-${index}`, `echo ${index} >> order`),
    );
    await batch(...calls);
    const [read] = await batch(bash(trajectory, `${trajectory}-read`, 'cat order'));
    assert.equal(read?.output, '0\n1\n2\n3\n4\n');
  });

  it('runs a repeated callId once and answers the repeat with the stored result', async () => {
    const trajectory = uniqueName('once');
    const append = bash(trajectory, `${trajectory}-append`, 'echo x >> log && wc -l < log');
    const [first] = await batch(append);
    const [again] = await batch(append);
    assert.deepEqual(again, first);
    // Two copies in flight at once join one execution.
    const slow = bash(trajectory, `${trajectory}-slow`, 'sleep 1; echo y >> log');
    const [joinedA, joinedB] = await Promise.all([batch(slow), batch(slow)]);
    assert.deepEqual(joinedA, joinedB);
    const [count] = await batch(bash(trajectory, `${trajectory}-count`, 'cat log'));
    assert.equal(count?.output, 'x\ny\n');
  });

  it('remembers the results of a trajectory across a server restart', async () => {
    const trajectory = uniqueName('restart');
    const append = bash(trajectory, `${trajectory}-append`, 'echo once >> log');
    await batch(append);
    await server.close();
    await startServer();
    const [repeated] = await batch(append);
    assert.equal(repeated?.success, true);
    const log = await readFile(path.join(root, 'trajectories', trajectory, 'workspace', 'log'), 'utf8');
    assert.equal(log, 'once\n');
  });

  it('lets a call under way finish when stopped with a grace, refuses new calls meanwhile, and never reruns it', async () => {
    const trajectory = uniqueName('drain');
    const slow = bash(trajectory, `${trajectory}-slow`, 'sleep 1; echo drained >> log');
    const running = batch(slow);
    await waitFor('the call to be under way', () => server.requestsInFlight > 0);
    const stopping = server.close({ graceMs: 10_000 });
    const refused = await send('POST', '/batch', {
      calls: [bash(trajectory, `${trajectory}-late`, 'true')],
    }).then(
      async (response) => ({ status: response.statusCode, text: await response.body.text() }),
      (error: unknown) => ({ status: 0, text: String(error) }),
    );
    // A new request finds the server draining (503) or already not listening (connection refused).
    assert.ok(refused.status === 503 || refused.text.includes('ECONNREFUSED'), JSON.stringify(refused));
    const [result] = await running;
    await stopping;
    assert.equal(result?.success, true, JSON.stringify(result));

    await startServer();
    const [repeated] = await batch(slow);
    assert.deepEqual(repeated, result, 'the retry is answered from the stored result');
    const log = await readFile(path.join(root, 'trajectories', trajectory, 'workspace', 'log'), 'utf8');
    assert.equal(log, 'drained\n');
  });

  it('resets a released trajectory when asked, and reports its lanes in health', async () => {
    const trajectory = uniqueName('release');
    await batch(bash(trajectory, `${trajectory}-1`, 'echo a > file'));
    const released = await call('POST', '/release', { trajectoryId: trajectory, reset: true });
    assert.deepEqual(released.body, { released: trajectory, reset: true });
    const [listing] = await batch(bash(trajectory, `${trajectory}-2`, 'ls'));
    assert.equal(listing?.output.trim(), '');
    const health = await call('GET', '/health');
    assert.equal(health.body.status, 'ok');
    assert.equal(health.body.lanes, 4);
    assert.equal(health.body.executing, 0);
  });

  it('serves the artifacts of a workspace: list, read, archive, and 404 for an unknown trajectory', async () => {
    const trajectory = uniqueName('artifacts');
    await batch(
      bash(
        trajectory,
        `${trajectory}-1`,
        'mkdir -p out && echo result > out/a.txt && ln -s /etc/passwd out/link',
      ),
    );
    const query = (extra: string) => `trajectoryId=${trajectory}&${extra}`;

    const listing = await call('GET', `/artifacts/list?${query('path=out')}`);
    assert.equal(listing.status, 200);
    assert.deepEqual(
      (listing.body.entries as Array<{ path: string; type: string }>).map((entry) => [
        entry.path,
        entry.type,
      ]),
      [
        ['out/a.txt', 'file'],
        ['out/link', 'symlink'],
      ],
    );
    const read = await call('GET', `/artifacts/read?${query('path=out/a.txt&sha256=true')}`);
    assert.equal(read.body.content, 'result\n');
    assert.equal(read.body.mime, 'text/plain');
    assert.equal(typeof read.body.sha256, 'string');

    const escape = await call('GET', `/artifacts/read?${query('path=out/link')}`);
    assert.deepEqual([escape.status, escape.body.error], [403, 'Access denied: path outside workspace']);
    const missing = await call('GET', `/artifacts/read?${query('path=nothing.txt')}`);
    assert.equal(missing.status, 404);

    const archive = await send('GET', `/artifacts/archive?${query('path=out')}`);
    assert.equal(archive.statusCode, 200);
    assert.equal(archive.headers['content-type'], 'application/gzip');
    const gzip = Buffer.from(await archive.body.arrayBuffer());
    assert.deepEqual([...gzip.subarray(0, 2)], [0x1f, 0x8b]);

    const unknown = await call('GET', '/artifacts/list?trajectoryId=never-seen');
    assert.deepEqual([unknown.status, unknown.body.error], [404, 'No active slot for trajectory never-seen']);
  });

  it('survives a fork bomb, a memory hog, an output flood and an endless loop, and keeps serving', async () => {
    const trajectory = uniqueName('attacks');
    const attack = (label: string, command: string, timeoutS: number) => ({
      ...bash(trajectory, `${trajectory}-${label}`, command),
      timeoutS,
    });
    const results = await batch(
      attack('fork-bomb', ':(){ :|:& };:', 5),
      attack('memory', 'head -c 3000000000 /dev/zero | tail > /dev/null', 20),
      attack('flood', 'yes', 20),
      attack('loop', 'while :; do :; done', 2),
    );
    // The bomb's first shell returns at once; its children die with the sandbox's pid namespace.
    assert.equal(results[0]?.callId, `${trajectory}-fork-bomb`);
    for (const result of results.slice(1)) assert.equal(result?.success, false, JSON.stringify(result));
    assert.equal(results[3]?.error, 'Command timed out after 2s');
    assert.ok((results[2]?.output.length ?? 0) < 60_000, 'the flood was cut short');
    const health = await call('GET', '/health');
    assert.deepEqual([health.status, health.body.executing], [200, 0]);
    const [after] = await batch(bash(trajectory, `${trajectory}-after`, 'echo still here'));
    assert.equal(after?.output.trim(), 'still here');
  });
});
