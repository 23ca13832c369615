import { describeZodError } from '../common/agent-input';
import {
  isStdioServer,
  mcpServerSchema,
  RUN_TOKEN_VARIABLE_PREFIX,
  runMcpServersSchema,
  type McpServer,
} from '../common/mcp-servers';
import { AgentsError } from './errors';

/**
 * `agents start --mcp NAME=COMMAND ARGS…` (a stdio server, run in the run's sandbox) and
 * `--mcp NAME=URL` (Streamable HTTP, called by the worker), with `--mcp-token NAME=VAR` naming the
 * worker's environment variable that holds NAME's bearer token and `--mcp-timeout NAME=SECONDS` a
 * server's call timeout.
 */

/** The forms `--mcp` accepts, as its errors list them. */
export const MCP_OPTION_FORMS = "NAME='COMMAND ARGS…' (stdio, in the sandbox) or NAME=http(s)://URL";

/**
 * Splits a command line into words as a POSIX shell would for plain words, 'single' and "double"
 * quotes and backslashes, and nothing more: no variables, globs or operators, so the command runs
 * exactly as written.
 */
export function splitCommandWords(line: string): string[] {
  const words: string[] = [];
  /** The word being read; undefined between words (a quoted empty word is '') */
  let word: string | undefined;
  let quote: "'" | '"' | undefined;
  const add = (characters: string) => (word = (word ?? '') + characters);
  for (let index = 0; index < line.length; index += 1) {
    const character = line[index]!;
    const next = line[index + 1] ?? '';
    if (quote === "'") {
      if (character === "'") quote = undefined;
      else add(character);
    } else if (quote === '"') {
      if (character === '"') quote = undefined;
      else if (character === '\\' && ['"', '\\', '$', '`'].includes(next)) add(line[++index]!);
      else add(character);
    } else if (character === "'" || character === '"') {
      quote = character;
      add('');
    } else if (character === '\\' && next !== '') {
      add(line[++index]!);
    } else if (/\s/.test(character)) {
      if (word !== undefined) words.push(word);
      word = undefined;
    } else {
      add(character);
    }
  }
  if (quote !== undefined) throw new Error(`an unclosed ${quote} quote`);
  if (word !== undefined) words.push(word);
  return words;
}

/** `NAME=VALUE` split at its first `=`, or a one-line error naming the option and its forms. */
function nameAndValue(option: string, raw: string, forms: string): { name: string; value: string } {
  const equals = raw.indexOf('=');
  if (equals <= 0 || equals === raw.length - 1) {
    throw new AgentsError('invalid_argument', `--${option} '${raw}'. Accepted: ${forms}`);
  }
  return { name: raw.slice(0, equals), value: raw.slice(equals + 1).trim() };
}

/** The run's MCP servers from its `--mcp`, `--mcp-token` and `--mcp-timeout` options. */
export function mcpServersOption(
  mcp: readonly string[],
  tokens: readonly string[] = [],
  timeouts: readonly string[] = [],
): McpServer[] {
  const servers = mcp.map((raw): McpServer => {
    const { name, value } = nameAndValue('mcp', raw, MCP_OPTION_FORMS);
    let candidate: unknown;
    if (/^https?:\/\//i.test(value)) {
      candidate = { name, url: value };
    } else {
      let command: string[];
      try {
        command = splitCommandWords(value);
      } catch (error) {
        throw new AgentsError('invalid_argument', `--mcp '${raw}': ${(error as Error).message}`);
      }
      candidate = { name, command };
    }
    const parsed = mcpServerSchema.safeParse(candidate);
    if (!parsed.success) {
      throw new AgentsError(
        'invalid_argument',
        `--mcp '${raw}': ${describeZodError(parsed.error)}. Accepted: ${MCP_OPTION_FORMS}`,
      );
    }
    return parsed.data;
  });
  const byName = new Map(servers.map((server) => [server.name, server]));
  for (const raw of tokens) {
    const { name, value } = nameAndValue('mcp-token', raw, `NAME=${RUN_TOKEN_VARIABLE_PREFIX}…`);
    const server = byName.get(name);
    if (server === undefined || isStdioServer(server)) {
      throw new AgentsError(
        'invalid_argument',
        `--mcp-token '${raw}': no HTTP server ${name} among the --mcp options`,
      );
    }
    server.bearerTokenEnv = value;
  }
  for (const raw of timeouts) {
    const { name, value } = nameAndValue('mcp-timeout', raw, 'NAME=SECONDS');
    const server = byName.get(name);
    if (server === undefined) {
      throw new AgentsError(
        'invalid_argument',
        `--mcp-timeout '${raw}': no server ${name} among the --mcp options`,
      );
    }
    server.timeoutS = Number(value);
  }
  const parsed = runMcpServersSchema.safeParse(servers);
  if (!parsed.success) {
    throw new AgentsError('invalid_argument', `--mcp: ${describeZodError(parsed.error)}`);
  }
  return parsed.data;
}
