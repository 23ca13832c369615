import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { z } from 'zod';
import { after, afterEach, before, describe, it } from 'node:test';
import type { WorkflowHandle } from '@temporalio/client';
import { MCP_HTTP_RESPONSE_MAX_BYTES } from '../activities/mcp-http-sessions';
import { MCP_NOT_RESENT } from '../activities/tool-batch';
import type { McpHttpServer } from '../common/mcp-servers';
import { startCli } from './helpers/cli';
import { useAgentsEnvironment } from './helpers/environment';
import { auditToolResults } from './helpers/history';
import { startEverythingServer, type EverythingServer } from './helpers/mcp-servers';
import { stopProcess } from './helpers/processes';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';

/**
 * MCP tools over Streamable HTTP, from the real `@modelcontextprotocol/server-everything` run as its
 * own process behind a relay that demands a bearer token: the worker lists its tools, offers them
 * as `mcp__everything__<tool>`, calls them through the tool batch, and turns every kind of answer
 * (text, structured content, the server's error, progress, a timeout, a dead server) into one
 * result the model reads and the audit keeps.
 */

const env = useAgentsEnvironment();
const TOKEN_VARIABLE = 'AGENTS_MCP_TOKEN_EVERYTHING';
const TOKEN = 'mcp-test-token-5c1e';
let everything: EverythingServer;

function server(overrides: Partial<McpHttpServer> = {}): McpHttpServer {
  return { name: 'everything', url: everything.url, bearerTokenEnv: TOKEN_VARIABLE, ...overrides };
}

/** The run's tool results, as its audit records them. */
function toolResults(name: string) {
  return auditToolResults(env.temporal.client, name);
}

async function historyText(handle: WorkflowHandle): Promise<string> {
  return JSON.stringify((await handle.fetchHistory()).events ?? []);
}

// The in-process workers of this file read tokens from this process's environment.
before(() => {
  process.env[TOKEN_VARIABLE] = TOKEN;
});
after(() => {
  delete process.env[TOKEN_VARIABLE];
});

