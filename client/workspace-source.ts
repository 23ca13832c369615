import { execFile } from 'node:child_process';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import { lstat, mkdtemp, open, readdir, readlink, realpath, rm, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import type { SandboxEndpoint } from '../activities/tool-executor';
import { countedStream, putUpload, UploadRefusedError } from '../activities/workspace-preparation';
import {
  describeZodError,
  gitRefSchema,
  repositoryUrlSchema,
  type WorkspaceSource,
} from '../common/agent-input';
import { formatBytes } from '../sandbox/byte-size';
import { tarEndBlocks, tarEntryHeader, tarPadding, type TarEntry } from '../sandbox/tar-archive';
import { AgentsError } from './errors';

/**
 * What a run's workspace starts from, made on the machine that starts the run: a folder (its files
 * as git would commit them, `.gitignore` honoured, `.git` left out) or a repository cloned with the
 * user's own git and network (every file, `.git` included, so the agent has the history). Either
 * is packed into a tar.gz streamed to a temporary file (memory stays bounded whatever the size),
 * named by its sha256, and uploaded to a sandbox server, which checks it again before it keeps it.
 */

/** An archive ready to upload, and what it holds. */
export interface PackedWorkspace {
  archivePath: string;
  digest: string;
  archiveBytes: number;
  files: number;
  folders: number;
  symlinks: number;
  /** Bytes of file data. */
  bytes: number;
}

/** One entry to pack, found by the listing, checked before anything is read. */
type Listed =
  | { type: 'file'; name: string; size: number; mode: number; mtimeMs: number }
  | { type: 'directory'; name: string; mode: number; mtimeMs: number }
  | { type: 'symlink'; name: string; linkTarget: string; mtimeMs: number };

/** What the packing is told: the size limit, and where progress lines go. */
export interface PackOptions {
  limitBytes: number;
  /** Progress of a big folder, one line at a time (the CLI writes them to stderr). */
  progress?: (line: string) => void;
}

/** Above this many bytes, packing and uploading report their progress. */
const PROGRESS_FROM_BYTES = 64 * 1024 * 1024;
/** Bytes read from a file at a time. */
const READ_CHUNK_BYTES = 1024 * 1024;

/** Runs git with the user's environment minus what would point it at another repository. */
async function git(
  args: string[],
  options: { cwd?: string; input?: string } = {},
): Promise<{ stdout: Buffer; stderr: string }> {
  const environment = { ...process.env };
  for (const name of ['GIT_DIR', 'GIT_WORK_TREE', 'GIT_INDEX_FILE', 'GIT_OBJECT_DIRECTORY', 'GIT_PREFIX']) {
    delete environment[name];
  }
  return new Promise((resolve, reject) => {
    const child = execFile(
      'git',
      args,
      { cwd: options.cwd, env: environment, encoding: 'buffer', maxBuffer: 512 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error !== null) {
          reject(Object.assign(error as Error, { stderr: stderr.toString('utf8') }));
          return;
        }
        resolve({ stdout, stderr: stderr.toString('utf8') });
      },
    );
    // git may exit before reading its input: that is its answer, not a failure to write.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(options.input ?? '');
  });
}

/** The last line git wrote to stderr, or how it failed to start. */
function gitsLastLine(error: unknown): string {
  const { stderr, code } = error as { stderr?: string; code?: unknown };
  if (code === 'ENOENT') return 'git is not installed (not found on PATH)';
  const lines = (stderr ?? '')
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
  return lines.at(-1) ?? (error as Error).message.split('\n')[0] ?? 'unknown error';
}

async function gitAvailable(): Promise<boolean> {
  try {
    await git(['--version']);
    return true;
  } catch {
    return false;
  }
}

/** Whether a `/`-separated relative path passes through or names a `.git` entry. */
function touchesGitFolder(name: string): boolean {
  return name.split('/').includes('.git');
}

