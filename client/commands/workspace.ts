import { lstat, mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { describeZodError } from '../../common/agent-input';
import { terminalSafeJson, visibleBlock, visibleLine } from '../../common/display-text';
import { unpackArchive, type UnpackSummary } from '../../sandbox/archive-unpack';
import { formatBytes } from '../../sandbox/byte-size';
import { DEFAULT_PULL_LIMIT_BYTES } from '../../sandbox/upload-store';
import { AgentsError } from '../errors';
import {
  locateWorkspace,
  type LocatedWorkspace,
  type RunWorkspaceStatus,
  type WorkspaceEntry,
} from '../workspace-reader';
import { describeWorkspaceSource } from '../workspace-source';
import { flag, text, withClient, type CommandContext } from './command-context';

/**
 * The commands that read a run's work out of its workspace on the sandbox server: `files`, `cat`,
 * `pull` and `diff`. Everything in a workspace (names, contents, link targets) is the model's
 * making: shown on a terminal, it is neutralized so it cannot drive the terminal; written to a
 * pipe or a file, it is exact; unpacked by `pull`, it cannot land outside the folder asked for.
 */

/** Most entries `agents pull` unpacks; its data is bounded by the server's default archive limit. */
export const PULL_MAX_ENTRIES = 1_000_000;

const USAGE = {
  files: 'agents files <name> [path] [--json]',
  cat: 'agents cat <name> <path>',
  pull: 'agents pull <name> [path] [-o DIR]',
  diff: 'agents diff <name> [--json]',
} as const;

/** A path inside a workspace as typed: relative or absolute in the workspace, never with a NUL byte. */
const workspacePathSchema = z
  .string()
  .min(1, 'must not be empty')
  .refine((value) => !value.includes('\0'), 'must not contain a NUL byte');

/** The agent's name and up to `optional + required` paths; fails with the usage when they do not fit. */
function positionals(
  context: CommandContext,
  usage: string,
  paths: { required: number; optional: number },
): [string, string[]] {
  const [name, ...rest] = context.positionals;
  if (name === undefined) throw new AgentsError('invalid_argument', `An agent name is required: ${usage}`);
  if (rest.length < paths.required) throw new AgentsError('invalid_argument', `A path is required: ${usage}`);
  if (rest.length > paths.required + paths.optional) {
    throw new AgentsError(
      'invalid_argument',
      `Unexpected argument '${visibleLine(rest.at(-1) ?? '')}': ${usage}`,
    );
  }
  for (const value of rest) {
    const parsed = workspacePathSchema.safeParse(value);
    if (!parsed.success) {
      throw new AgentsError(
        'invalid_argument',
        `Invalid path '${visibleLine(value)}': ${describeZodError(parsed.error)}`,
      );
    }
  }
  return [name, rest];
}

/** Runs `use` with the located workspace of agent `name`, on a Temporal connection closed afterwards. */
function withWorkspace<T>(
  context: CommandContext,
  name: string,
  use: (workspace: LocatedWorkspace) => Promise<T>,
): Promise<T> {
  return withClient(context, (agents) => locateWorkspace(context.config, agents, name, use));
}

/** The listing of `agents files`: type, size and path per line, every name shown visibly. */
export function formatListing(entries: readonly WorkspaceEntry[]): string {
  return entries
    .map((entry) => {
      const size = entry.type === 'directory' ? '-' : String(entry.size);
      return `${entry.type.padEnd(9)} ${size.padStart(10)}  ${visibleLine(entry.path)}`;
    })
    .join('\n');
}

/** `agents files <name> [path] [--json]`: what the workspace holds, all the way down. */
export async function filesCommand(context: CommandContext): Promise<void> {
  const [name, [folder = '.']] = positionals(context, USAGE.files, { required: 0, optional: 1 });
  await withWorkspace(context, name, async ({ run, server, reader }) => {
    const listing = await reader.list(run.trajectoryId, folder).catch((error: unknown) => {
      throw readFailure(error, `Cannot list '${visibleLine(folder)}' in the workspace of agent ${name}`);
    });
    if (flag(context, 'json')) {
      const answer = { trajectoryId: run.trajectoryId, server: server.url, path: folder, ...listing };
      context.print(terminalSafeJson(answer, 2));
      return;
    }
    if (listing.entries.length === 0) {
      context.print(
        `Nothing in ${folder === '.' ? 'the workspace' : `'${visibleLine(folder)}'`} of agent ${name}.`,
      );
      return;
    }
    context.print(formatListing(listing.entries));
    if (listing.truncated) {
      context.print(
        `… the listing stopped at ${listing.entries.length} entries: \`agents pull ${name}\` brings all of it`,
      );
    }
  });
}

/** What a terminal is shown of some bytes: the text neutralized, or a refusal when they are not text. */
export type TerminalRendering = { kind: 'text'; text: string } | { kind: 'binary' };

/**
 * Bytes from a workspace as a terminal may show them: valid UTF-8 without NUL bytes is text, every
 * escape sequence, control, bidi or invisible character in it shown as its escape (so `\x1b[2J`
 * cannot clear the screen, nor a CR overwrite a line); anything else is binary, which a terminal is
 * not shown at all.
 */
export function renderForTerminal(data: Buffer): TerminalRendering {
  if (data.includes(0)) return { kind: 'binary' };
  let decoded: string;
  try {
    decoded = new TextDecoder('utf-8', { fatal: true }).decode(data);
  } catch {
    return { kind: 'binary' };
  }
  return { kind: 'text', text: visibleBlock(decoded) };
}

/** Writes `data` to stdout and waits until it is handed to the system, so a large file is whole before exit. */
async function writeStdout(data: Buffer | string): Promise<void> {
  await new Promise<void>((resolve, reject) =>
    process.stdout.write(data, (error) => (error ? reject(error) : resolve())),
  );
}

/**
 * Writes model-made bytes to stdout: exactly when stdout is a pipe or a file; on a terminal as
 * {@link renderForTerminal} shows them, binary refused with a line saying how to get the bytes.
 */
async function writeForReader(data: Buffer, binaryRefusal: () => string): Promise<void> {
  if (process.stdout.isTTY !== true) return writeStdout(data);
  const rendering = renderForTerminal(data);
  if (rendering.kind === 'binary') throw new AgentsError('invalid_argument', binaryRefusal());
  await writeStdout(
    rendering.text.endsWith('\n') || rendering.text === '' ? rendering.text : `${rendering.text}\n`,
  );
}

/** A failure of a workspace request, told with what was being done. */
function readFailure(error: unknown, doing: string): unknown {
  if (!(error instanceof AgentsError)) return error;
  return new AgentsError(error.code, `${doing}: ${error.message}`, { cause: error });
}

/** `agents cat <name> <path>`: one file of the workspace, its bytes exactly (see {@link writeForReader}). */
export async function catCommand(context: CommandContext): Promise<void> {
  const [name, [file]] = positionals(context, USAGE.cat, { required: 1, optional: 0 });
  const shown = visibleLine(file!);
  await withWorkspace(context, name, async ({ run, reader }) => {
    const content = await reader.read(run.trajectoryId, file!).catch((error: unknown) => {
      throw readFailure(error, `Cannot read '${shown}' in the workspace of agent ${name}`);
    });
    if (content.truncated) {
      throw new AgentsError(
        'invalid_argument',
        `'${shown}' is ${content.fileSize} bytes (${formatBytes(content.fileSize)}), over the ${formatBytes(content.data.length)} read limit: \`agents pull ${name}\` copies it whole`,
      );
    }
    await writeForReader(
      content.data,
      () =>
        `'${shown}' is binary (${content.fileSize} bytes): redirect it to a file or a pipe, as in \`agents cat ${name} ${shown} > file\``,
    );
  });
}

/** Fails unless `folder` is missing or an empty folder; true when it is missing (and pull will create it). */
async function checkPullDestination(folder: string): Promise<boolean> {
  let isFolder: boolean;
  try {
    isFolder = (await lstat(folder)).isDirectory();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw error;
  }
  if (!isFolder)
    throw new AgentsError(
      'invalid_argument',
      `${folder} exists and is not a folder: give another with -o DIR`,
    );
  if ((await readdir(folder)).length > 0) {
    throw new AgentsError(
      'invalid_argument',
      `${folder} exists and is not empty: give an empty or new folder with -o DIR`,
    );
  }
  return false;
}

/** What `agents pull` says it wrote and left out, every name from the archive shown visibly. */
export function formatPullSummary(name: string, folder: string, summary: UnpackSummary): string {
  const lines = [
    `Pulled the workspace of agent ${name} into ${folder}: ${summary.files} files, ${summary.folders} folders, ${summary.symlinks} symlinks, ${formatBytes(summary.unpackedBytes)}`,
  ];
  if (summary.skipped.length > 0) {
    lines.push(
      `Left out ${summary.skipped.length} unsafe ${summary.skipped.length === 1 ? 'entry' : 'entries'}:`,
    );
    for (const skipped of summary.skipped)
      lines.push(`  ${visibleLine(skipped.path)}: ${visibleLine(skipped.reason)}`);
  }
  return lines.join('\n');
}

/**
 * `agents pull <name> [path] [-o DIR]`: the workspace (or one folder of it) copied into DIR, default
 * `./<name>-workspace`, which must be new or empty. The archive is unpacked by descriptor walk with
 * unsafe entries (links leaving DIR, devices, `..`) left out and listed, so a hostile workspace
 * writes nothing outside DIR.
 */
export async function pullCommand(context: CommandContext): Promise<void> {
  const [name, [folder = '.']] = positionals(context, USAGE.pull, { required: 0, optional: 1 });
  const destination = path.resolve(text(context, 'output') ?? `${name}-workspace`);
  await checkPullDestination(destination);
  await withWorkspace(context, name, async ({ run, reader }) => {
    const doing = `Cannot pull '${visibleLine(folder)}' of the workspace of agent ${name}`;
    const archive = await reader.archive(run.trajectoryId, folder).catch((error: unknown) => {
      throw readFailure(error, doing);
    });
    // Checked again: the folder may have been made while the workspace was found.
    const created = await checkPullDestination(destination);
    await mkdir(destination, { recursive: true, mode: 0o755 });
    let summary: UnpackSummary;
    try {
      summary = await unpackArchive(
        archive,
        destination,
        { maxUnpackedBytes: DEFAULT_PULL_LIMIT_BYTES, maxEntries: PULL_MAX_ENTRIES },
        { skipUnsafe: true },
      );
    } catch (error) {
      // Half a workspace is worse than none: what this pull made goes again (rm never follows a link).
      if (created) await rm(destination, { recursive: true, force: true });
      throw readFailure(error, doing);
    }
    context.print(formatPullSummary(name, destination, summary));
  });
}

/** `agents diff <name> [--json]`: what changed in the workspace since the run started, as the server tells it. */
export async function diffCommand(context: CommandContext): Promise<void> {
  const [name] = positionals(context, USAGE.diff, { required: 0, optional: 0 });
  await withWorkspace(context, name, async ({ run, reader }) => {
    const diff = await reader.diff(run.trajectoryId).catch((error: unknown) => {
      throw readFailure(error, `Cannot diff the workspace of agent ${name}`);
    });
    if (flag(context, 'json')) {
      context.print(terminalSafeJson(diff, 2));
      return;
    }
    if (diff.text === '' && diff.changes.length === 0) {
      context.print(
        `No changes in the workspace of agent ${name} since ${visibleLine(diff.base || 'it was empty')}.`,
      );
      return;
    }
    await writeForReader(
      Buffer.from(diff.text.endsWith('\n') ? diff.text : `${diff.text}\n`),
      () => `The diff of agent ${name} holds binary data: redirect it to a file or a pipe`,
    );
    if (diff.truncated) {
      process.stderr.write(
        `The diff was cut at the server's limit: \`agents pull ${name}\` brings the whole workspace\n`,
      );
    }
  });
}

/** The workspace lines of `agents status`: where it is and how big, what it started from, or why it is not shown. */
export function formatWorkspaceStatus(workspace: RunWorkspaceStatus): string {
  const where =
    workspace.unavailable === null
      ? `${workspace.trajectoryId} on ${workspace.server}: ${workspace.files} files, ${formatBytes(workspace.bytes ?? 0)}`
      : `${workspace.trajectoryId}: ${visibleLine(workspace.unavailable)}`;
  const from =
    workspace.startedFrom === null ? 'empty' : visibleLine(describeWorkspaceSource(workspace.startedFrom));
  return [`  workspace   ${where}`, `  started from ${from}`].join('\n');
}