describe('MCP tools over Streamable HTTP (server-everything)', () => {
  before(async () => {
    everything = await startEverythingServer(TOKEN);
  });
  after(async () => {
    await everything?.close();
  });

  it('offers its tools as mcp__everything__<tool> and turns text, structured content, errors and progress into results', async () => {
    const name = uniqueName('mcp-http');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'Trying the MCP tools.',
            toolCalls: [
              { tool: 'mcp__everything__echo', arguments: { message: 'hello over MCP' } },
              { tool: 'mcp__everything__get-structured-content', arguments: { location: 'Chicago' } },
              { tool: 'mcp__everything__get-sum', arguments: { a: 'not a number', b: 2 } },
              { tool: 'mcp__everything__teleport', arguments: {} },
            ],
          },
          {
            text: 'A slow one.',
            toolCalls: [
              {
                tool: 'mcp__everything__trigger-long-running-operation',
                arguments: { duration: 2, steps: 4 },
              },
            ],
          },
          { text: 'Done with MCP.' },
        ],
        { maxIterations: 1, mcpServers: [server()] },
      ),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    const results = await toolResults(name);
    const byTool = new Map(results.map((entry) => [entry.tool, entry]));

    const echo = byTool.get('mcp__everything__echo');
    assert.equal(echo?.success, true);
    assert.equal(echo?.output, 'Echo: hello over MCP');
    assert.equal(echo?.metadata?.mcpServer, 'everything');
    assert.equal(echo?.metadata?.mcpTool, 'echo');

    const weather = byTool.get('mcp__everything__get-structured-content');
    assert.equal(weather?.success, true);
    const structured = weather?.metadata?.structuredContent as { temperature?: unknown } | undefined;
    assert.equal(typeof structured?.temperature, 'number');

    const sum = byTool.get('mcp__everything__get-sum');
    assert.equal(sum?.success, false, 'the server refused arguments that do not fit its schema');
    assert.match(sum?.error ?? '', /a|number|invalid/i);

    // A name no server of the run offers is answered by the run itself; nothing was sent.
    const teleport = byTool.get('mcp__everything__teleport');
    assert.equal(teleport?.success, false);
    assert.equal(teleport?.source, 'workflow');
    assert.match(teleport?.output ?? '', /Unknown tool: mcp__everything__teleport/);
    assert.equal(everything.callsOf('teleport'), 0);

    const slow = byTool.get('mcp__everything__trigger-long-running-operation');
    assert.equal(slow?.success, true, slow?.error);
    assert.match(slow?.output ?? '', /Long running operation completed/);
    assert.deepEqual(slow?.metadata?.progress, { notifications: 4, progress: 4, total: 4 });

    // The token went in every request's header, and nowhere into the run's history.
    const mine = everything.seen.filter((request) => request.method !== undefined);
    assert.ok(mine.length > 0);
    assert.ok(mine.every((request) => request.authorization === `Bearer ${TOKEN}`));
    assert.ok(!(await historyText(handle)).includes(TOKEN), 'the token is not in the history');
  });

  it('lists the tools once for a run, not in every model turn', async () => {
    const name = uniqueName('mcp-list-once');
    const listedBefore = everything.seen.filter((request) => request.method === 'tools/list').length;
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          { text: 'One.', toolCalls: [{ tool: 'mcp__everything__echo', arguments: { message: '1' } }] },
          { text: 'Two.', toolCalls: [{ tool: 'mcp__everything__echo', arguments: { message: '2' } }] },
          { text: 'Three.' },
        ],
        { maxIterations: 1, mcpServers: [server()] },
      ),
    );
    await handle.result();
    const listed = everything.seen.filter((request) => request.method === 'tools/list').length - listedBefore;
    assert.equal(listed, 1, 'three model turns, one tools/list');
  });

  it('a call that does not answer within its timeout is one clear result and the run goes on', async () => {
    const name = uniqueName('mcp-hung');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'Waiting on a silent tool.',
            toolCalls: [
              // One step: no progress notification until its end, 8 s away; the timeout is 2 s.
              {
                tool: 'mcp__everything__trigger-long-running-operation',
                arguments: { duration: 8, steps: 1 },
              },
            ],
          },
          { text: 'Went on without it.' },
        ],
        { maxIterations: 1, mcpServers: [server({ timeoutS: 2 })] },
      ),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    const [hung] = await toolResults(name);
    assert.equal(hung?.success, false);
    assert.equal(
      hung?.error,
      'MCP server everything failed on trigger-long-running-operation: it did not answer tools/call within 2s',
    );
  });

  it('a run whose token variable is missing on the worker gets one clear result, and no request goes out', async () => {
    const name = uniqueName('mcp-no-token');
    const before = everything.seen.length;
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          { text: 'Calling.', toolCalls: [{ tool: 'mcp__everything__echo', arguments: { message: 'x' } }] },
          { text: 'Done.' },
        ],
        { maxIterations: 1, mcpServers: [server({ bearerTokenEnv: 'AGENTS_MCP_TOKEN_NOT_SET' })] },
      ),
    );
    await handle.result();
    const [echo] = await toolResults(name);
    assert.equal(echo?.success, false);
    assert.equal(
      echo?.error,
      'MCP server everything failed on echo: it needs a bearer token from AGENTS_MCP_TOKEN_NOT_SET, which is not set on this worker',
    );
    assert.equal(everything.seen.length, before);
  });

  it('a run cannot name a worker variable outside AGENTS_MCP_TOKEN_ as its token', async () => {
    await assert.rejects(
      env.agents.start(
        scriptedRun(uniqueName('mcp-steal'), [{ text: 'x' }], {
          mcpServers: [server({ bearerTokenEnv: 'OPENAI_API_KEY' })],
        }),
      ),
      /mcpServers\.0\.bearerTokenEnv: a run's token variable must start with AGENTS_MCP_TOKEN_ \(got OPENAI_API_KEY\)/,
    );
  });
});

