import os from 'node:os';
import path from 'node:path';
import { loadClientConnectConfig } from '@temporalio/envconfig';
import type { NativeConnectionOptions } from '@temporalio/worker';
import { z } from 'zod';
import { describeZodError } from '../common/agent-input';
import { hostPortSchema } from '../common/host-port';
import { workerMcpServersSchema, type McpServer } from '../common/mcp-servers';
import { DEFAULT_TEMPORAL_PORT, DEFAULT_UI_PORT, DEFAULT_WORKSPACE_LIMIT_BYTES } from '../common/constants';
import { BYTE_SIZE_FORMS, parseByteSize } from '../sandbox/byte-size';
import { DEFAULT_SANDBOX_TOTALS, type SandboxTotals } from '../sandbox/sandbox-watchdog';
import { isCidrRange } from '../sandbox/network-addresses';
import { AgentsError } from './errors';

/** The local dev server the CLI starts or reuses when no `TEMPORAL_ADDRESS` is set. */
export interface EmbeddedTemporal {
  kind: 'embedded';
  address: string;
  port: number;
  uiPort: number;
  namespace: string;
  /** `TEMPORAL_CLI`, when set: the `temporal` binary to use instead of the one on `PATH`. */
  binary: string | undefined;
}

/** A Temporal cluster reached through `TEMPORAL_ADDRESS` and the rest of the standard environment. */
export interface ExternalTemporal {
  kind: 'external';
  address: string;
  namespace: string;
  connectionOptions: NativeConnectionOptions;
  /** Base URL of the cluster's Web UI (`AGENTS_UI_URL`), used for links. */
  uiUrl: string | undefined;
  /**
   * How long `agents worker` waits for a cluster that does not answer before it fails
   * (`AGENTS_WORKER_CONNECT_TIMEOUT_S`, seconds; 0 waits for ever).
   */
  workerConnectTimeoutS: number;
}

/** How long a worker waits for its cluster by default: a machine's boot, compose's start order. */
export const DEFAULT_WORKER_CONNECT_TIMEOUT_S = 300;

export interface AgentsConfig {
  /** `$AGENTS_HOME`: the dev server's database, user templates, logs, caches. */
  home: string;
  temporal: EmbeddedTemporal | ExternalTemporal;
  sandbox: {
    /** `AGENTS_SANDBOX_URLS`: the sandbox servers workers send tool calls to. */
    urls: string[];
    /** `AGENTS_SANDBOX_TOKEN`, else the token file under `$AGENTS_HOME`. */
    token: string | undefined;
    /** Port of `agents sandbox` (`AGENTS_SANDBOX_PORT`). */
    port: number;
    /** Where a sandbox server keeps workspaces and results (`AGENTS_SANDBOX_ROOT`). */
    root: string;
    /**
     * What a sandbox server holds each trajectory to: `AGENTS_SANDBOX_DISK_QUOTA`,
     * `AGENTS_SANDBOX_MEMORY_LIMIT` (sizes such as `2GiB`), `AGENTS_SANDBOX_MAX_SESSIONS`.
     */
    totals: SandboxTotals;
    /**
     * `AGENTS_SANDBOX_ALLOW_CIDRS`: comma-separated CIDR ranges the network proxy lets sandboxed
     * commands reach although they are loopback, private or this host's own; none when unset.
     */
    allowCidrs?: string[];
  };
  /** The external tool server workers send other tools to (`AGENTS_TOOL_SERVER_URL`), if any. */
  toolServer: { url: string | undefined; token: string | undefined };
  /**
   * The MCP servers every run on this worker has (`AGENTS_MCP_SERVERS`, a JSON array of
   * `{ name, command }` or `{ name, url, bearerTokenEnv? }`).
   */
  mcpServers: McpServer[];
  /** Largest folder or repository `agents start --workspace/--repo` packs (`AGENTS_WORKSPACE_LIMIT`). */
  workspaceLimitBytes: number;
}

/** Default port of `agents sandbox`. */
export const DEFAULT_SANDBOX_PORT = 7300;