/**
 * The files of `root` git would add: tracked and untracked ones, ignored ones left out. In a
 * repository, git's own view of it; elsewhere, an empty repository of our own looks at the folder.
 * Git lists no FIFO, socket or device node, so those are looked for by a walk, and each one git
 * would not ignore is named too, for the listing to refuse.
 */
async function gitListedNames(root: string): Promise<string[]> {
  let insideRepository = false;
  try {
    const { stdout } = await git(['-C', root, 'rev-parse', '--is-inside-work-tree']);
    insideRepository = stdout.toString('utf8').trim() === 'true';
  } catch {
    insideRepository = false;
  }
  const gitDir = insideRepository ? undefined : await mkdtemp(path.join(os.tmpdir(), 'agents-gitignore-'));
  try {
    const inFolder = gitDir === undefined ? ['-C', root] : [`--git-dir=${gitDir}`, `--work-tree=${root}`];
    if (gitDir !== undefined) await git(['init', '--quiet', '--bare', gitDir]);
    const listed = await git([...inFolder, 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], {
      cwd: root,
    });
    const names = splitNames(listed.stdout).filter((name) => !name.endsWith('/') && !touchesGitFolder(name));
    const special = await specialNames(root);
    if (special.length === 0) return names;
    const ignored = new Set(await gitIgnored(inFolder, root, special));
    return [...names, ...special.filter((name) => !ignored.has(name))];
  } finally {
    if (gitDir !== undefined) await rm(gitDir, { recursive: true, force: true });
  }
}

/** NUL-separated names, as `git … -z` writes them. */
function splitNames(output: Buffer): string[] {
  return output
    .toString('utf8')
    .split('\0')
    .filter((name) => name !== '');
}

/** Which of `names` git ignores (`git check-ignore`, which exits 1 when none is). */
async function gitIgnored(inFolder: string[], root: string, names: string[]): Promise<string[]> {
  try {
    const { stdout } = await git([...inFolder, 'check-ignore', '--no-index', '-z', '--stdin'], {
      cwd: root,
      input: names.map((name) => `${name}\0`).join(''),
    });
    return splitNames(stdout);
  } catch (error) {
    if ((error as { code?: unknown }).code === 1) return [];
    throw error;
  }
}

/** FIFOs, sockets and device nodes beneath `root` (outside `.git`), by a walk that follows no link. */
async function specialNames(root: string): Promise<string[]> {
  const found: string[] = [];
  const visit = async (relative: string): Promise<void> => {
    for (const entry of await readdir(path.join(root, relative), { withFileTypes: true })) {
      if (entry.name === '.git') continue;
      const name = relative === '' ? entry.name : `${relative}/${entry.name}`;
      if (entry.isDirectory()) await visit(name);
      else if (entry.isFIFO() || entry.isSocket() || entry.isCharacterDevice() || entry.isBlockDevice()) {
        found.push(name);
      }
    }
  };
  await visit('');
  return found;
}

/** Every entry beneath `root` by a walk that follows no link; `.git` folders left out unless `withGit`. */
async function walkedNames(root: string, withGit: boolean): Promise<string[]> {
  const names: string[] = [];
  const visit = async (relative: string): Promise<void> => {
    const entries = await readdir(path.join(root, relative), { withFileTypes: true });
    for (const entry of entries) {
      if (!withGit && entry.name === '.git') continue;
      const name = relative === '' ? entry.name : `${relative}/${entry.name}`;
      names.push(name);
      if (entry.isDirectory()) await visit(name);
    }
  };
  await visit('');
  return names;
}

/** Whether a `.gitignore` is anywhere in the folder: without git, it cannot be honoured. */
async function holdsGitignore(root: string): Promise<boolean> {
  return (await walkedNames(root, false)).some((name) => path.posix.basename(name) === '.gitignore');
}

/** What an entry is called in a refusal: "a FIFO (named pipe)", "a socket", "a device node". */
function describeSpecial(stats: { isFIFO(): boolean; isSocket(): boolean }): string {
  if (stats.isFIFO()) return 'a FIFO (named pipe)';
  if (stats.isSocket()) return 'a socket';
  return 'a device node';
}

