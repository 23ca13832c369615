import { randomUUID } from 'node:crypto';
import type { UploadStore } from './upload-store';
import { readTarEntries } from './tar-archive';
import type { ToolCall, ToolResult } from './tool-call';
import { openWorkspaceFile } from './workspace-paths';
import {
  archiveEntryPath,
  manifestOfWorkspace,
  readOrigin,
  type Manifest,
  type ManifestEntry,
  type TrajectoryLocation,
} from './workspace-origin';
import { SandboxError } from './tool-call';

/**
 * What changed in a workspace since it was prepared (`GET /workspaces/diff`). A workspace prepared
 * from a repository at a commit is diffed by git, run INSIDE the sandbox like any `bash` call
 * (network off): the workspace's `.git/config` is the sandbox's to change, so git run by the
 * server on the host would run whatever pager, external diff or fsmonitor the agent configured,
 * as root. Any other workspace is compared file by file with the manifest of its upload, with
 * unified diffs of text files read from the stored upload and, by descriptor walk, the workspace.
 */

/** Runs one call in a trajectory's sandbox, fresh (never a stored result). */
export type SandboxCommandRunner = (call: ToolCall) => Promise<ToolResult>;

/** What `GET /workspaces/diff` answers. */
export interface WorkspaceDiff {
  kind: 'git' | 'files';
  /** The commit, `sha256:<digest>` of the upload, or '' for a workspace that started empty. */
  base: string;
  changes: Array<{ path: string; change: 'added' | 'modified' | 'deleted' }>;
  text: string;
  truncated: boolean;
}

/** The diff could not be made (git failed in the sandbox): 409. */
export class WorkspaceDiffError extends SandboxError {
  override readonly name = 'WorkspaceDiffError';
}

/** Characters of diff text returned, all files together. */
export const MAX_DIFF_TEXT_CHARS = 40_000;
/** Bytes of change list the git diff returns; the rest is cut (and `truncated` set). */
const MAX_GIT_CHANGES_BYTES = 8_000;
/** Largest file shown as a line diff; bigger ones are named only. */
const MAX_DIFF_FILE_BYTES = 256 * 1024;
/** Largest line-diff table (lines before × lines after, after the common ends are taken off). */
const MAX_DIFF_CELLS = 4_000_000;
/** Lines of context around each change. */
const CONTEXT_LINES = 3;
/** Seconds the git diff may run in the sandbox. */
const GIT_DIFF_TIMEOUT_S = 60;

/** The workspace's changes since its origin: by git when it came from a repository at a commit. */
export async function diffWorkspace(
  location: TrajectoryLocation,
  uploads: UploadStore,
  runInSandbox: SandboxCommandRunner,
): Promise<WorkspaceDiff> {
  const origin = await readOrigin(location.folder);
  if (origin?.commit !== undefined) return gitDiff(location.trajectoryId, origin.commit, runInSandbox);
  const before = origin?.manifest ?? {};
  const { manifest: after, truncated: walkTruncated } = await manifestOfWorkspace(location.workspace);
  const changes = compareManifests(before, after);
  const oldContents =
    origin === undefined
      ? new Map<string, Buffer>()
      : await readUploadFiles(uploads, origin.digest, changes, before);
  const text = new BoundedText(MAX_DIFF_TEXT_CHARS);
  for (const change of changes) {
    const oldEntry = before[change.path];
    const newEntry = after[change.path];
    if (oldEntry?.type === 'symlink' || newEntry?.type === 'symlink') {
      text.append(`Symlink ${change.path} ${change.change}\n`);
      continue;
    }
    const oldData = change.change === 'added' ? undefined : contentOf(oldEntry, oldContents.get(change.path));
    const newData =
      change.change === 'deleted'
        ? undefined
        : await workspaceContent(location.workspace, change.path, newEntry);
    text.append(fileDiffText(change.path, oldData, newData));
    if (text.full) break;
  }
  return {
    kind: 'files',
    base: origin === undefined ? '' : `sha256:${origin.digest}`,
    changes,
    text: text.value,
    truncated: text.truncated || walkTruncated,
  };
}

/** Paths (not folders) added, modified or deleted between two manifests, sorted. */
export function compareManifests(before: Manifest, after: Manifest): WorkspaceDiff['changes'] {
  const changes: WorkspaceDiff['changes'] = [];
  const paths = new Set([...Object.keys(before), ...Object.keys(after)]);
  for (const entryPathText of [...paths].sort()) {
    const old = before[entryPathText];
    const now = after[entryPathText];
    const oldCounted = old !== undefined && old.type !== 'directory';
    const nowCounted = now !== undefined && now.type !== 'directory';
    if (!oldCounted && nowCounted) changes.push({ path: entryPathText, change: 'added' });
    else if (oldCounted && !nowCounted) changes.push({ path: entryPathText, change: 'deleted' });
    else if (
      oldCounted &&
      nowCounted &&
      (old.type !== now.type || old.sha256 !== now.sha256 || old.size !== now.size)
    )
      changes.push({ path: entryPathText, change: 'modified' });
  }
  return changes;
}