/**
 * Where a sandbox server keeps its workspaces: under `$AGENTS_HOME`, so each home has its own and
 * they are as private as the rest of it. Run as root, the server lets the unprivileged user
 * commands start as traverse the folders above them, and only that user (`sandbox/sandbox-root.ts`).
 */
export function defaultSandboxRoot(home: string): string {
  return path.join(home, 'sandbox');
}

/** Where the embedded default keeps the sandbox server's generated token. */
export function sandboxTokenFile(home: string): string {
  return path.join(home, 'sandbox.token');
}

const port = z.coerce.number().int().min(1).max(65_535);

/** A size in bytes as an operator writes it (`2GiB`, `500MiB`, `1073741824`); see `parseByteSize`. */
export const byteSizeSchema = z.string().transform((value, context) => {
  const bytes = parseByteSize(value);
  if (bytes === undefined) {
    context.addIssue({ code: 'custom', message: `must be ${BYTE_SIZE_FORMS}, not '${value}'` });
    return z.NEVER;
  }
  return bytes;
});

/** A comma-separated list in one variable, its items trimmed and empty ones dropped. */
const commaSeparated = z.string().transform((value) =>
  value
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean),
);

/** Live stateful sessions a sandbox server allows. */
export const maxSessionsSchema = z.number().int().min(1).max(4096);
const environmentSchema = z.object({
  AGENTS_HOME: z.string().min(1).optional(),
  AGENTS_TEMPORAL_PORT: port.optional(),
  AGENTS_UI_PORT: port.optional(),
  AGENTS_UI_URL: z.url().optional(),
  TEMPORAL_ADDRESS: hostPortSchema()
    .transform(({ address }) => address)
    .optional(),
  TEMPORAL_NAMESPACE: z.string().min(1).optional(),
  AGENTS_WORKER_CONNECT_TIMEOUT_S: z.coerce
    .number()
    .int()
    .min(0)
    .max(7 * 24 * 3600, 'must be at most a week of seconds (0 waits for ever)')
    .optional(),
  TEMPORAL_CLI: z.string().min(1).optional(),
  AGENTS_SANDBOX_URLS: commaSeparated
    .pipe(z.array(z.url({ protocol: /^https?$/, error: 'must be comma-separated http(s) URLs' })))
    .optional(),
  AGENTS_SANDBOX_TOKEN: z.string().min(1).optional(),
  AGENTS_SANDBOX_PORT: port.optional(),
  AGENTS_SANDBOX_ROOT: z.string().min(1).optional(),
  AGENTS_SANDBOX_DISK_QUOTA: byteSizeSchema.optional(),
  AGENTS_SANDBOX_MEMORY_LIMIT: byteSizeSchema.optional(),
  AGENTS_SANDBOX_MAX_SESSIONS: z.coerce.number().pipe(maxSessionsSchema).optional(),
  AGENTS_SANDBOX_ALLOW_CIDRS: commaSeparated
    .pipe(
      z.array(
        z.string().refine(isCidrRange, {
          error: 'must be comma-separated CIDR ranges, such as 10.213.0.0/24,fd12::/64',
        }),
      ),
    )
    .optional(),
  AGENTS_TOOL_SERVER_URL: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
  AGENTS_TOOL_SERVER_TOKEN: z.string().min(1).optional(),
  AGENTS_WORKSPACE_LIMIT: byteSizeSchema.optional(),
  AGENTS_MCP_SERVERS: z
    .string()
    .transform((text, context) => {
      try {
        return JSON.parse(text) as unknown;
      } catch {
        context.addIssue({ code: 'custom', message: 'must be a JSON array of MCP servers' });
        return z.NEVER;
      }
    })
    .pipe(workerMcpServersSchema)
    .optional(),
});

/**
 * Reads the configuration from the environment. Connection settings for an external cluster
 * (namespace, TLS, API key, profiles) are read by `@temporalio/envconfig`, exactly as Temporal's
 * own tools read them.
 */
