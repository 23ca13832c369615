import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { z } from 'zod';
import { ToolServerClient } from '../activities/tool-server-client';
import { loadConfig } from '../client/config';
import { AgentsError } from '../client/errors';
import { toolServerCommand } from '../client/commands/tool-server';
import { FETCH_URL_ALLOW_CIDRS_VARIABLE, fetchUrl } from '../sandbox/examples/fetch-url';
import { defineTool, loadToolModule, ToolDefinitionError } from '../sandbox/external-tool';
import type { ToolResult } from '../sandbox/tool-call';
import { ToolServer, type ToolDescription } from '../sandbox/tool-server';
import { uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';

const TOKEN = 'tool-server-test-token-0123456789';
const REPOSITORY = path.resolve(__dirname, '..');

/** What the tools saw of their AbortSignal: the tool's name (and the reason's name) per abort. */
const abortedTools: string[] = [];

const echo = defineTool({
  name: 'echo',
  description: 'Repeats a text.',
  input: z.object({ text: z.string(), times: z.number().int().min(1).default(1) }),
  execute: ({ text, times }) =>
    Promise.resolve({ output: text.repeat(times), metadata: { length: text.length * times } }),
});

const fail = defineTool({
  name: 'fail',
  description: 'Always throws.',
  input: z.object({}),
  execute: () => Promise.reject(new Error('disk on fire')),
});

/** Never settles, not even when aborted: the worst a tool can do. */
const hang = defineTool({
  name: 'hang',
  description: 'Never answers.',
  input: z.object({}),
  execute: (_input, { signal }) =>
    new Promise<string>(() => {
      signal.addEventListener('abort', () => abortedTools.push(`hang: ${(signal.reason as Error).name}`));
    }),
});

/** Ends only when aborted, as a well-behaved long tool does. */
const waitForAbort = defineTool({
  name: 'wait_for_abort',
  description: 'Waits until it is aborted.',
  input: z.object({}),
  execute: (_input, { signal }) =>
    new Promise<string>((_resolve, reject) => {
      signal.addEventListener('abort', () => {
        abortedTools.push('wait_for_abort');
        reject(new Error('aborted'));
      });
    }),
});

async function listen(server: Server): Promise<string> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  server.close();
  await once(server, 'close');
}