/** Content of a side of a diff: its bytes, or too large to show. */
type Side = { kind: 'text'; data: Buffer } | { kind: 'large'; size: number };

function contentOf(entry: ManifestEntry | undefined, data: Buffer | undefined): Side | undefined {
  if (entry === undefined) return undefined;
  if (data === undefined) return { kind: 'large', size: entry.size };
  return { kind: 'text', data };
}

/** The old bytes of the changed files that are small enough, from the stored upload. */
async function readUploadFiles(
  uploads: UploadStore,
  digest: string,
  changes: WorkspaceDiff['changes'],
  before: Manifest,
): Promise<Map<string, Buffer>> {
  const wanted = new Set(
    changes
      .filter(
        (change) => change.change !== 'added' && (before[change.path]?.size ?? 0) <= MAX_DIFF_FILE_BYTES,
      )
      .map((change) => change.path),
  );
  const contents = new Map<string, Buffer>();
  if (wanted.size === 0) return contents;
  for await (const entry of readTarEntries(await uploads.open(digest))) {
    const name = archiveEntryPath(entry.path);
    if (!wanted.has(name)) continue;
    if (entry.type === 'file' && entry.size <= MAX_DIFF_FILE_BYTES) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry.data()) chunks.push(chunk);
      contents.set(name, Buffer.concat(chunks));
    }
  }
  return contents;
}

/** The new side of a changed file, read by descriptor walk. */
async function workspaceContent(
  workspace: string,
  file: string,
  entry: ManifestEntry | undefined,
): Promise<Side | undefined> {
  if (entry === undefined) return undefined;
  if (entry.size > MAX_DIFF_FILE_BYTES) return { kind: 'large', size: entry.size };
  try {
    const { handle, stats } = await openWorkspaceFile(workspace, file);
    try {
      if (stats.size > MAX_DIFF_FILE_BYTES) return { kind: 'large', size: stats.size };
      const data = Buffer.alloc(stats.size);
      const { bytesRead } = await handle.read(data, 0, data.length, 0);
      return { kind: 'text', data: data.subarray(0, bytesRead) };
    } finally {
      await handle.close();
    }
  } catch {
    // Changed under the diff (removed, swapped for a link): shown as not readable.
    return { kind: 'large', size: entry.size };
  }
}

function isText(data: Buffer): boolean {
  return !data.includes(0) && Buffer.from(data.toString('utf8'), 'utf8').equals(data);
}

/** The unified diff of one file, or a line naming it when it is binary or too large. */
export function fileDiffText(file: string, oldSide: Side | undefined, newSide: Side | undefined): string {
  const oldName = oldSide === undefined ? '/dev/null' : `a/${file}`;
  const newName = newSide === undefined ? '/dev/null' : `b/${file}`;
  const oldData =
    oldSide?.kind === 'text' ? oldSide.data : oldSide === undefined ? Buffer.alloc(0) : undefined;
  const newData =
    newSide?.kind === 'text' ? newSide.data : newSide === undefined ? Buffer.alloc(0) : undefined;
  if (oldData === undefined || newData === undefined || !isText(oldData) || !isText(newData))
    return `Binary or large files ${oldName} and ${newName} differ\n`;
  const hunks = unifiedHunks(splitLines(oldData.toString('utf8')), splitLines(newData.toString('utf8')));
  if (hunks === undefined) return `Files ${oldName} and ${newName} differ (too many lines to compare)\n`;
  return `--- ${oldName}\n+++ ${newName}\n${hunks}`;
}

function splitLines(text: string): string[] {
  if (text === '') return [];
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  else lines[lines.length - 1] += '\n\\ No newline at end of file';
  return lines;
}

/** One line of a line diff: kept, removed or added. */
interface DiffLine {
  op: ' ' | '-' | '+';
  text: string;
}

/**
 * The lines of `before` and `after` as kept, removed and added lines: a longest common
 * subsequence of the lines between their common start and end; undefined when that table would
 * be over {@link MAX_DIFF_CELLS}.
 */
