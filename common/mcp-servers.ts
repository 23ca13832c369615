import { z } from 'zod';

/**
 * The Model Context Protocol servers a run takes tools from, as its input and a worker's
 * configuration name them, and how their tools are named to models. Loadable by workflow code
 * (zod only): the run's input holds these.
 *
 * A stdio server is a command run inside the run's sandbox, on the sandbox server that holds the
 * run's workspace; a Streamable HTTP server is a URL the worker calls. A server's bearer token is
 * never part of a run: the run names an environment variable of the worker that holds it.
 */

/** What every MCP tool's name starts with, as models see it: `mcp__<server>__<tool>`. */
export const MCP_TOOL_PREFIX = 'mcp__';

/** A server's name: 1-32 characters of a-z, 0-9, "-" or single "_", starting with a letter or digit. */
export const MCP_SERVER_NAME_PATTERN = /^(?!.*__)[a-z0-9][a-z0-9_-]{0,31}$/;

/**
 * A tool's name as models accept it: providers take 1-64 characters of A-Z, a-z, 0-9, "_" and "-"
 * for a function's name, and a server's tool whose prefixed name does not fit is not offered.
 */
export const MODEL_TOOL_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** The prefix run-level token variables must have, so a run can only name variables meant for MCP. */
export const RUN_TOKEN_VARIABLE_PREFIX = 'AGENTS_MCP_TOKEN_';

/** Seconds one MCP call may take unless its server says otherwise; progress notifications restart it. */
export const DEFAULT_MCP_CALL_TIMEOUT_S = 60;
/** Seconds a call may take at most, however often its server reports progress. */
export const MAX_MCP_CALL_TIMEOUT_S = 600;

const serverNameSchema = z
  .string()
  .regex(
    MCP_SERVER_NAME_PATTERN,
    'must be 1-32 characters of a-z, 0-9, "-" or "_" (never two "_" in a row), starting with a letter or digit',
  );

const timeoutSchema = z.number().int().min(1).max(MAX_MCP_CALL_TIMEOUT_S).optional();

/** A server run as a command inside the run's sandbox, speaking MCP on its stdin and stdout. */
export const mcpStdioServerSchema = z
  .object({
    name: serverNameSchema,
    /** The program and its arguments, run in the sandbox (its /usr, its workspace at /workspace). */
    command: z
      .array(
        z
          .string()
          .min(1)
          .max(4096)
          .refine((part) => !part.includes('\0'), 'must not contain a NUL byte'),
      )
      .min(1, 'needs a program')
      .max(64),
    timeoutS: timeoutSchema,
  })
  .strict();
export type McpStdioServer = z.infer<typeof mcpStdioServerSchema>;

/** A server reached over Streamable HTTP from the worker. */
export const mcpHttpServerSchema = z
  .object({
    name: serverNameSchema,
    url: z
      .string()
      .max(2048)
      .refine(
        (text) => /^https?:\/\//i.test(text) && URL.canParse(text),
        'must be an http:// or https:// URL',
      ),
    /** The worker's environment variable holding the bearer token; the token itself is never in a run. */
    bearerTokenEnv: z
      .string()
      .regex(/^[A-Z_][A-Z0-9_]{0,127}$/, 'must be an environment variable name (A-Z, 0-9, "_")')
      .optional(),
    timeoutS: timeoutSchema,
  })
  .strict();
export type McpHttpServer = z.infer<typeof mcpHttpServerSchema>;

export const mcpServerSchema = z.union([mcpStdioServerSchema, mcpHttpServerSchema]);
export type McpServer = z.infer<typeof mcpServerSchema>;

/** Whether a server runs in the sandbox (stdio) rather than over HTTP. */
export function isStdioServer(server: McpServer): server is McpStdioServer {
  return 'command' in server;
}

/** Issues for a server list that names a server twice. */
function requireDistinctNames(servers: readonly McpServer[], context: z.RefinementCtx): void {
  const seen = new Set<string>();
  for (const [index, server] of servers.entries()) {
    if (seen.has(server.name)) {
      context.addIssue({ code: 'custom', path: [index, 'name'], message: `names ${server.name} twice` });
    }
    seen.add(server.name);
  }
}

/** A worker's own servers (`AGENTS_MCP_SERVERS`), which its operator chose: any token variable. */
export const workerMcpServersSchema = z.array(mcpServerSchema).max(32).superRefine(requireDistinctNames);

/**
 * A run's servers: distinct names, and token variables with {@link RUN_TOKEN_VARIABLE_PREFIX}, so a
 * person who may start runs cannot have the worker send another of its secrets (a model provider's
 * key) to a URL of their choosing.
 */
export const runMcpServersSchema = z
  .array(mcpServerSchema)
  .max(16, 'at most 16 MCP servers per run')
  .superRefine((servers, context) => {
    requireDistinctNames(servers, context);
    for (const [index, server] of servers.entries()) {
      if (
        !isStdioServer(server) &&
        server.bearerTokenEnv !== undefined &&
        !server.bearerTokenEnv.startsWith(RUN_TOKEN_VARIABLE_PREFIX)
      ) {
        context.addIssue({
          code: 'custom',
          path: [index, 'bearerTokenEnv'],
          message: `a run's token variable must start with ${RUN_TOKEN_VARIABLE_PREFIX} (got ${server.bearerTokenEnv})`,
        });
      }
    }
  });

/** The name models call a server's tool by. */
export function mcpToolName(server: string, tool: string): string {
  return `${MCP_TOOL_PREFIX}${server}__${tool}`;
}

/** The server and tool a prefixed name stands for, or undefined when it is not an MCP tool's name. */
export function parseMcpToolName(name: string): { server: string; tool: string } | undefined {
  if (!name.startsWith(MCP_TOOL_PREFIX)) return undefined;
  const rest = name.slice(MCP_TOOL_PREFIX.length);
  const separator = rest.indexOf('__');
  if (separator <= 0 || separator === rest.length - 2) return undefined;
  const server = rest.slice(0, separator);
  if (!MCP_SERVER_NAME_PATTERN.test(server)) return undefined;
  return { server, tool: rest.slice(separator + 2) };
}

/**
 * The servers of one run: the worker's, then the run's own, a run's server replacing the worker's
 * of the same name.
 */
export function mergeMcpServers(worker: readonly McpServer[], run: readonly McpServer[]): McpServer[] {
  const names = new Set(run.map((server) => server.name));
  return [...worker.filter((server) => !names.has(server.name)), ...run];
}
