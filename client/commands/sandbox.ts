import { statSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { formatHostPort } from '../../common/host-port';
import type { SandboxEndpoint } from '../../activities/tool-executor';
import {
  checkBubblewrap,
  readOnlyMountProblem,
  sandboxHostIdentity,
  type ReadOnlyMount,
} from '../../sandbox/bubblewrap';
import { formatBytes } from '../../sandbox/byte-size';
import { relayProblem, serverNetworkEgress, type NetworkEgress } from '../../sandbox/network-proxy';
import { SandboxServer } from '../../sandbox/sandbox-server';
import type { SandboxTotals } from '../../sandbox/sandbox-watchdog';
import { loadOrCreateToken } from '../../sandbox/token';
import { runSandboxTool, type SandboxIsolation } from '../../sandbox/tools';
import { maxSessionsSchema, sandboxTokenFile, type AgentsConfig } from '../config';
import { AgentsError } from '../errors';
import { byteSizeOption, flag, numberOption, text, type CommandContext } from './command-context';

/** `agents sandbox`, and the sandbox servers the other commands use or start in this process. */

/** Calls one sandbox server runs at once unless `--lanes` says otherwise. */
const DEFAULT_SANDBOX_LANES = 8;

/**
 * The totals of `agents sandbox`: `--disk-quota`, `--memory-limit` and `--max-sessions`, else the
 * environment's (`AGENTS_SANDBOX_DISK_QUOTA`, `…_MEMORY_LIMIT`, `…_MAX_SESSIONS`), else the defaults.
 */
function sandboxTotalsOptions(context: CommandContext): SandboxTotals {
  const configured = context.config.sandbox.totals;
  return {
    diskQuotaBytes: byteSizeOption(context, 'disk-quota') ?? configured.diskQuotaBytes,
    memoryLimitBytes: byteSizeOption(context, 'memory-limit') ?? configured.memoryLimitBytes,
    maxSessions: numberOption(context, 'max-sessions', maxSessionsSchema) ?? configured.maxSessions,
  };
}

/**
 * `--mcp-mount HOST_DIR:SANDBOX_DIR`, as often as given: host folders bound read-only under /opt/
 * in the sandboxes of stdio MCP servers, for servers installed outside /usr. Split at the last
 * ":", since a host path may hold one and a sandbox path under /opt/ needs none.
 */
function mcpMountOptions(context: CommandContext): ReadOnlyMount[] {
  const given = (context.values as Record<string, unknown>)['mcp-mount'];
  const raws = Array.isArray(given) ? given.filter((item): item is string => typeof item === 'string') : [];
  return raws.map((raw) => {
    const separator = raw.lastIndexOf(':');
    const fail = (reason: string): never => {
      throw new AgentsError(
        'invalid_argument',
        `--mcp-mount '${raw}': ${reason}. Accepted: HOST_DIR:SANDBOX_DIR, an existing host folder and a folder under /opt/, e.g. /srv/mcp/node_modules:/opt/mcp/node_modules`,
      );
    };
    if (separator <= 0) return fail('no ":" between the host folder and the sandbox folder');
    const mount = { hostPath: path.resolve(raw.slice(0, separator)), sandboxPath: raw.slice(separator + 1) };
    const problem = readOnlyMountProblem(mount);
    if (problem !== undefined) return fail(problem);
    let isFolder = false;
    try {
      isFolder = statSync(mount.hostPath).isDirectory();
    } catch {
      // Missing: said below.
    }
    if (!isFolder) return fail(`${mount.hostPath} is not a folder on this host`);
    return mount;
  });
}

/** The sandbox servers workers use: `AGENTS_SANDBOX_URLS` with its token, or none. */
export async function configuredSandboxes(config: AgentsConfig): Promise<SandboxEndpoint[]> {
  if (config.sandbox.urls.length === 0) return [];
  const token = await loadOrCreateToken(sandboxTokenFile(config.home), config.sandbox.token);
  return config.sandbox.urls.map((url) => ({ url, token }));
}

/**
 * Starts a sandbox server in this process on loopback, for `agents dev` when no sandbox servers are
 * configured; undefined (with the reason printed) when bubblewrap is unusable.
 */
export async function startLocalSandbox(
  context: CommandContext,
  port: number,
): Promise<{ server: SandboxServer; endpoint: SandboxEndpoint } | undefined> {
  const check = await checkBubblewrap();
  if (!check.usable) {
    context.print(
      `No sandbox: bubblewrap is not usable (${check.reason}); tool calls will fail until it is.`,
    );
    return undefined;
  }
  const token = await loadOrCreateToken(sandboxTokenFile(context.config.home), context.config.sandbox.token);
  const { totals } = context.config.sandbox;
  const network = sandboxNetwork(context);
  const server = new SandboxServer({
    root: context.config.sandbox.root,
    token,
    lanes: DEFAULT_SANDBOX_LANES,
    runTool: (call, workspace, signal) =>
      runSandboxTool(call, workspace, signal, 'bubblewrap', totals, network),
    workspaceLimitBytes: totals.diskQuotaBytes,
    mcp: { isolation: 'bubblewrap', totals, network },
  });
  const bound = await server.listen(port);
  return { server, endpoint: { url: `http://127.0.0.1:${bound}`, token } };
}

/**
 * The way out of a sandbox server's sandboxes: its network proxies, with the operator's
 * `AGENTS_SANDBOX_ALLOW_CIDRS`. Says so at start when the relay the network needs is missing, or
 * when ranges that are refused by default are let through.
 */
function sandboxNetwork(context: CommandContext): NetworkEgress {
  const { root, allowCidrs = [] } = context.config.sandbox;
  const problem = relayProblem();
  if (problem !== undefined) context.print(`Note: ${problem}`);
  if (allowCidrs.length > 0) {
    context.print(
      `Network: sandboxed commands may also reach ${allowCidrs.join(', ')} (AGENTS_SANDBOX_ALLOW_CIDRS)`,
    );
  }
  return serverNetworkEgress(root, { allowCidrs, owner: sandboxHostIdentity() });
}

/**
 * `agents sandbox`: the sandbox server in the foreground, on loopback unless told otherwise. It
 * refuses to start without a usable bubblewrap unless `--unsafe-no-sandbox` is given; then `bash`
 * runs on the host (no isolation; absolute `/workspace/...` paths do not map) and the stateful tools
 * and stdio MCP servers are refused. Where bubblewrap is usable the flag changes nothing.
 */
export async function sandboxCommand(context: CommandContext): Promise<void> {
  const port =
    numberOption(context, 'port', z.number().int().min(0).max(65_535)) ?? context.config.sandbox.port;
  const lanes = numberOption(context, 'lanes', z.number().int().min(1).max(1024)) ?? DEFAULT_SANDBOX_LANES;
  const host = text(context, 'host') ?? '127.0.0.1';
  const unsafeNoSandbox = flag(context, 'unsafe-no-sandbox');
  const totals = sandboxTotalsOptions(context);
  const readOnlyMounts = mcpMountOptions(context);
  const check = await checkBubblewrap();
  let isolation: SandboxIsolation = 'bubblewrap';
  if (!check.usable) {
    if (!unsafeNoSandbox) {
      throw new AgentsError(
        'sandbox_unavailable',
        `bubblewrap is not usable (${check.reason}): install it (Debian: apt-get install bubblewrap) and allow unprivileged user namespaces, or pass --unsafe-no-sandbox to run tool calls unsandboxed on this host`,
      );
    }
    isolation = 'none';
    context.print(
      `WARNING: bubblewrap is not usable (${check.reason}); running tool calls UNSANDBOXED on this host because of --unsafe-no-sandbox: commands see the host's files, processes and network, absolute /workspace/... paths do not map to the workspace, and bash_stateful, tmux and stdio MCP servers are refused`,
    );
  } else if (unsafeNoSandbox) {
    context.print(
      'Note: bubblewrap is usable, so --unsafe-no-sandbox changes nothing: tool calls run in bubblewrap',
    );
  }
  const tokenFile = sandboxTokenFile(context.config.home);
  const token = await loadOrCreateToken(tokenFile, context.config.sandbox.token);
  const { root } = context.config.sandbox;
  const network = sandboxNetwork(context);
  const server = new SandboxServer({
    root,
    token,
    lanes,
    runTool: (call, workspace, signal) => runSandboxTool(call, workspace, signal, isolation, totals, network),
    workspaceLimitBytes: totals.diskQuotaBytes,
    mcp: { isolation, totals, network, readOnlyMounts },
  });
  const bound = await server.listen(port, host);
  const mode = isolation === 'none' ? ' (UNSANDBOXED)' : '';
  context.print(
    `Sandbox server on http://${formatHostPort(host, bound)}${mode}: ${lanes} lanes, workspaces in ${root}`,
  );
  context.print(
    `Totals: ${formatBytes(totals.diskQuotaBytes)} of disk per workspace, ${formatBytes(totals.memoryLimitBytes)} of memory per call or session, ${totals.maxSessions} stateful sessions and ${totals.maxSessions} stdio MCP servers`,
  );
  for (const mount of readOnlyMounts) {
    context.print(`MCP servers see ${mount.hostPath} read-only at ${mount.sandboxPath}`);
  }
  context.print(
    context.config.sandbox.token === undefined
      ? `Bearer token in ${tokenFile}`
      : 'Bearer token from AGENTS_SANDBOX_TOKEN',
  );
  await new Promise<void>((resolve) => process.once('SIGINT', resolve).once('SIGTERM', resolve));
  const underWay = server.requestsInFlight;
  if (underWay > 0) {
    context.print(`Stopping: letting ${underWay} request(s) under way finish, for up to ${DRAIN_S} s`);
  }
  await server.close({ graceMs: DRAIN_S * 1000 });
}

/**
 * How long a stopping sandbox server lets the calls under way finish, so a restart reruns none of
 * them: within the 10 s that `docker compose stop` gives a container before SIGKILL.
 */
const DRAIN_S = 8;