/**
 * Checks each named entry and describes it, refusing what a workspace cannot hold: special files,
 * and symlinks that point outside the folder (in the sandbox they would point at its system, or
 * nowhere). Parent folders of every entry are added, so the archive creates each before its content.
 */
async function listEntries(root: string, names: string[], shown: string): Promise<Listed[]> {
  const listed = new Map<string, Listed>();
  const addParents = async (name: string) => {
    for (let parent = path.posix.dirname(name); parent !== '.'; parent = path.posix.dirname(parent)) {
      if (listed.has(parent)) continue;
      const stats = await lstat(path.join(root, parent));
      listed.set(parent, {
        type: 'directory',
        name: parent,
        mode: stats.mode & 0o777,
        mtimeMs: stats.mtimeMs,
      });
    }
  };
  for (const name of names) {
    let stats;
    try {
      stats = await lstat(path.join(root, name));
    } catch (error) {
      // A tracked file deleted from the folder: not part of it.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw error;
    }
    if (stats.isSymbolicLink()) {
      const linkTarget = await readlink(path.join(root, name));
      const resolved = path.posix.normalize(path.posix.join(path.posix.dirname(name), linkTarget));
      if (path.isAbsolute(linkTarget) || resolved === '..' || resolved.startsWith('../')) {
        throw new AgentsError(
          'invalid_argument',
          `Folder ${shown}: ${name} is a symlink to ${linkTarget}, outside the folder; only symlinks that point inside it are copied`,
        );
      }
      listed.set(name, { type: 'symlink', name, linkTarget, mtimeMs: stats.mtimeMs });
    } else if (stats.isDirectory()) {
      // Git names a submodule's folder; a walk names every folder, empty ones too.
      listed.set(name, { type: 'directory', name, mode: stats.mode & 0o777, mtimeMs: stats.mtimeMs });
    } else if (stats.isFile()) {
      listed.set(name, {
        type: 'file',
        name,
        size: stats.size,
        mode: stats.mode & 0o777,
        mtimeMs: stats.mtimeMs,
      });
    } else {
      throw new AgentsError(
        'invalid_argument',
        `Folder ${shown}: ${name} is ${describeSpecial(stats)}; only files, folders and symlinks are copied`,
      );
    }
    await addParents(name);
  }
  // A parent's path is a prefix of its children's, so sorting puts every folder before its content.
  return [...listed.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** Refuses a folder over the limit from the sizes the listing saw, before a byte is read. */
function checkSize(entries: Listed[], shown: string, limitBytes: number): void {
  const files = entries.filter((entry) => entry.type === 'file');
  const bytes = files.reduce((sum, file) => sum + file.size, 0);
  if (bytes > limitBytes) {
    throw new AgentsError(
      'invalid_argument',
      `Folder ${shown} holds ${formatBytes(bytes)} in ${files.length} files, over the ${formatBytes(limitBytes)} limit for a workspace (AGENTS_WORKSPACE_LIMIT)`,
    );
  }
}

/**
 * The tar stream of `entries`, each file read through a descriptor opened without following a
 * link and checked to be the regular file of the size listed (a file changed meanwhile is refused,
 * not packed half old, half new).
 */
async function* tarStream(
  root: string,
  entries: Listed[],
  shown: string,
  onBytes: (bytes: number) => void,
): AsyncGenerator<Buffer> {
  for (const entry of entries) {
    const common = { name: entry.name, uid: 0, gid: 0, mtimeMs: entry.mtimeMs };
    if (entry.type === 'directory') {
      yield tarEntryHeader({ ...common, type: 'directory', mode: entry.mode | 0o700 }, 0);
      continue;
    }
    if (entry.type === 'symlink') {
      yield tarEntryHeader({ ...common, type: 'symlink', linkTarget: entry.linkTarget }, 0);
      continue;
    }
    const handle = await open(path.join(root, entry.name), constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const stats = await handle.stat();
      if (!stats.isFile() || stats.size !== entry.size) {
        throw new AgentsError(
          'invalid_argument',
          `Folder ${shown}: ${entry.name} changed while it was packed`,
        );
      }
      const file: TarEntry = { ...common, data: Buffer.alloc(0), mode: entry.mode };
      yield tarEntryHeader(file, entry.size);
      let remaining = entry.size;
      while (remaining > 0) {
        const chunk = Buffer.alloc(Math.min(READ_CHUNK_BYTES, remaining));
        const { bytesRead } = await handle.read(chunk, 0, chunk.length, entry.size - remaining);
        if (bytesRead === 0) {
          throw new AgentsError(
            'invalid_argument',
            `Folder ${shown}: ${entry.name} changed while it was packed`,
          );
        }
        remaining -= bytesRead;
        onBytes(bytesRead);
        yield chunk.subarray(0, bytesRead);
      }
      yield tarPadding(entry.size);
    } finally {
      await handle.close();
    }
  }
  yield tarEndBlocks();
}

/** Reports "<what>: 40% (410.0 MiB of 1.0 GiB)" at each tenth of a big total. */
function progressReporter(
  what: string,
  total: number,
  progress: PackOptions['progress'],
): (bytes: number) => void {
  let done = 0;
  let reportedTenth = 0;
  return (bytes) => {
    done += bytes;
    if (progress === undefined || total < PROGRESS_FROM_BYTES) return;
    const tenth = Math.floor((done / total) * 10);
    if (tenth > reportedTenth) {
      reportedTenth = tenth;
      progress(`${what}: ${tenth * 10}% (${formatBytes(done)} of ${formatBytes(total)})`);
    }
  };
}

/** Packs checked entries into `<scratch>/workspace.tar.gz`, hashing it as it is written. */
async function writeArchive(
  root: string,
  entries: Listed[],
  scratch: string,
  shown: string,
  options: PackOptions,
): Promise<PackedWorkspace> {
  const archivePath = path.join(scratch, 'workspace.tar.gz');
  const hash = createHash('sha256');
  let archiveBytes = 0;
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      archiveBytes += chunk.length;
      callback(null, chunk);
    },
  });
  const files = entries.filter((entry) => entry.type === 'file');
  const bytes = files.reduce((sum, file) => sum + file.size, 0);
  const report = progressReporter(`Packing ${shown}`, bytes, options.progress);
  await pipeline(
    Readable.from(tarStream(root, entries, shown, report)),
    createGzip(),
    hashing,
    createWriteStream(archivePath, { mode: 0o600 }),
  );
  return {
    archivePath,
    digest: hash.digest('hex'),
    archiveBytes,
    files: files.length,
    folders: entries.filter((entry) => entry.type === 'directory').length,
    symlinks: entries.filter((entry) => entry.type === 'symlink').length,
    bytes,
  };
}

