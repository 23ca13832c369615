import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { ToolBatchInput } from '../activities';
import { workflowIdFor } from '../client/agents-client';
import type { McpStdioServer } from '../common/mcp-servers';
import { useAgentsEnvironment } from './helpers/environment';
import { auditToolResults, scheduledActivities } from './helpers/history';
import { MCP_PACKAGES } from './helpers/mcp-servers';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';

/**
 * The real `@modelcontextprotocol/server-filesystem` over stdio, run by the sandbox server inside
 * the run's sandbox: the agent reads and writes its own workspace through it, under the run's
 * permission rules, and neither the server's own checks nor their absence let it reach anything
 * of the host.
 */

/** Where the sandboxes of this file's MCP servers see the packages (mounted read-only). */
const MOUNTED = '/opt/agents-mcp/node_modules';
const FILESYSTEM_SERVER = `${MOUNTED}/@modelcontextprotocol/server-filesystem/dist/index.js`;
/** A value only this process's environment holds: the sandbox must not see it. */
const HOST_SECRET = 'host-secret-7d2f0e';
process.env.AGENTS_TEST_HOST_SECRET = HOST_SECRET;

const env = useAgentsEnvironment({
  withSandbox: true,
  sandboxOptions: {
    mcp: { readOnlyMounts: [{ hostPath: path.dirname(MCP_PACKAGES), sandboxPath: MOUNTED }] },
  },
});

function filesystemServer(name: string, allowed: string): McpStdioServer {
  return { name, command: ['node', FILESYSTEM_SERVER, allowed] };
}

/** The run's tool results, as its audit records them. */
function toolResults(name: string) {
  return auditToolResults(env.temporal.client, name);
}

async function workspaceOf(name: string): Promise<string> {
  const handle = env.agents.client.workflow.getHandle(workflowIdFor(name));
  const [batch] = await scheduledActivities<ToolBatchInput>(handle, 'toolBatch');
  return path.join(env.sandbox!.root, 'trajectories', batch?.input.trajectoryId ?? '', 'workspace');
}

describe('MCP tools over stdio, inside the run’s sandbox (server-filesystem)', () => {
  it('the agent writes and reads its workspace through the server, and cannot leave it', async () => {
    const name = uniqueName('mcp-fs');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'Working through MCP.',
            toolCalls: [
              {
                tool: 'mcp__fs__write_file',
                arguments: { path: '/workspace/notes.txt', content: 'via MCP' },
              },
              { tool: 'mcp__fs__read_text_file', arguments: { path: '/workspace/notes.txt' } },
              { tool: 'mcp__fs__read_text_file', arguments: { path: '/etc/passwd' } },
              { tool: 'mcp__fs__read_text_file', arguments: { path: '/workspace/../etc/passwd' } },
              { tool: 'bash', arguments: { command: 'ln -s / escape' } },
            ],
          },
          {
            text: 'Through a link.',
            toolCalls: [
              { tool: 'mcp__fs__read_text_file', arguments: { path: '/workspace/escape/etc/passwd' } },
            ],
          },
          { text: 'Done.' },
        ],
        { maxIterations: 1, mcpServers: [filesystemServer('fs', '/workspace')] },
      ),
    );
    assert.equal((await handle.result()).exitReason, 'max_iterations');
    const [written, read, passwd, dotDot, , link] = await toolResults(name);
    assert.equal(written?.success, true, written?.error);
    assert.equal(read?.output, 'via MCP');
    assert.equal(
      await readFile(path.join(await workspaceOf(name), 'notes.txt'), 'utf8'),
      'via MCP',
      "the file is in the run's workspace on the sandbox server",
    );
    for (const refused of [passwd, dotDot, link]) {
      assert.equal(refused?.success, false);
      assert.match(refused?.error ?? '', /Access denied - (path|symlink target) outside allowed directories/);
    }
  });

  it('a server told to allow everything still sees only the sandbox: no host files, no host environment', async () => {
    const name = uniqueName('mcp-fs-root');
    const hostFile = path.join(env.sandbox!.root, 'trajectories');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'Looking around.',
            toolCalls: [
              { tool: 'mcp__everywhere__list_directory', arguments: { path: '/' } },
              { tool: 'mcp__everywhere__read_text_file', arguments: { path: '/proc/self/environ' } },
              { tool: 'mcp__everywhere__read_text_file', arguments: { path: '/proc/1/environ' } },
              { tool: 'mcp__everywhere__list_directory', arguments: { path: hostFile } },
            ],
          },
          { text: 'Done.' },
        ],
        { maxIterations: 1, mcpServers: [filesystemServer('everywhere', '/')] },
      ),
    );
    await handle.result();
    const [root, ownEnvironment, firstEnvironment, host] = await toolResults(name);
    assert.equal(root?.success, true, root?.error);
    assert.doesNotMatch(root?.output ?? '', /\[DIR\] (root|home|work|var)\b/, "none of the host's folders");
    assert.match(root?.output ?? '', /\[DIR\] workspace/);
    for (const environment of [ownEnvironment, firstEnvironment]) {
      assert.equal(environment?.success, true, environment?.error);
      assert.ok(!environment?.output.includes(HOST_SECRET), 'no variable of the host');
      assert.ok(!environment?.output.includes('AGENTS_SANDBOX'), 'no sandbox setting');
    }
    assert.equal(host?.success, false, "the sandbox server's root does not exist in the sandbox");
    await stat(hostFile); // while it does on the host
  });

  it('permission rules apply: allow mcp__fs__read_* runs reads at once, a write waits and a denial stops it', async () => {
    const name = uniqueName('mcp-fs-rules');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'Read, then write.',
            toolCalls: [
              { tool: 'mcp__fs__list_directory', arguments: { path: '/workspace' } },
              { tool: 'mcp__fs__write_file', arguments: { path: '/workspace/denied.txt', content: 'no' } },
            ],
          },
          { text: 'Told no.' },
        ],
        {
          maxIterations: 1,
          mcpServers: [filesystemServer('fs', '/workspace')],
          permissions: {
            mode: 'ask',
            onDeny: 'continue',
            rules: [
              { action: 'allow', match: 'mcp__fs__read_*' },
              { action: 'allow', match: 'mcp__fs__list_*' },
            ],
          },
        },
      ),
    );
    const status = await waitFor('the write to wait for a decision', async () => {
      const current = await env.agents.status(name);
      return current.pendingPermissions.length === 1 ? current : undefined;
    });
    const [request] = status.pendingPermissions;
    assert.equal(request?.tool, 'mcp__fs__write_file');
    assert.match(request?.rationale ?? '', /^mcp__fs__write_file: .*denied\.txt.* \(ask mode\)$/);
    await env.agents.decide(name, { requestId: request?.requestId ?? '', approve: false, by: 'reviewer' });
    await handle.result();
    const results = await toolResults(name);
    assert.deepEqual(
      results.map((entry) => [entry.tool, entry.success]),
      [
        ['mcp__fs__list_directory', true],
        ['mcp__fs__write_file', false],
      ],
    );
    await assert.rejects(stat(path.join(await workspaceOf(name), 'denied.txt')), { code: 'ENOENT' });
  });
});
