import path from 'node:path';
import { z } from 'zod';
import { describeZodError } from '../../common/agent-input';
import { loadToolModule, ToolDefinitionError } from '../../sandbox/external-tool';
import { loadOrCreateToken } from '../../sandbox/token';
import { DEFAULT_TOOL_SERVER_CONCURRENCY, ToolServer } from '../../sandbox/tool-server';
import { AgentsError } from '../errors';
import { numberOption, text, type CommandContext } from './command-context';

/** Default port of `agents tool-server`. */
export const DEFAULT_TOOL_SERVER_PORT = 7400;

/** Where the tool server's generated token is kept when `AGENTS_TOOL_SERVER_TOKEN` is not set. */
export function toolServerTokenFile(home: string): string {
  return path.join(home, 'tool-server.token');
}

const USAGE = 'agents tool-server --tools <module> [--port P] [--host H] [--concurrency N]';

const environmentSchema = z.object({
  AGENTS_TOOL_SERVER_PORT: z.coerce.number().int().min(1).max(65_535).optional(),
  AGENTS_TOOL_SERVER_TOKEN: z.string().min(1).optional(),
});

/**
 * `agents tool-server`: serves the tools of a user's module to the workers in the foreground, on
 * loopback unless told otherwise, until SIGINT or SIGTERM. The bearer token comes from
 * `AGENTS_TOOL_SERVER_TOKEN` (several machines share one) or a file generated under `$AGENTS_HOME`.
 */
export async function toolServerCommand(context: CommandContext): Promise<void> {
  if (context.positionals.length > 0)
    throw new AgentsError('invalid_argument', `Unexpected argument '${context.positionals[0]}': ${USAGE}`);
  const modulePath = text(context, 'tools');
  if (modulePath === undefined) throw new AgentsError('invalid_argument', `--tools is required: ${USAGE}`);
  const nonEmpty = Object.fromEntries(Object.entries(process.env).filter(([, value]) => value !== ''));
  const environment = environmentSchema.safeParse(nonEmpty);
  if (!environment.success) {
    throw new AgentsError(
      'invalid_environment',
      `Invalid environment: ${describeZodError(environment.error)}`,
    );
  }
  const port =
    numberOption(context, 'port', z.number().int().min(0).max(65_535)) ??
    environment.data.AGENTS_TOOL_SERVER_PORT ??
    DEFAULT_TOOL_SERVER_PORT;
  const host = text(context, 'host') ?? '127.0.0.1';
  const concurrency =
    numberOption(context, 'concurrency', z.number().int().min(1).max(1024)) ??
    DEFAULT_TOOL_SERVER_CONCURRENCY;

  let tools;
  try {
    tools = loadToolModule(modulePath);
  } catch (error) {
    if (error instanceof ToolDefinitionError)
      throw new AgentsError('invalid_argument', error.message, { cause: error });
    throw error;
  }
  const tokenFile = toolServerTokenFile(context.config.home);
  const token = await loadOrCreateToken(tokenFile, environment.data.AGENTS_TOOL_SERVER_TOKEN);
  const server = new ToolServer({ token, tools, concurrency });
  try {
    const bound = await server.listen(port, host);
    context.print(
      `Tool server on http://${host}:${bound}: ${tools.map((tool) => tool.name).join(', ')} (at most ${concurrency} at once)`,
    );
    context.print(
      environment.data.AGENTS_TOOL_SERVER_TOKEN === undefined
        ? `Bearer token in ${tokenFile}`
        : 'Bearer token from AGENTS_TOOL_SERVER_TOKEN',
    );
    await new Promise<void>((resolve) => process.once('SIGINT', resolve).once('SIGTERM', resolve));
  } finally {
    await server.close();
  }
}
