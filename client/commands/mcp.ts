import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { AgentsError } from '../errors';
import { createAgentsMcpServer } from '../mcp-server';
import { printNews, type CommandContext } from './command-context';

/** The command that serves the agents system to MCP clients: `agents mcp`. */

/**
 * Takes standard output for the protocol alone: the transport gets a stream of its own onto it,
 * and everything else that writes to `process.stdout` (a `console.log` in some library, a line a
 * command's helper prints) goes to stderr instead, where it cannot corrupt a message.
 */
function claimStdoutForProtocol(): Writable {
  const stdout = process.stdout;
  const writeToStdout = stdout.write.bind(stdout);
  const protocol = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      writeToStdout(chunk, callback);
    },
  });
  stdout.write = process.stderr.write.bind(process.stderr);
  return protocol;
}

/** This package's version, reported to clients in the handshake. */
function packageVersion(): string {
  const file = path.join(__dirname, '..', '..', 'package.json');
  return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
}

/**
 * `agents mcp`: an MCP server on standard input and output until the client closes its end. It
 * connects to Temporal as the other commands do (the embedded dev server by default, or
 * TEMPORAL_ADDRESS), its news on stderr; see client/mcp-server.ts for its tools.
 */
export async function mcpCommand(context: CommandContext): Promise<void> {
  if (context.positionals.length > 0) {
    throw new AgentsError('invalid_argument', `Unexpected argument '${context.positionals[0]}': agents mcp`);
  }
  const protocol = claimStdoutForProtocol();
  const mcp = createAgentsMcpServer({ config: context.config, version: packageVersion(), news: printNews });
  const transport = new StdioServerTransport(process.stdin, protocol);
  // The client ends the session by closing our standard input (the MCP stdio transport's shutdown).
  const ended = new Promise<void>((resolve) => {
    process.stdin.once('end', resolve);
    process.stdin.once('close', resolve);
    transport.onclose = resolve;
  });
  await mcp.server.connect(transport);
  try {
    await ended;
  } finally {
    await mcp.close();
  }
}
