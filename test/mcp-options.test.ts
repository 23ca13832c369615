import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../client/config';
import { mcpServersOption, splitCommandWords } from '../client/mcp-option';
import { agentRunInputSchema } from '../common/agent-input';
import { mcpToolName, mergeMcpServers, parseMcpToolName } from '../common/mcp-servers';
import { CUT_MARKER_START, jsonStringBytes } from '../common/payload-bounds';
import { MCP_OUTPUT_MAX_BYTES, mcpToolResult } from '../common/mcp-tool-results';
import { scriptedRun } from './helpers/run-input';

const facts = { server: 'fs', tool: 'read_file', durationMs: 3 };

describe('--mcp options', () => {
  it('takes a command (split as a shell splits words, nothing expanded) or an http(s) URL', () => {
    assert.deepEqual(
      mcpServersOption([
        'fs=node /opt/mcp/server.js \'/workspace/my notes\' "a\\"b" $HOME',
        'docs=https://docs.example/mcp',
      ]),
      [
        { name: 'fs', command: ['node', '/opt/mcp/server.js', '/workspace/my notes', 'a"b', '$HOME'] },
        { name: 'docs', url: 'https://docs.example/mcp' },
      ],
    );
  });

  it('attaches token variables and timeouts by server name', () => {
    assert.deepEqual(
      mcpServersOption(['docs=https://docs.example/mcp'], ['docs=AGENTS_MCP_TOKEN_DOCS'], ['docs=5']),
      [
        {
          name: 'docs',
          url: 'https://docs.example/mcp',
          bearerTokenEnv: 'AGENTS_MCP_TOKEN_DOCS',
          timeoutS: 5,
        },
      ],
    );
  });

  it('refuses bad forms with one line naming the option and what it accepts', () => {
    const cases: Array<[() => unknown, RegExp]> = [
      [() => mcpServersOption(['fs']), /^--mcp 'fs'\. Accepted: NAME=/],
      [
        () => mcpServersOption(['Bad__Name=node x.js']),
        /^--mcp 'Bad__Name=node x\.js': name: must be 1-32 characters/,
      ],
      [() => mcpServersOption(["fs=node 'open"]), /^--mcp 'fs=node 'open': an unclosed ' quote$/],
      [() => mcpServersOption(['a=node x', 'a=node y']), /^--mcp: 1\.name: names a twice$/],
      [
        () => mcpServersOption(['fs=node x'], ['fs=AGENTS_MCP_TOKEN_X']),
        /no HTTP server fs among the --mcp options/,
      ],
      [
        () => mcpServersOption(['docs=https://docs.example/mcp'], ['docs=OPENAI_API_KEY']),
        /token variable must start with AGENTS_MCP_TOKEN_ \(got OPENAI_API_KEY\)/,
      ],
      [() => mcpServersOption(['docs=https://docs.example/mcp'], [], ['docs=9999']), /timeoutS/],
    ];
    for (const [parse, message] of cases) assert.throws(parse, { message });
  });

  it('splits words like a shell for quotes and backslashes only', () => {
    assert.deepEqual(splitCommandWords(`a  'b c' "d\\"e" f\\ g ''`), ['a', 'b c', 'd"e', 'f g', '']);
  });
});

describe('MCP server names and lists', () => {
  it('names a tool mcp__<server>__<tool> and reads the name back', () => {
    assert.equal(mcpToolName('fs', 'read_file'), 'mcp__fs__read_file');
    assert.deepEqual(parseMcpToolName('mcp__fs__read_file'), { server: 'fs', tool: 'read_file' });
    assert.deepEqual(parseMcpToolName('mcp__fs__get__deep'), { server: 'fs', tool: 'get__deep' });
    for (const name of ['read_file', 'mcp__', 'mcp____x', 'mcp__fs__', 'mcp__FS__x']) {
      assert.equal(parseMcpToolName(name), undefined, name);
    }
  });

  it("a run's server replaces the worker's of the same name", () => {
    const worker = [
      { name: 'docs', url: 'https://worker.example/mcp' },
      { name: 'fs', command: ['node', 'a.js'] },
    ];
    const run = [{ name: 'docs', url: 'https://run.example/mcp' }];
    assert.deepEqual(mergeMcpServers(worker, run), [worker[1], run[0]]);
  });

  it("the run's input refuses a token variable a run may not name, even sent around the CLI", () => {
    const parsed = agentRunInputSchema.safeParse({
      ...scriptedRun('steal', [{ text: 'x' }]),
      mcpServers: [{ name: 'x', url: 'https://evil.example/mcp', bearerTokenEnv: 'ANTHROPIC_API_KEY' }],
    });
    assert.equal(parsed.success, false);
  });

  it('AGENTS_MCP_SERVERS is a JSON array of servers, and a bad one is one line', () => {
    const config = loadConfig({
      AGENTS_HOME: '/tmp/agents-home',
      AGENTS_MCP_SERVERS: '[{"name":"docs","url":"https://docs.example/mcp","bearerTokenEnv":"DOCS_TOKEN"}]',
    });
    assert.deepEqual(config.mcpServers, [
      { name: 'docs', url: 'https://docs.example/mcp', bearerTokenEnv: 'DOCS_TOKEN' },
    ]);
    assert.throws(() => loadConfig({ AGENTS_MCP_SERVERS: '{not json' }), {
      message: /^Invalid environment: AGENTS_MCP_SERVERS: must be a JSON array of MCP servers$/,
    });
  });
});

describe('MCP results as tool results', () => {
  it('joins text, names binary content without inlining it, and keeps structured content beside', () => {
    const result = mcpToolResult(
      'call-1',
      {
        content: [
          { type: 'text', text: 'first' },
          { type: 'image', mimeType: 'image/png', data: 'A'.repeat(4000) },
          { type: 'resource_link', uri: 'file:///workspace/a.txt', name: 'a.txt' },
        ],
        structuredContent: { answer: 42 },
      },
      facts,
    );
    assert.equal(result.success, true);
    assert.equal(
      result.output,
      'first\n[image image/png, 3,000 bytes, not shown]\n[resource link file:///workspace/a.txt (a.txt)]',
    );
    assert.deepEqual(result.metadata.structuredContent, { answer: 42 });
  });

  it("a server's error is a failed result whose error is its text", () => {
    const result = mcpToolResult(
      'call-2',
      { content: [{ type: 'text', text: 'no such file' }], isError: true },
      facts,
    );
    assert.deepEqual([result.success, result.error], [false, 'no such file']);
  });

  it('cuts a flood of text to its bound, with the marker a reader can see', () => {
    const result = mcpToolResult(
      'call-3',
      { content: [{ type: 'text', text: 'x'.repeat(1_000_000) }] },
      facts,
    );
    assert.ok(jsonStringBytes(result.output) <= MCP_OUTPUT_MAX_BYTES);
    assert.ok(result.output.includes(CUT_MARKER_START));
  });
});