describe('MCP over HTTP when its server or worker goes away', () => {
  const workers: ChildProcess[] = [];
  before(async () => {
    everything = await startEverythingServer(TOKEN);
  });
  afterEach(async () => {
    for (const worker of workers.splice(0)) await stopProcess(worker);
  });
  after(async () => {
    await everything?.close();
  });

  /**
   * An `agents worker` whose own configuration names the server (AGENTS_MCP_SERVERS), its token in
   * a variable of the operator's choosing: every run on it has the server.
   */
  async function startWorkerProcess(): Promise<ChildProcess> {
    const servers = [{ name: 'everything', url: everything.url, bearerTokenEnv: 'EVERYTHING_TOKEN' }];
    const child = await startCli(
      ['worker'],
      { ...env.temporal.environment, AGENTS_MCP_SERVERS: JSON.stringify(servers), EVERYTHING_TOKEN: TOKEN },
      /Worker polling/,
    );
    workers.push(child);
    return child;
  }

  it("a call under way when its worker is killed is not sent again: the model is told it may have run (the worker's own server)", async () => {
    // This file's in-process worker would pick the retry up at once: only the worker processes run.
    await env.worker.stop();
    const first = await startWorkerProcess();
    const name = uniqueName('mcp-crash');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'A long call.',
            toolCalls: [
              {
                tool: 'mcp__everything__trigger-long-running-operation',
                arguments: { duration: 20, steps: 20 },
              },
            ],
          },
          { text: 'After the crash.' },
        ],
        { maxIterations: 1 },
      ),
    );
    await waitFor(
      'the call to reach the server',
      () => everything.callsOf('trigger-long-running-operation') === 1,
      60_000,
    );
    await stopProcess(first, 'SIGKILL');
    await startWorkerProcess();
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    const [lost] = await toolResults(name);
    assert.equal(lost?.success, false);
    assert.equal(
      lost?.error,
      `MCP server everything failed on trigger-long-running-operation: ${MCP_NOT_RESENT}`,
    );
    assert.equal(everything.callsOf('trigger-long-running-operation'), 1, 'the server got the call once');
  });

  it('a server that has gone away is one clear result, and the run ends normally', async () => {
    await everything.stopServer();
    const name = uniqueName('mcp-gone');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'Calling.',
            toolCalls: [{ tool: 'mcp__everything__echo', arguments: { message: 'anyone?' } }],
          },
          { text: 'Nobody answered.' },
        ],
        { maxIterations: 1, mcpServers: [server()] },
      ),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    const [echo] = await toolResults(name);
    assert.equal(echo?.success, false);
    assert.match(echo?.error ?? '', /^MCP server everything failed on echo: could not connect: /);
  });
});

describe('a hostile MCP server over HTTP', () => {
  it('an answer past the response bound is one failed result, and the worker goes on', async () => {
    // A stateless server of the SDK whose one tool answers with more than a response may carry.
    const http = createServer((request, response) => {
      const server = new McpServer({ name: 'hostile', version: '1.0.0' });
      server.registerTool(
        'flood',
        { description: 'Answers with far too much.', inputSchema: { size: z.number().optional() } },
        () => ({ content: [{ type: 'text', text: 'x'.repeat(MCP_HTTP_RESPONSE_MAX_BYTES + 1024) }] }),
      );
      const transport = new StreamableHTTPServerTransport({
        sessionIdGenerator: undefined,
        enableJsonResponse: true,
      });
      response.on('close', () => void server.close());
      void server.connect(transport).then(() => transport.handleRequest(request, response));
    });
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    try {
      const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/mcp`;
      const name = uniqueName('mcp-flood');
      const handle = await env.agents.start(
        scriptedRun(
          name,
          [
            { text: 'Asking for a lot.', toolCalls: [{ tool: 'mcp__hostile__flood', arguments: {} }] },
            { text: 'Still here.' },
          ],
          { maxIterations: 1, mcpServers: [{ name: 'hostile', url }] },
        ),
      );
      assert.equal((await handle.result()).exitReason, 'max_iterations');
      const [flood] = await toolResults(name);
      assert.equal(flood?.success, false);
      assert.match(flood?.error ?? '', /^MCP server hostile failed on flood: .*over 16 MiB/);
    } finally {
      http.closeAllConnections();
      http.close();
    }
  });
});