export function diffLines(before: readonly string[], after: readonly string[]): DiffLine[] | undefined {
  let start = 0;
  while (start < before.length && start < after.length && before[start] === after[start]) start += 1;
  let endBefore = before.length;
  let endAfter = after.length;
  while (endBefore > start && endAfter > start && before[endBefore - 1] === after[endAfter - 1]) {
    endBefore -= 1;
    endAfter -= 1;
  }
  const rows = endBefore - start;
  const columns = endAfter - start;
  if ((rows + 1) * (columns + 1) > MAX_DIFF_CELLS) return undefined;
  // lengths[i][j]: longest common subsequence of before[start+i..] and after[start+j..].
  const width = columns + 1;
  const lengths = new Uint32Array((rows + 1) * width);
  for (let i = rows - 1; i >= 0; i -= 1) {
    for (let j = columns - 1; j >= 0; j -= 1) {
      lengths[i * width + j] =
        before[start + i] === after[start + j]
          ? lengths[(i + 1) * width + j + 1]! + 1
          : Math.max(lengths[(i + 1) * width + j]!, lengths[i * width + j + 1]!);
    }
  }
  const lines: DiffLine[] = before.slice(0, start).map((text) => ({ op: ' ', text }));
  let i = 0;
  let j = 0;
  while (i < rows || j < columns) {
    if (i < rows && j < columns && before[start + i] === after[start + j]) {
      lines.push({ op: ' ', text: before[start + i]! });
      i += 1;
      j += 1;
    } else if (i < rows && (j === columns || lengths[(i + 1) * width + j]! >= lengths[i * width + j + 1]!)) {
      // Removals before additions, as diff and git show a changed line.
      lines.push({ op: '-', text: before[start + i]! });
      i += 1;
    } else {
      lines.push({ op: '+', text: after[start + j]! });
      j += 1;
    }
  }
  for (const text of before.slice(endBefore)) lines.push({ op: ' ', text });
  return lines;
}

/** The `@@ -a,b +c,d @@` hunks of a line diff with {@link CONTEXT_LINES} of context; undefined when too large. */
export function unifiedHunks(before: readonly string[], after: readonly string[]): string | undefined {
  const lines = diffLines(before, after);
  if (lines === undefined) return undefined;
  const changed = lines.map((line, index) => (line.op === ' ' ? -1 : index)).filter((index) => index >= 0);
  let text = '';
  let cursor = 0;
  while (cursor < changed.length) {
    const first = changed[cursor]!;
    let last = first;
    while (cursor + 1 < changed.length && changed[cursor + 1]! - last <= 2 * CONTEXT_LINES + 1) {
      cursor += 1;
      last = changed[cursor]!;
    }
    cursor += 1;
    const from = Math.max(0, first - CONTEXT_LINES);
    const to = Math.min(lines.length, last + CONTEXT_LINES + 1);
    let oldStart = 1;
    let newStart = 1;
    for (const line of lines.slice(0, from)) {
      if (line.op !== '+') oldStart += 1;
      if (line.op !== '-') newStart += 1;
    }
    const hunk = lines.slice(from, to);
    const oldCount = hunk.filter((line) => line.op !== '+').length;
    const newCount = hunk.filter((line) => line.op !== '-').length;
    text += `@@ -${oldCount === 0 ? oldStart - 1 : oldStart},${oldCount} +${newCount === 0 ? newStart - 1 : newStart},${newCount} @@\n`;
    for (const line of hunk) text += `${line.op}${line.text}\n`;
  }
  return text;
}

/** Text cut at a number of characters, remembering that it was. */
class BoundedText {
  value = '';
  truncated = false;

  constructor(private readonly limit: number) {}

  get full(): boolean {
    return this.truncated;
  }

  append(text: string): void {
    if (this.truncated) return;
    if (this.value.length + text.length > this.limit) {
      this.value += text.slice(0, this.limit - this.value.length);
      this.truncated = true;
    } else this.value += text;
  }
}

/** Marker lines between the parts of the git diff script's output. */
const CHANGES_MARKER = '@@durable-agents changes';
const TEXT_MARKER = '@@durable-agents text';

/**
 * The script the git diff runs in the sandbox. Git's own configuration is the sandbox's: options
 * on the command line turn off what would run commands (pager, external diff, text conversion,
 * fsmonitor), but even what they miss runs in the sandbox, never on the host. Output is bounded
 * here, below the bash tool's own limits, and the full sizes are printed so the cut is known.
 */