async function call(
  baseUrl: string,
  method: 'GET' | 'POST',
  route: string,
  body?: unknown,
  token: string | null = TOKEN,
) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const response = await request(`${baseUrl}${route}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: response.statusCode, body: (await response.body.json()) as Record<string, unknown> };
}

async function execute(baseUrl: string, tool: string, args: Record<string, unknown>, timeoutS?: number) {
  const answer = await call(baseUrl, 'POST', '/execute', {
    callId: uniqueName('call'),
    tool,
    arguments: args,
    ...(timeoutS === undefined ? {} : { timeoutS }),
  });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body as unknown as ToolResult;
}

function assertNoStack(value: unknown): void {
  assert.doesNotMatch(JSON.stringify(value), /\\n\s+at |\n\s+at /);
}

describe('the tool server', () => {
  let server: ToolServer;
  let baseUrl: string;

  before(async () => {
    server = new ToolServer({ token: TOKEN, tools: [echo, fail, hang, waitForAbort, fetchUrl] });
    baseUrl = `http://127.0.0.1:${await server.listen(0)}`;
  });

  after(() => server.close());

  it('refuses a request without a token with 401 and a wrong token with 403', async () => {
    const missing = await call(baseUrl, 'GET', '/health', undefined, null);
    assert.equal(missing.status, 401);
    assert.deepEqual(missing.body, { error: 'Missing bearer token' });
    const wrong = await call(baseUrl, 'POST', '/execute', { callId: 'c', tool: 'echo' }, 'guess');
    assert.equal(wrong.status, 403);
    assert.deepEqual(wrong.body, { error: 'Invalid bearer token' });
  });

  it('answers bad JSON and invalid bodies with 400 and a one-line message, never a stack', async () => {
    const badJson = await call(baseUrl, 'POST', '/execute', '{"callId": ');
    assert.equal(badJson.status, 400);
    assert.match(String(badJson.body.error), /^Invalid JSON: [^\n]+$/);
    const invalid = await call(baseUrl, 'POST', '/execute', { tool: 'echo', timeout: 5 });
    assert.equal(invalid.status, 400);
    assert.match(String(invalid.body.error), /^Invalid request: callId: .*Unrecognized key: "timeout"/);
    const unknownRoute = await call(baseUrl, 'GET', '/nowhere');
    assert.equal(unknownRoute.status, 404);
    for (const answer of [badJson, invalid, unknownRoute]) assertNoStack(answer.body);
  });

  it('lists its tools with their descriptions and the JSON Schema of their arguments', async () => {
    const listing = await request(`${baseUrl}/tools`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const tools = (await listing.body.json()) as ToolDescription[];
    assert.deepEqual(
      tools.map((tool) => tool.name),
      ['echo', 'fail', 'hang', 'wait_for_abort', 'fetch_url'],
    );
    const echoTool = tools[0]!;
    assert.equal(echoTool.description, 'Repeats a text.');
    assert.deepEqual(echoTool.inputSchema.properties, {
      text: { type: 'string' },
      times: { type: 'integer', minimum: 1, default: 1, maximum: Number.MAX_SAFE_INTEGER },
    });
    // A field with a default is optional to the model.
    assert.deepEqual(echoTool.inputSchema.required, ['text']);
    assert.equal(echoTool.inputSchema.type, 'object');
  });

  it('runs a tool and returns its output and metadata', async () => {
    const result = await execute(baseUrl, 'echo', { text: 'ab', times: 3 });
    assert.equal(result.success, true, result.error);
    assert.equal(result.output, 'ababab');
    assert.deepEqual(result.metadata, { length: 6 });
    const health = await call(baseUrl, 'GET', '/health');
    assert.equal(health.body.status, 'ok');
    assert.equal(health.body.tools, 5);
    assert.equal(health.body.concurrency, 16);
  });

  it('answers invalid arguments, an unknown tool and a throwing tool with success false', async () => {
    const invalid = await execute(baseUrl, 'echo', { times: 0 });
    assert.equal(invalid.success, false);
    assert.match(invalid.error ?? '', /^Invalid arguments for tool echo: text: .*; times: /);
    const unknown = await execute(baseUrl, 'nope', {});
    assert.deepEqual(
      { success: unknown.success, error: unknown.error },
      { success: false, error: 'Unknown tool: nope' },
    );
    const thrown = await execute(baseUrl, 'fail', {});
    assert.deepEqual(
      { success: thrown.success, error: thrown.error },
      { success: false, error: 'disk on fire' },
    );
    for (const result of [invalid, unknown, thrown]) assertNoStack(result);
  });

  it('cuts off a tool that never answers at its timeout, aborts its signal, and stays healthy', async () => {
    const result = await execute(baseUrl, 'hang', {}, 0.2);
    // Clamped to the 1 s minimum.
    assert.equal(result.success, false);
    assert.equal(result.error, 'Tool hang timed out after 1s');
    assert.deepEqual(result.metadata, { timedOut: true, timeoutS: 1 });
    assert.ok(abortedTools.includes('hang: TimeoutError'), abortedTools.join(', '));
    const health = await call(baseUrl, 'GET', '/health');
    // The lane is free again; the tool that ignores its signal is counted, not waited for.
    assert.equal(health.body.executing, 0);
    assert.equal(health.body.abandoned, 1);
    const later = await execute(baseUrl, 'echo', { text: 'still here' });
    assert.equal(later.output, 'still here');
  });
});

describe('the tool server under load', () => {
  it('runs at most `concurrency` tools at once and queues the rest', async () => {
    let running = 0;
    let maxRunning = 0;
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    const gated = defineTool({
      name: 'gated',
      description: 'Waits for the gate.',
      input: z.object({ index: z.number() }),
      async execute({ index }) {
        running += 1;
        maxRunning = Math.max(maxRunning, running);
        await gate;
        running -= 1;
        return `done ${index}`;
      },
    });
    const server = new ToolServer({ token: TOKEN, tools: [gated], concurrency: 2 });
    const baseUrl = `http://127.0.0.1:${await server.listen(0)}`;
    try {
      const calls = [0, 1, 2, 3, 4].map((index) => execute(baseUrl, 'gated', { index }));
      await waitFor('two executions', () => running === 2, 10_000);
      const health = await call(baseUrl, 'GET', '/health');
      assert.equal(health.body.executing, 2);
      assert.equal(health.body.concurrency, 2);
      open();
      const results = await Promise.all(calls);
      assert.deepEqual(
        results.map((result) => result.output),
        ['done 0', 'done 1', 'done 2', 'done 3', 'done 4'],
      );
      assert.equal(maxRunning, 2);
    } finally {
      open();
      await server.close();
    }
  });
});