/** The real folder `folder` names, or a one-line refusal. */
async function existingFolder(folder: string, option: string): Promise<string> {
  try {
    const resolved = await realpath(folder);
    if (!(await stat(resolved)).isDirectory())
      throw new AgentsError('invalid_argument', `${option} ${folder}: not a folder`);
    return resolved;
  } catch (error) {
    if (error instanceof AgentsError) throw error;
    throw new AgentsError('invalid_argument', `${option} ${folder}: no such folder`, { cause: error });
  }
}

/**
 * Packs folder `folder` for `--workspace`: the files git would add (tracked, and untracked ones not
 * ignored), never `.git` itself, symlinks only when they point inside. The archive is written in
 * `scratch`, which the caller removes.
 */
export async function packFolder(
  folder: string,
  scratch: string,
  options: PackOptions,
): Promise<PackedWorkspace> {
  const root = await existingFolder(folder, '--workspace');
  let names: string[];
  if (await gitAvailable()) {
    try {
      names = await gitListedNames(root);
    } catch (error) {
      throw new AgentsError(
        'invalid_argument',
        `--workspace ${folder}: git could not list its files: ${gitsLastLine(error)}`,
        {
          cause: error,
        },
      );
    }
  } else {
    if (await holdsGitignore(root)) {
      throw new AgentsError(
        'invalid_argument',
        `--workspace ${folder} has a .gitignore, and git, which reads it, is not on PATH: install git, or remove the .gitignore to copy every file`,
      );
    }
    names = await walkedNames(root, false);
  }
  const entries = await listEntries(root, names, folder);
  checkSize(entries, folder, options.limitBytes);
  return writeArchive(root, entries, scratch, folder, options);
}

