import { once } from 'node:events';
import type { WriteStream } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { AGENT_STATES, type AgentStatus } from '../../common/agent-run-types';
import { terminalSafeJson } from '../../common/display-text';
import type { AgentsClient } from '../agents-client';
import type { AgentsConfig } from '../config';
import { AgentsError } from '../errors';
import { runExitCode, type RunEnding } from '../exit-codes';
import { formatListings, formatRecord, formatStatus } from '../format';
import { exportRun } from '../audit/export-run';
import { formatJsonl } from '../audit/jsonl-export';
import { followRun, isWatched, RunProgressText, runEnding } from '../run-progress';
import type { RunWorkspaceStatus } from '../workspace-reader';
import { flag, numberOption, requireName, text, withClient, type CommandContext } from './command-context';

/** The commands that read runs: `list`, `status`, `log`, `watch` and `export`. */

/**
 * Follows run `name` live from its history until it ends: its iteration records and state changes,
 * and inside each iteration every model turn and tool call as it happens. With `json`, each step is
 * one line of JSON (an entry of `agents export`'s jsonl) instead. Returns how the run ended.
 */
export async function watchRun(
  context: CommandContext,
  agents: AgentsClient,
  name: string,
  options: { json?: boolean } = {},
): Promise<RunEnding> {
  const handle = await agents.handleFor(name);
  const text = new RunProgressText(name);
  for await (const progress of followRun(agents.client, handle.workflowId)) {
    if (options.json === true) {
      if (isWatched(progress)) context.print(formatJsonl(progress.entry).trimEnd());
    } else {
      for (const line of text.lines(progress)) context.print(line);
    }
    if (progress.entry.kind === 'run_ended') return runEnding(progress.entry);
  }
  throw new AgentsError('not_found', `The history of agent ${name} ended without a close event`);
}

/** `agents export <name> [--format jsonl|md] [--output FILE]`: the run's whole story from its history. */
export async function exportCommand(context: CommandContext): Promise<void> {
  const name = requireName(context, 'agents export <name> [--format jsonl|md] [--output FILE]');
  const format = text(context, 'format') ?? 'jsonl';
  if (format !== 'jsonl' && format !== 'md') {
    throw new AgentsError('invalid_argument', `--format '${format}'. Accepted: jsonl, md`);
  }
  const output = text(context, 'output');
  await withClient(context, async (_agents, session) => {
    // Resolved before the file is created, so an unknown agent leaves no empty file behind.
    const chunks = await exportRun(session.client, name, { format });
    const sink = output === undefined ? process.stdout : await openOutputFile(output);
    for await (const chunk of chunks) {
      if (!sink.write(chunk)) await once(sink, 'drain');
    }
    if (output !== undefined) {
      await new Promise<void>((resolve, reject) =>
        sink.end((error?: Error | null) => (error ? reject(error) : resolve())),
      );
      context.print(`Wrote the ${format} export of agent ${name} to ${output}`);
    }
    // On stdout the export is the output: news about the server goes to stderr, as for every command.
  });
}

/**
 * Opens `--output FILE` for writing, failing with one line when it cannot be: a folder that does
 * not exist, a folder given as the file, no permission.
 */
async function openOutputFile(file: string): Promise<WriteStream> {
  let handle: FileHandle;
  try {
    handle = await open(file, 'w');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT'
        ? `no such folder ${path.dirname(path.resolve(file))}`
        : code === 'EISDIR'
          ? 'is a folder'
          : code === 'EACCES'
            ? 'permission denied'
            : (error as Error).message;
    throw new AgentsError('invalid_argument', `--output '${file}': ${reason}`, { cause: error });
  }
  return handle.createWriteStream();
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

/**
 * What `agents status` shows of run `name`: the `status` query's answer with the run's workspace
 * (`json`, as `--json` prints it) and the same as lines for a person (`text`, every text from the
 * run neutralized). `agents mcp` answers its `status` tool with it.
 */
export async function statusReport(
  config: AgentsConfig,
  agents: AgentsClient,
  name: string,
): Promise<{ json: AgentStatus & { workspace: RunWorkspaceStatus }; text: string }> {
  const status = await agents.status(name);
  // Loaded here: reading the workspace takes the sandbox client (undici) and the workspace
  // commands' formatting, which `list`, `log`, `watch` and `export` never need, and which `status`
  // needs only once it has connected.
  /* eslint-disable @typescript-eslint/no-require-imports -- see above */
  const { runWorkspaceStatus } = require('../workspace-reader') as typeof import('../workspace-reader');
  const { formatWorkspaceStatus } = require('./workspace') as typeof import('./workspace');
  /* eslint-enable @typescript-eslint/no-require-imports */
  const workspace = await runWorkspaceStatus(config, agents, name);
  return {
    json: { ...status, workspace },
    text: `${formatStatus(status)}\n${formatWorkspaceStatus(workspace)}`,
  };
}

/** `agents status <name>` */
export async function statusCommand(context: CommandContext): Promise<void> {
  const name = requireName(context, 'agents status <name> [--json]');
  await withClient(context, async (agents) => {
    const report = await statusReport(context.config, agents, name);
    context.print(flag(context, 'json') ? terminalSafeJson(report.json, 2) : report.text);
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

/**
 * `agents watch <name> [--json]`: follows the run to its end; exits with the code of how it ended
 * (0 for the normal ends, see `RUN_EXIT_CODES`).
 */
export async function watchCommand(context: CommandContext): Promise<number> {
  const name = requireName(context, 'agents watch <name> [--json]');
  return withClient(context, async (agents) =>
    runExitCode(await watchRun(context, agents, name, { json: flag(context, 'json') })),
  );
}