describe('tool modules', () => {
  let folder: string;
  const zod = JSON.stringify(require.resolve('zod'));

  before(async () => {
    folder = await mkdtemp(path.join(os.tmpdir(), 'agents-tool-modules-'));
  });

  after(() => rm(folder, { recursive: true, force: true }));

  async function writeModule(name: string, source: string): Promise<string> {
    const file = path.join(folder, name);
    await writeFile(file, source);
    return file;
  }

  function toolSource(name: string, input = 'z.object({ text: z.string() })'): string {
    return `{ name: ${JSON.stringify(name)}, description: 'A tool.', input: ${input}, execute: async ({ text }) => text }`;
  }

  it('loads the tools of a TypeScript default export and of a JavaScript `tools` export', async () => {
    const typescript = await writeModule(
      'default-export.ts',
      `import { z } from ${zod};\nconst input = z.object({ text: z.string() });\nexport default [{ name: 'shout', description: 'Shouts.', input, execute: async ({ text }: z.infer<typeof input>) => text.toUpperCase() }];\n`,
    );
    const [shout] = loadToolModule(typescript);
    assert.equal(shout?.name, 'shout');
    assert.equal(await shout?.execute({ text: 'hi' }, { signal: new AbortController().signal }), 'HI');
    const javascript = await writeModule(
      'named-export.js',
      `const { z } = require(${zod});\nexports.tools = [${toolSource('first')}, ${toolSource('second')}];\n`,
    );
    assert.deepEqual(
      loadToolModule(javascript).map((tool) => tool.name),
      ['first', 'second'],
    );
  });

  it('rejects a bad module with one line naming the module and the problem', async () => {
    const header = `const { z } = require(${zod});\n`;
    const cases: Array<[string, string, RegExp]> = [
      ['missing.js', '', /does not load: Cannot find module/],
      ['syntax.ts', 'export default [{ name: ', /does not load: /],
      ['throws.js', `throw new Error('no config\\nsecond line');`, /does not load: no config$/],
      ['no-tools.js', 'exports.helpers = [];', /exports no tools: export an array of tools/],
      ['empty.js', 'module.exports = [];', /the exported tools must not be empty/],
      [
        'bad-name.js',
        `${header}module.exports = [${toolSource('Fetch-URL')}];`,
        /tool 0 \(Fetch-URL\): name: must match/,
      ],
      [
        'built-in.js',
        `${header}module.exports = [${toolSource('bash')}];`,
        /tool 0 \(bash\): name: must not be a built-in tool \(bash, read_file/,
      ],
      [
        'duplicate.js',
        `${header}module.exports = [${toolSource('twice')}, ${toolSource('twice')}];`,
        /tool name twice is used twice/,
      ],
      [
        'not-zod.js',
        `module.exports = [{ name: 'plain', description: 'x', input: { type: 'object' }, execute: async () => '' }];`,
        /tool 0 \(plain\): input: must be a zod schema/,
      ],
      [
        'not-object.js',
        `${header}module.exports = [${toolSource('scalar', 'z.string()')}];`,
        /tool scalar: input must be a z\.object/,
      ],
      [
        'no-json-schema.js',
        `${header}module.exports = [${toolSource('dated', 'z.object({ at: z.date() })')}];`,
        /tool dated: its input cannot be expressed as JSON Schema/,
      ],
      [
        'no-execute.js',
        `${header}module.exports = [{ name: 'idle', description: 'x', input: z.object({}) }];`,
        /tool 0 \(idle\): execute: must be a function/,
      ],
    ];
    for (const [name, source, pattern] of cases) {
      const file = name === 'missing.js' ? path.join(folder, name) : await writeModule(name, source);
      assert.throws(
        () => loadToolModule(file),
        (error: unknown) => {
          assert.ok(error instanceof ToolDefinitionError, `${name}: ${String(error)}`);
          assert.equal(error.message.includes('\n'), false, `${name}: ${error.message}`);
          assert.ok(error.message.startsWith(`Tool module ${file}`), `${name}: ${error.message}`);
          assert.match(error.message, pattern, name);
          return true;
        },
      );
    }
  });
});

describe('the fetch_url example', () => {
  let site: Server;
  let siteUrl: string;
  let server: ToolServer;
  let baseUrl: string;
  /** A second loopback server, outside the ranges the tests let through: it must never be reached. */
  let forbidden: Server;
  let forbiddenUrl: string;
  let forbiddenConnections = 0;
  let siteConnections = 0;

  before(async () => {
    // The test sites are on loopback, which the tool refuses unless the range is listed.
    process.env[FETCH_URL_ALLOW_CIDRS_VARIABLE] = '127.0.0.1/32';
    forbidden = createServer((_incoming, response) => response.end('secret'));
    forbidden.on('connection', () => {
      forbiddenConnections += 1;
    });
    forbidden.listen(0, '127.0.0.2');
    await once(forbidden, 'listening');
    forbiddenUrl = `http://127.0.0.2:${(forbidden.address() as AddressInfo).port}`;
    site = createServer((incoming, response) => {
      switch (incoming.url) {
        case '/to-other-loopback':
          response.writeHead(302, { location: `${forbiddenUrl}/secret` });
          response.end();
          return;
        case '/to-metadata':
          response.writeHead(301, { location: 'http://169.254.169.254/latest/meta-data/' });
          response.end();
          return;
        case '/loop':
          response.writeHead(307, { location: '/loop' });
          response.end();
          return;
        case '/hello':
          response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
          response.end('hello from the test site');
          return;
        case '/accents':
          response.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
          response.end('é'.repeat(10));
          return;
        case '/image':
          response.writeHead(200, { 'content-type': 'image/png', 'content-length': '4' });
          response.end(Buffer.from([0x89, 0x50, 0x4e, 0x47]));
          return;
        case '/moved':
          response.writeHead(302, { location: '/hello' });
          response.end();
          return;
        default:
          response.writeHead(404, { 'content-type': 'text/plain' });
          response.end('not here');
      }
    });
    site.on('connection', () => {
      siteConnections += 1;
    });
    siteUrl = await listen(site);
    server = new ToolServer({ token: TOKEN, tools: [fetchUrl] });
    baseUrl = `http://127.0.0.1:${await server.listen(0)}`;
  });

  after(async () => {
    delete process.env[FETCH_URL_ALLOW_CIDRS_VARIABLE];
    await server.close();
    await closeServer(site);
    await closeServer(forbidden);
  });

  it('returns the status, the content type and the body text', async () => {
    const result = await execute(baseUrl, 'fetch_url', { url: `${siteUrl}/hello` });
    assert.equal(result.success, true, result.error);
    assert.equal(
      result.output,
      'HTTP 200\ncontent-type: text/plain; charset=utf-8\n\nhello from the test site',
    );
    assert.deepEqual(result.metadata, {
      status: 200,
      contentType: 'text/plain; charset=utf-8',
      bytes: 24,
      truncated: false,
    });
    const missing = await execute(baseUrl, 'fetch_url', { url: `${siteUrl}/nothing` });
    assert.match(missing.output, /^HTTP 404\n/);
  });

  it('follows a redirect itself and says where it ended', async () => {
    const moved = await execute(baseUrl, 'fetch_url', { url: `${siteUrl}/moved` });
    assert.equal(moved.success, true, moved.error);
    assert.equal(
      moved.output,
      `HTTP 200\ncontent-type: text/plain; charset=utf-8\nurl: ${siteUrl}/hello\n\nhello from the test site`,
    );
    assert.equal(moved.metadata.url, `${siteUrl}/hello`);
  });

  it('refuses a redirect to a loopback address outside the allowed range without connecting to it', async () => {
    const result = await execute(baseUrl, 'fetch_url', { url: `${siteUrl}/to-other-loopback` });
    assert.equal(result.success, false);
    assert.match(
      String(result.error),
      /^Refused: 127\.0\.0\.2:\d+ is a loopback address \(after 1 redirect from http:\/\/127\.0\.0\.1:\d+\/to-other-loopback\)$/,
    );
    assert.equal(forbiddenConnections, 0);
    const metadata = await execute(baseUrl, 'fetch_url', { url: `${siteUrl}/to-metadata` });
    assert.equal(metadata.success, false);
    assert.match(
      String(metadata.error),
      /^Refused: 169\.254\.169\.254 is the cloud metadata address \(after 1 redirect/,
    );
    const health = await call(baseUrl, 'GET', '/health');
    assert.equal(health.status, 200);
  });

  it('stops after 5 redirects', async () => {
    const result = await execute(baseUrl, 'fetch_url', { url: `${siteUrl}/loop` });
    assert.equal(result.success, false);
    assert.equal(result.error, `Too many redirects: more than 5 from ${siteUrl}/loop`);
  });

  it('refuses loopback however it is written when no range is allowed', async () => {
    const allowed = process.env[FETCH_URL_ALLOW_CIDRS_VARIABLE];
    delete process.env[FETCH_URL_ALLOW_CIDRS_VARIABLE];
    try {
      const port = new URL(siteUrl).port;
      const connectionsBefore = siteConnections;
      for (const host of ['localhost', '127.1', '[::1]', '0x7f000001', '127.0.0.1', '[::ffff:127.0.0.1]']) {
        const result = await execute(baseUrl, 'fetch_url', { url: `http://${host}:${port}/hello` });
        assert.equal(result.success, false, `${host}: ${result.output}`);
        assert.match(String(result.error), /^Refused: .* a loopback address/, host);
      }
      assert.equal(siteConnections, connectionsBefore);
    } finally {
      process.env[FETCH_URL_ALLOW_CIDRS_VARIABLE] = allowed;
    }
  });

  it('describes its address checks to the model', async () => {
    const listing = await request(`${baseUrl}/tools`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const tools = (await listing.body.json()) as ToolDescription[];
    const description = tools.find((tool) => tool.name === 'fetch_url')?.description ?? '';
    assert.match(description, /Refuses loopback, private, link-local and cloud metadata addresses/);
    assert.match(description, /again at every redirect/);
  });

  it('truncates the body at maxBytes without splitting a character, and describes binary bodies', async () => {
    const cut = await execute(baseUrl, 'fetch_url', { url: `${siteUrl}/accents`, maxBytes: 5 });
    assert.equal(cut.success, true, cut.error);
    assert.match(cut.output, /\n\néé\n… \(output truncated\)$/);
    assert.equal(cut.metadata.truncated, true);
    const image = await execute(baseUrl, 'fetch_url', { url: `${siteUrl}/image` });
    assert.equal(image.output, 'HTTP 200\ncontent-type: image/png\n\n(binary body of 4 bytes, not shown)');
  });

  it('refuses a URL that is not http(s)', async () => {
    const result = await execute(baseUrl, 'fetch_url', { url: 'file:///etc/passwd' });
    assert.equal(result.success, false);
    assert.equal(
      result.error,
      'Invalid arguments for tool fetch_url: url: must be an http:// or https:// URL',
    );
  });
});

describe('the tool server client', () => {
  let server: ToolServer;
  let baseUrl: string;
  let client: ToolServerClient;

  before(async () => {
    server = new ToolServer({ token: TOKEN, tools: [echo, waitForAbort] });
    baseUrl = `http://127.0.0.1:${await server.listen(0)}`;
    client = new ToolServerClient({ url: baseUrl, token: TOKEN });
  });

  after(async () => {
    await client.close();
    await server.close();
  });

  it('lists the tools and runs a call', async () => {
    const tools = await client.listTools();
    assert.deepEqual(
      tools.map((tool) => tool.name),
      ['echo', 'wait_for_abort'],
    );
    const result = await client.execute({ callId: 'round-trip', tool: 'echo', arguments: { text: 'hi' } });
    assert.deepEqual(result, { callId: 'round-trip', success: true, output: 'hi', metadata: { length: 2 } });
  });

  it('turns HTTP and network failures into failed results', async () => {
    const wrongToken = new ToolServerClient({ url: baseUrl, token: 'guess' });
    try {
      const refused = await wrongToken.execute({ callId: 'c1', tool: 'echo', arguments: { text: 'x' } });
      assert.equal(refused.success, false);
      assert.match(
        refused.error ?? '',
        /^External tool server failed: http:\/\/127\.0\.0\.1:\d+ answered HTTP 403: Invalid bearer token$/,
      );
      await assert.rejects(wrongToken.listTools(), /HTTP 403: Invalid bearer token/);
    } finally {
      await wrongToken.close();
    }
  });

  it('gives up on a server that never answers at the call timeout plus slack', async () => {
    // A raw server that takes requests and never answers them.
    const silent = createServer(() => {});
    const silentClient = new ToolServerClient({
      url: await listen(silent),
      token: TOKEN,
      timeoutSlackMs: 300,
    });
    try {
      const result = await silentClient.execute({
        callId: 'silent',
        tool: 'echo',
        arguments: {},
        timeoutS: 1,
      });
      assert.equal(result.success, false);
      assert.match(
        result.error ?? '',
        /^External tool server failed: http:\/\/127\.0\.0\.1:\d+ did not answer within 1\.3s$/,
      );
    } finally {
      await silentClient.close();
      await closeServer(silent);
    }
    const closedPort = new ToolServerClient({ url: 'http://127.0.0.1:1', token: TOKEN });
    try {
      const refused = await closedPort.execute({ callId: 'closed', tool: 'echo', arguments: {} });
      assert.equal(refused.success, false);
      assert.match(
        refused.error ?? '',
        /^External tool server failed: http:\/\/127\.0\.0\.1:1: .*ECONNREFUSED/,
      );
    } finally {
      await closedPort.close();
    }
  });

  it('rejects when cancelled, and the server aborts the tool of the client that went away', async () => {
    const cancel = new AbortController();
    const pending = client.execute(
      { callId: 'cancelled', tool: 'wait_for_abort', arguments: {} },
      cancel.signal,
    );
    await waitFor(
      'the tool to start',
      async () => (await call(baseUrl, 'GET', '/health')).body.executing === 1,
      10_000,
    );
    const abortsSoFar = abortedTools.filter((name) => name === 'wait_for_abort').length;
    cancel.abort();
    await assert.rejects(pending);
    await waitFor(
      'the tool to be aborted',
      () => abortedTools.filter((name) => name === 'wait_for_abort').length === abortsSoFar + 1,
      10_000,
    );
  });
});

describe('agents tool-server', () => {
  let home: string;

  before(async () => {
    home = await mkdtemp(path.join(os.tmpdir(), 'agents-tool-server-home-'));
  });

  after(() => rm(home, { recursive: true, force: true }));

  it('fails with one clear line when --tools is missing or the module is bad', async () => {
    const context = (values: Record<string, string>) => ({
      positionals: [],
      values,
      config: loadConfig({ AGENTS_HOME: home }),
      print: () => undefined,
    });
    await assert.rejects(toolServerCommand(context({})), (error: unknown) => {
      assert.ok(error instanceof AgentsError);
      assert.match(error.message, /^--tools is required: agents tool-server --tools <module>/);
      return true;
    });
    await assert.rejects(
      toolServerCommand(context({ tools: path.join(home, 'none.ts') })),
      (error: unknown) => {
        assert.ok(error instanceof AgentsError);
        assert.match(error.message, /^Tool module .*none\.ts does not load: Cannot find module/);
        return true;
      },
    );
    await assert.rejects(toolServerCommand(context({ tools: 'x', port: 'high' })), /--port 'high'/);
  });

  it('serves a module with a generated token until SIGTERM', async () => {
    const script = path.join(home, 'run-tool-server.ts');
    await writeFile(
      script,
      [
        `import { loadConfig } from ${JSON.stringify(path.join(REPOSITORY, 'client', 'config'))};`,
        `import { toolServerCommand } from ${JSON.stringify(path.join(REPOSITORY, 'client', 'commands', 'tool-server'))};`,
        `void toolServerCommand({ positionals: [], values: { tools: 'sandbox/examples/fetch-url.ts', port: '0' }, config: loadConfig(), print: (line) => console.log(line) });`,
      ].join('\n'),
    );
    const environment = { ...process.env, AGENTS_HOME: home, AGENTS_TOOL_SERVER_TOKEN: '' };
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: REPOSITORY,
      env: environment,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      const lines = createInterface({ input: child.stdout });
      let baseUrl: string | undefined;
      for await (const line of lines) {
        baseUrl = /^Tool server on (http:\/\/127\.0\.0\.1:\d+): fetch_url /.exec(line)?.[1];
        if (baseUrl !== undefined) break;
      }
      assert.ok(baseUrl !== undefined, 'the server never said where it listens');
      const tokenFile = path.join(home, 'tool-server.token');
      assert.equal((await stat(tokenFile)).mode & 0o777, 0o600);
      const token = (await readFile(tokenFile, 'utf8')).trim();
      const health = await call(baseUrl, 'GET', '/health', undefined, token);
      assert.deepEqual(health.body, { status: 'ok', tools: 1, executing: 0, concurrency: 16, abandoned: 0 });
      child.kill('SIGTERM');
      const [code] = (await once(child, 'exit')) as [number | null];
      assert.equal(code, 0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
