import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { z } from 'zod';
import { AGENT_STATES, type AgentRunResult } from '../../common/agent-run-types';
import { terminalSafeJson } from '../../common/display-text';
import type { AgentsClient } from '../agents-client';
import { AgentsError } from '../errors';
import { formatListings, formatRecord, formatStatus } from '../format';
import { exportRun } from '../audit/export-run';
import { flag, numberOption, requireName, text, withClient, type CommandContext } from './command-context';

/** The commands that read runs: `list`, `status`, `log`, `watch` and `export`. */

/** Prints the one line that says how a run ended. */
function printResult(context: CommandContext, name: string, result: AgentRunResult): void {
  const { usage } = result;
  context.print(
    `Agent ${name} ended: ${result.exitReason} after ${result.iterations} iteration(s), ${usage.inputTokens} tokens in, ${usage.outputTokens} out, $${usage.costUsd.toFixed(4)}`,
  );
}

/** Follows run `name` live, printing its iteration records and state changes, until it ends. */
export async function watchRun(
  context: CommandContext,
  agents: AgentsClient,
  name: string,
): Promise<AgentRunResult> {
  const result = await agents.watch(name, {
    onRecord: (record) => context.print(formatRecord(record)),
    // Running and sleeping alternate every iteration; the other states are news.
    onState: (state) => {
      if (state !== 'running' && state !== 'sleeping' && state !== 'stopped') context.print(`  · ${state}`);
    },
  });
  printResult(context, name, result);
  return result;
}

/** `agents export <name> [--format jsonl|md] [--output FILE]`: the run's whole story from its history. */
export async function exportCommand(context: CommandContext): Promise<void> {
  const name = requireName(context, 'agents export <name> [--format jsonl|md] [--output FILE]');
  const format = text(context, 'format') ?? 'jsonl';
  if (format !== 'jsonl' && format !== 'md') {
    throw new AgentsError('invalid_argument', `--format '${format}'. Accepted: jsonl, md`);
  }
  const output = text(context, 'output');
  await withClient(
    context,
    async (_agents, session) => {
      // Resolved before the file is created, so an unknown agent leaves no empty file behind.
      const chunks = await exportRun(session.client, name, { format });
      const sink = output === undefined ? process.stdout : createWriteStream(output);
      for await (const chunk of chunks) {
        if (!sink.write(chunk)) await once(sink, 'drain');
      }
      if (output !== undefined) {
        await new Promise<void>((resolve, reject) =>
          sink.end((error?: Error | null) => (error ? reject(error) : resolve())),
        );
        context.print(`Wrote the ${format} export of agent ${name} to ${output}`);
      }
      // On stdout the export is the output: news about the server goes to stderr.
    },
    output === undefined ? (message) => process.stderr.write(`${message}\n`) : context.print,
  );
}

/** `agents list [--state S]` */
export async function listCommand(context: CommandContext): Promise<void> {
  const state = text(context, 'state');
  if (state !== undefined && !(AGENT_STATES as readonly string[]).includes(state)) {
    throw new AgentsError(
      'invalid_argument',
      `Unknown --state '${state}'. Accepted: ${AGENT_STATES.join(', ')}`,
    );
  }
  await withClient(context, async (agents) => {
    const listings = await agents.list(state === undefined ? {} : { state });
    if (flag(context, 'json')) context.print(terminalSafeJson(listings, 2));
    else context.print(formatListings(listings));
  });
}

/** `agents status <name>` */
export async function statusCommand(context: CommandContext): Promise<void> {
  const name = requireName(context, 'agents status <name> [--json]');
  await withClient(context, async (agents) => {
    const status = await agents.status(name);
    context.print(flag(context, 'json') ? terminalSafeJson(status, 2) : formatStatus(status));
  });
}

/** `agents log <name> [-n N]` */
export async function logCommand(context: CommandContext): Promise<void> {
  const name = requireName(context, 'agents log <name> [-n N] [--json]');
  const count = numberOption(context, 'lines', z.number().int().positive()) ?? 10;
  await withClient(context, async (agents) => {
    const { iteration } = await agents.status(name);
    const records = await agents.iterations(name, { from: Math.max(1, iteration - count + 1), limit: count });
    if (flag(context, 'json')) {
      for (const record of records) context.print(terminalSafeJson(record));
    } else {
      context.print(
        records.length === 0 ? `Agent ${name} has no iterations yet.` : records.map(formatRecord).join('\n'),
      );
    }
  });
}

/** `agents watch <name>` */
export async function watchCommand(context: CommandContext): Promise<void> {
  const name = requireName(context, 'agents watch <name>');
  await withClient(context, async (agents) => {
    await watchRun(context, agents, name);
  });
}