export function loadConfig(environment: NodeJS.ProcessEnv = process.env): AgentsConfig {
  const nonEmpty = Object.fromEntries(Object.entries(environment).filter(([, value]) => value !== ''));
  const parsed = environmentSchema.safeParse(nonEmpty);
  if (!parsed.success) {
    throw new AgentsError('invalid_environment', `Invalid environment: ${describeZodError(parsed.error)}`);
  }
  const env = parsed.data;
  const home = path.resolve(env.AGENTS_HOME ?? path.join(os.homedir(), '.durable-agents'));
  const sandbox = {
    urls: env.AGENTS_SANDBOX_URLS ?? [],
    token: env.AGENTS_SANDBOX_TOKEN,
    port: env.AGENTS_SANDBOX_PORT ?? DEFAULT_SANDBOX_PORT,
    root: path.resolve(env.AGENTS_SANDBOX_ROOT ?? defaultSandboxRoot(home)),
    totals: {
      diskQuotaBytes: env.AGENTS_SANDBOX_DISK_QUOTA ?? DEFAULT_SANDBOX_TOTALS.diskQuotaBytes,
      memoryLimitBytes: env.AGENTS_SANDBOX_MEMORY_LIMIT ?? DEFAULT_SANDBOX_TOTALS.memoryLimitBytes,
      maxSessions: env.AGENTS_SANDBOX_MAX_SESSIONS ?? DEFAULT_SANDBOX_TOTALS.maxSessions,
    },
    ...(env.AGENTS_SANDBOX_ALLOW_CIDRS === undefined ? {} : { allowCidrs: env.AGENTS_SANDBOX_ALLOW_CIDRS }),
  };
  const toolServer = { url: env.AGENTS_TOOL_SERVER_URL, token: env.AGENTS_TOOL_SERVER_TOKEN };
  const mcpServers = env.AGENTS_MCP_SERVERS ?? [];
  const workspaceLimitBytes = env.AGENTS_WORKSPACE_LIMIT ?? DEFAULT_WORKSPACE_LIMIT_BYTES;
  if (env.TEMPORAL_ADDRESS === undefined) {
    const temporalPort = env.AGENTS_TEMPORAL_PORT ?? DEFAULT_TEMPORAL_PORT;
    return {
      home,
      sandbox,
      toolServer,
      mcpServers,
      workspaceLimitBytes,
      temporal: {
        kind: 'embedded',
        address: `127.0.0.1:${temporalPort}`,
        port: temporalPort,
        uiPort: env.AGENTS_UI_PORT ?? DEFAULT_UI_PORT,
        namespace: env.TEMPORAL_NAMESPACE ?? 'default',
        binary: env.TEMPORAL_CLI,
      },
    };
  }
  let loaded;
  try {
    loaded = loadClientConnectConfig({ overrideEnvVars: nonEmpty as Record<string, string> });
  } catch (error) {
    throw new AgentsError('invalid_environment', `Invalid Temporal client configuration: ${String(error)}`, {
      cause: error,
    });
  }
  return {
    home,
    sandbox,
    toolServer,
    mcpServers,
    workspaceLimitBytes,
    temporal: {
      kind: 'external',
      address: env.TEMPORAL_ADDRESS,
      namespace: loaded.namespace ?? env.TEMPORAL_NAMESPACE ?? 'default',
      connectionOptions: { ...loaded.connectionOptions, address: env.TEMPORAL_ADDRESS },
      uiUrl: env.AGENTS_UI_URL,
      workerConnectTimeoutS: env.AGENTS_WORKER_CONNECT_TIMEOUT_S ?? DEFAULT_WORKER_CONNECT_TIMEOUT_S,
    },
  };
}

/** Link to a run in the Web UI, when the UI's address is known. */
export function webUiRunUrl(config: AgentsConfig, workflowId: string, runId: string): string | undefined {
  const base =
    config.temporal.kind === 'embedded'
      ? `http://localhost:${config.temporal.uiPort}`
      : config.temporal.uiUrl;
  if (base === undefined) return undefined;
  const namespace = encodeURIComponent(config.temporal.namespace);
  return `${base.replace(/\/$/, '')}/namespaces/${namespace}/workflows/${encodeURIComponent(workflowId)}/${runId}/history`;
}