/** The form of `--repo` git is given and the history records: a local path made absolute. */
function repositoryLocation(url: string): string {
  // A URL (`https://…`, `file://…`) or scp-like `host:path` stays as written.
  if (/^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(url) || /^[^/]+:/.test(url)) return url;
  return path.resolve(url);
}

/**
 * Clones `--repo` with the user's git (their credentials and network), checks out `ref` when
 * given, and packs the whole clone, `.git` included, so the agent has the history. The clone and
 * the archive are made in `scratch`.
 */
export async function packRepository(
  url: string,
  ref: string | undefined,
  scratch: string,
  options: PackOptions,
): Promise<PackedWorkspace & { url: string; commit: string }> {
  const checkedUrl = repositoryUrlSchema.safeParse(url);
  if (!checkedUrl.success) {
    throw new AgentsError('invalid_argument', `--repo '${url}': ${describeZodError(checkedUrl.error)}`);
  }
  if (ref !== undefined) {
    const checkedRef = gitRefSchema.safeParse(ref);
    if (!checkedRef.success) {
      throw new AgentsError('invalid_argument', `--ref '${ref}': ${describeZodError(checkedRef.error)}`);
    }
  }
  const location = repositoryLocation(url);
  const clone = path.join(scratch, 'clone');
  try {
    await git(['clone', '--quiet', '--no-hardlinks', '--', location, clone]);
  } catch (error) {
    throw new AgentsError('invalid_argument', `git clone ${location} failed: ${gitsLastLine(error)}`, {
      cause: error,
    });
  }
  if (ref !== undefined) {
    const wanted = await resolveRef(clone, ref);
    if (wanted === undefined) {
      throw new AgentsError(
        'invalid_argument',
        `--ref '${ref}': no such branch, tag or commit in ${location}`,
      );
    }
    try {
      await git(['-C', clone, 'checkout', '--quiet', '--detach', wanted]);
    } catch (error) {
      throw new AgentsError(
        'invalid_argument',
        `git checkout ${ref} in ${location} failed: ${gitsLastLine(error)}`,
        {
          cause: error,
        },
      );
    }
  }
  const commit = (await git(['-C', clone, 'rev-parse', 'HEAD'])).stdout.toString('utf8').trim();
  const entries = await listEntries(clone, await walkedNames(clone, true), location);
  checkSize(entries, location, options.limitBytes);
  const packed = await writeArchive(clone, entries, scratch, location, options);
  // The clone is no longer needed; the archive is, until it is uploaded.
  await rm(clone, { recursive: true, force: true });
  return { ...packed, url: location, commit };
}

/** The commit `ref` names in a fresh clone: a tag, a commit, or a branch of the origin. */
async function resolveRef(clone: string, ref: string): Promise<string | undefined> {
  for (const candidate of [ref, `origin/${ref}`]) {
    try {
      const { stdout } = await git([
        '-C',
        clone,
        'rev-parse',
        '--verify',
        '--quiet',
        '--end-of-options',
        `${candidate}^{commit}`,
      ]);
      return stdout.toString('utf8').trim();
    } catch {
      // Not this form; try the next.
    }
  }
  return undefined;
}

