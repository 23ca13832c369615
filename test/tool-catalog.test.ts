import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ToolCatalog } from '../activities/tool-catalog';
import type { ToolServerClient } from '../activities/tool-server-client';

/** A tool server client that lists what the test says, or fails. */
function toolServer(
  listing: () => Promise<Array<{ name: string; description: string; inputSchema: object }>>,
) {
  let calls = 0;
  const client = {
    listTools: () => {
      calls += 1;
      return listing();
    },
  } as unknown as ToolServerClient;
  return { client, calls: () => calls };
}

describe('the tools offered to models', () => {
  it('describes every sandbox tool and finish with the JSON Schema of the arguments the sandbox checks', async () => {
    const tools = await new ToolCatalog().definitions();
    assert.deepEqual(
      tools.map((tool) => tool.name),
      ['bash', 'read_file', 'write_file', 'bash_stateful', 'tmux', 'finish'],
    );
    const writeFile = tools.find((tool) => tool.name === 'write_file');
    assert.deepEqual(writeFile?.parameters.required, ['path', 'content']);
    assert.equal((writeFile?.parameters.properties as Record<string, { type: string }>).path?.type, 'string');
    const readFile = tools.find((tool) => tool.name === 'read_file');
    // Arguments with defaults are optional to the model.
    assert.deepEqual(readFile?.parameters.required, ['path']);
  });

  it("marks a sandbox call whose arguments do not fit with the sandbox's own reason", () => {
    const catalog = new ToolCatalog();
    const call = { id: 'c1', tool: 'write_file', arguments: { content: 'x' } };
    assert.deepEqual(catalog.check(call), {
      ...call,
      invalid: 'Invalid arguments for tool write_file: path is required',
    });
    const wrongType = { id: 'c2', tool: 'bash', arguments: { command: 42 } };
    assert.equal(
      catalog.check(wrongType).invalid,
      'Invalid arguments for tool bash: command must be a string',
    );
    const fine = { id: 'c3', tool: 'read_file', arguments: { path: 'a.txt' } };
    assert.deepEqual(catalog.check(fine), fine);
    // Aliases and finish are known; without a tool server, any other tool cannot run.
    const alias = { id: 'c4', tool: 'terminal', arguments: { command: 'ls' } };
    assert.deepEqual(catalog.check(alias), alias);
    const external = { id: 'c5', tool: 'shout', arguments: {} };
    assert.equal(
      catalog.check(external).invalid,
      'External tool not available (ToolServer not configured): shout',
    );
  });

  it("answers a tool the tool server does not list with Unknown tool, and leaves its own tools' arguments to it", async () => {
    const server = toolServer(() =>
      Promise.resolve([{ name: 'shout', description: 'Upper-cases.', inputSchema: { type: 'object' } }]),
    );
    const catalog = new ToolCatalog(server.client);
    const unlisted = { id: 'c1', tool: 'teleport', arguments: {} };
    // Before the list is known, the tool server answers the call itself.
    assert.deepEqual(catalog.check(unlisted), unlisted);
    await catalog.definitions();
    assert.equal(catalog.check(unlisted).invalid, 'Unknown tool: teleport');
    const offered = { id: 'c2', tool: 'shout', arguments: { wrong: 1 } };
    assert.deepEqual(catalog.check(offered), offered);
  });

  it("adds the tool server's tools, asking it at most once a minute", async () => {
    const server = toolServer(() =>
      Promise.resolve([
        { name: 'shout', description: 'Upper-cases.', inputSchema: { type: 'object', properties: {} } },
        { name: 'bash', description: 'A clash with a sandbox tool.', inputSchema: {} },
      ]),
    );
    const catalog = new ToolCatalog(server.client);
    const first = await catalog.definitions();
    await catalog.definitions();
    assert.equal(server.calls(), 1);
    assert.deepEqual(
      first.slice(6).map((tool) => tool.name),
      ['shout'],
    );
  });

  it('leaves the tool server out with a warning while it cannot be listed', async () => {
    const warnings: string[] = [];
    const server = toolServer(() => Promise.reject(new Error('connect ECONNREFUSED 127.0.0.1:7400')));
    const tools = await new ToolCatalog(server.client, (message) => warnings.push(message)).definitions();
    assert.equal(tools.length, 6);
    assert.deepEqual(warnings, [
      "The tool server's tools are not offered this turn: connect ECONNREFUSED 127.0.0.1:7400",
    ]);
  });
});
