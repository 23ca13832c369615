import { randomBytes } from 'node:crypto';
import type { SandboxEndpoint } from '../activities/tool-executor';
import { checkBubblewrap, sandboxHostIdentity } from '../sandbox/bubblewrap';
import { serverNetworkEgress } from '../sandbox/network-proxy';
import { SandboxServer } from '../sandbox/sandbox-server';
import { runSandboxTool } from '../sandbox/tools';
import type { AgentsConfig } from './config';
import { configuredSandboxes } from './commands/sandbox';

/**
 * The sandbox servers a CLI command talks to about workspaces: the configured ones
 * (`AGENTS_SANDBOX_URLS` with their token), or, on the embedded default where none are configured,
 * this machine's own sandbox root served by a sandbox server started in this process on loopback
 * for the command's duration. Either way every workspace operation goes through the same HTTP API,
 * so the CLI behaves the same whether the server is on this machine or another one, and a workspace
 * stays readable after the process that ran its tool calls (`agents demo`, `agents dev`) has ended.
 */
export async function withSandboxEndpoints<T>(
  config: AgentsConfig,
  use: (endpoints: SandboxEndpoint[]) => Promise<T>,
): Promise<T> {
  const configured = await configuredSandboxes(config);
  if (configured.length > 0) return use(configured);
  const local = await startCommandSandbox(config);
  try {
    return await use([local.endpoint]);
  } finally {
    await local.server.close();
  }
}

/**
 * A sandbox server over `config.sandbox.root` on a free loopback port, with a token of its own that
 * lives only as long as this process. It runs commands (a git diff) in bubblewrap when it is
 * usable, and answers them with a failed result naming the reason otherwise; reading files needs no bubblewrap.
 */
async function startCommandSandbox(
  config: AgentsConfig,
): Promise<{ server: SandboxServer; endpoint: SandboxEndpoint }> {
  const token = randomBytes(32).toString('hex');
  const { root, totals, allowCidrs = [] } = config.sandbox;
  // Checked on the first command only: reading files, the usual case, spawns no sandbox.
  let check: ReturnType<typeof checkBubblewrap> | undefined;
  const network = serverNetworkEgress(root, { allowCidrs, owner: sandboxHostIdentity() });
  const server = new SandboxServer({
    root,
    token,
    lanes: 2,
    workspaceLimitBytes: totals.diskQuotaBytes,
    runTool: async (call, workspace, signal) => {
      const usable = await (check ??= checkBubblewrap());
      if (!usable.usable) {
        const error = `bubblewrap is not usable here (${usable.reason})`;
        return { callId: call.callId, success: false, output: '', error, metadata: {} };
      }
      return runSandboxTool(call, workspace, signal, 'bubblewrap', totals, network);
    },
  });
  const port = await server.listen(0);
  return { server, endpoint: { url: `http://127.0.0.1:${port}`, token } };
}