/**
 * The sandbox server an upload goes to: rendezvous hashing on the digest, so the same archive goes
 * to the same server from any machine (and a second start of the same folder finds it there).
 */
export function uploadServerFor(endpoints: SandboxEndpoint[], digest: string): SandboxEndpoint {
  let best = endpoints[0];
  let bestScore = '';
  for (const endpoint of endpoints) {
    const score = createHash('sha256').update(`${endpoint.url}\n${digest}`).digest('hex');
    if (score > bestScore) {
      best = endpoint;
      bestScore = score;
    }
  }
  if (best === undefined)
    throw new AgentsError('sandbox_unavailable', 'No sandbox server to upload the workspace to');
  return best;
}

/** Uploads a packed archive to `endpoint` (`PUT /uploads/<digest>`), reporting progress for big ones. */
export async function uploadWorkspace(
  packed: PackedWorkspace,
  endpoint: SandboxEndpoint,
  progress?: (line: string) => void,
): Promise<void> {
  const file = createReadStream(packed.archivePath);
  const report = progressReporter(`Uploading to ${endpoint.url}`, packed.archiveBytes, progress);
  let reported = 0;
  const body = countedStream(file, (bytes) => {
    report(bytes - reported);
    reported = bytes;
  });
  try {
    await putUpload(endpoint, packed.digest, body, packed.archiveBytes);
  } catch (error) {
    if (error instanceof UploadRefusedError) {
      throw new AgentsError('invalid_argument', `The sandbox server refused the workspace: ${error.reason}`, {
        cause: error,
      });
    }
    throw new AgentsError(
      'sandbox_unavailable',
      `Could not upload the workspace to ${endpoint.url}: ${(error as Error).message}`,
      { cause: error },
    );
  } finally {
    file.destroy();
  }
}

/** What `--workspace` / `--repo` asked for. */
export type WorkspaceRequest =
  { kind: 'folder'; folder: string } | { kind: 'repository'; url: string; ref?: string };

/**
 * Packs and uploads what a run starts from, and returns the run input's `workspace` field. The
 * temporary files are removed whatever happens.
 */
export async function prepareWorkspaceSource(
  requested: WorkspaceRequest,
  endpoints: SandboxEndpoint[],
  options: PackOptions,
): Promise<WorkspaceSource> {
  const scratch = await mkdtemp(path.join(os.tmpdir(), 'agents-workspace-'));
  try {
    if (requested.kind === 'folder') {
      const packed = await packFolder(requested.folder, scratch, options);
      await uploadWorkspace(packed, uploadServerFor(endpoints, packed.digest), options.progress);
      return {
        kind: 'folder',
        path: await realpath(requested.folder),
        digest: packed.digest,
        files: packed.files,
        bytes: packed.bytes,
      };
    }
    const packed = await packRepository(requested.url, requested.ref, scratch, options);
    await uploadWorkspace(packed, uploadServerFor(endpoints, packed.digest), options.progress);
    return {
      kind: 'repository',
      url: packed.url,
      ...(requested.ref === undefined ? {} : { ref: requested.ref }),
      commit: packed.commit,
      digest: packed.digest,
      files: packed.files,
      bytes: packed.bytes,
    };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * What a workspace started from, in the words `agents start` and `agents status` both use:
 * `folder <path> (<n> files, <size>, sha256 <digest>)` or
 * `repository <url> at <commit> (<ref>) (<n> files, <size>, sha256 <digest>)`.
 */
export function describeWorkspaceSource(workspace: WorkspaceSource): string {
  const contents = `(${workspace.files} files, ${formatBytes(workspace.bytes)}, sha256 ${workspace.digest.slice(0, 12)})`;
  if (workspace.kind === 'folder') return `folder ${workspace.path} ${contents}`;
  const ref = workspace.ref === undefined ? '' : ` (${workspace.ref})`;
  return `repository ${workspace.url} at ${workspace.commit.slice(0, 12)}${ref} ${contents}`;
}