export function gitDiffScript(commit: string): string {
  const git = `git --no-pager -c core.pager=cat -c core.fsmonitor=false -c diff.external= -c core.quotepath=off -c safe.directory='*'`;
  return [
    'set -u',
    'cd /workspace || exit 3',
    'work=$(mktemp -d)',
    `${git} rev-parse --verify --quiet ${commit}^{commit} >/dev/null || { echo "the commit ${commit} is not in the repository" >&2; exit 4; }`,
    `{ ${git} diff --no-renames --no-ext-diff --name-status ${commit} --; ${git} ls-files --others --exclude-standard | sed 's/^/A\t/'; } > "$work/changes" 2>&1`,
    `{ echo '$ git log --oneline ${commit}..HEAD'; ${git} log --oneline ${commit}..HEAD; echo; echo '$ git status --short'; ${git} status --short; echo; echo '$ git diff ${commit}'; ${git} diff --no-ext-diff --no-textconv ${commit}; } > "$work/text" 2>&1`,
    `echo "${CHANGES_MARKER} $(wc -c < "$work/changes")"`,
    `head -c ${MAX_GIT_CHANGES_BYTES} "$work/changes"`,
    'echo',
    `echo "${TEXT_MARKER} $(wc -c < "$work/text")"`,
    `head -c ${MAX_DIFF_TEXT_CHARS} "$work/text"`,
  ].join('\n');
}

async function gitDiff(
  trajectoryId: string,
  commit: string,
  runInSandbox: SandboxCommandRunner,
): Promise<WorkspaceDiff> {
  const result = await runInSandbox({
    callId: `workspace-diff:${randomUUID()}`,
    trajectoryId,
    tool: 'bash',
    arguments: { command: gitDiffScript(commit) },
    timeoutS: GIT_DIFF_TIMEOUT_S,
    policy: { network: false },
  });
  const output = result.output;
  const changesAt = output.indexOf(`${CHANGES_MARKER} `);
  const textAt = output.indexOf(`\n${TEXT_MARKER} `);
  if (!result.success || changesAt === -1 || textAt === -1) {
    const reason = (result.output.split('[stderr]\n')[1] ?? result.error ?? result.output)
      .trim()
      .split('\n')[0];
    throw new WorkspaceDiffError(
      `The git diff failed in the sandbox: ${reason || result.error || 'no output'}`,
    );
  }
  const changesHeader = output.slice(changesAt, output.indexOf('\n', changesAt));
  const changesBytes = Number(changesHeader.slice(CHANGES_MARKER.length + 1));
  const changesText = output.slice(output.indexOf('\n', changesAt) + 1, textAt);
  const textHeaderEnd = output.indexOf('\n', textAt + 1);
  const textHeader = output.slice(textAt + 1, textHeaderEnd === -1 ? undefined : textHeaderEnd);
  const textBytes = Number(textHeader.slice(TEXT_MARKER.length + 1));
  let text = textHeaderEnd === -1 ? '' : output.slice(textHeaderEnd + 1);
  const stderrAt = text.lastIndexOf('\n[stderr]\n');
  if (stderrAt !== -1) text = text.slice(0, stderrAt);
  const changesCut = changesBytes > MAX_GIT_CHANGES_BYTES;
  const lines = changesText.split('\n').filter((line) => line !== '');
  // A cut list ends in a partial line.
  if (changesCut) lines.pop();
  const changes = lines.flatMap((line) => {
    const tab = line.indexOf('\t');
    if (tab === -1) return [];
    const status = line.slice(0, tab);
    const change = status.startsWith('A') ? 'added' : status.startsWith('D') ? 'deleted' : 'modified';
    return [{ path: unquoteGitPath(line.slice(tab + 1)), change } as const];
  });
  return {
    kind: 'git',
    base: commit,
    changes,
    text,
    truncated: changesCut || textBytes > MAX_DIFF_TEXT_CHARS || result.metadata.truncated === true,
  };
}

/** A path as git prints it: as is, or C-quoted ("a\tb", octal escapes for bytes) when unusual. */
function unquoteGitPath(text: string): string {
  if (!(text.startsWith('"') && text.endsWith('"'))) return text;
  const bytes: number[] = [];
  const body = text.slice(1, -1);
  const escapes: Record<string, number> = { n: 10, t: 9, r: 13, a: 7, b: 8, f: 12, v: 11, '\\': 92, '"': 34 };
  for (let index = 0; index < body.length; index += 1) {
    const character = body[index]!;
    if (character !== '\\') {
      bytes.push(...Buffer.from(character));
      continue;
    }
    const next = body[index + 1] ?? '';
    if (/[0-7]/.test(next)) {
      bytes.push(parseInt(body.slice(index + 1, index + 4), 8));
      index += 3;
    } else {
      bytes.push(escapes[next] ?? next.charCodeAt(0));
      index += 1;
    }
  }
  return Buffer.from(bytes).toString('utf8');
}
