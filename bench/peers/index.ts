/**
 * The anchors bench:iterations sets durable-agents beside: the physical floor of a durable write on
 * this disk, and the same scripted loop in two other durable-execution libraries.
 *
 * - floor: fsync'd single-row SQLite commits (WAL, synchronous=FULL) and fsync'd appends, timed by
 *   `floor.py` with python3's standard library.
 * - LangGraph: `langgraph_loop.py`, a StateGraph checkpointed per step by SqliteSaver on a WAL +
 *   synchronous=FULL file with `durability="sync"`, in a venv of the pinned `requirements.txt` made
 *   once under `$AGENTS_HOME/cache`.
 * - DBOS: `dbos/dbos-loop.ts`, a workflow of one step per turn, on a PostgreSQL 15 this module
 *   starts in a temporary folder on a free port and removes afterwards; the SDK is installed into
 *   `dbos/node_modules` from its own lock file on first use.
 *
 * Every file lives in temporary folders under the same `os.tmpdir()` as the Temporal dev server's
 * database, so all of them write to the same disk. A peer that cannot be set up here is
 * reported with its reason and the others still run.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { access, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { loadConfig } from '../../client/config';
import { freePort } from '../../test/helpers/temporal-server';
import { peerFiguresSchema, type PeerFigures, type PeerRequest } from './peer-protocol';

export type { PeerFigures } from './peer-protocol';

const PEERS_FOLDER = __dirname;
const DBOS_FOLDER = path.join(PEERS_FOLDER, 'dbos');
const POSTGRES_BIN = '/usr/lib/postgresql/15/bin';
/** How long one peer program may take before it is stopped and reported as failed. */
const PEER_TIMEOUT_MS = 10 * 60_000;

/** A peer that could not be measured here, and why, in one line. */
export interface Unavailable {
  unavailable: string;
}

/** The floor's samples: per fsync'd SQLite commit and per fsync'd append. */
export interface FloorFigures {
  commitMs: number[];
  appendMs: number[];
  sqlite: string;
}

const floorFiguresSchema = z.object({
  commitMs: z.array(z.number()).min(1),
  appendMs: z.array(z.number()).min(1),
  sqlite: z.string(),
});

/** One shape of loop every peer plays: `runs` loops at once of `iterations` turns each. */
export interface PeerShape {
  runs: number;
  iterations: number;
}

/** What `measurePeers` found: the floor, and each peer's figures per shape, in the shapes' order. */
export interface PeerResults {
  floor: FloorFigures | Unavailable;
  langGraph: Array<PeerFigures | Unavailable>;
  dbos: Array<PeerFigures | Unavailable>;
}

/** Whether a result is a reason rather than figures. */
export function isUnavailable<Result>(result: Result | Unavailable): result is Unavailable {
  return typeof result === 'object' && result !== null && 'unavailable' in result;
}

/** Runs a program to its end; resolves to its stdout, or fails with the last line it wrote on stderr. */
async function runProgram(
  command: string,
  args: string[],
  options: { cwd?: string; input?: string; uid?: number; gid?: number; label?: string } = {},
): Promise<string> {
  const child = spawn(command, args, {
    cwd: options.cwd,
    uid: options.uid,
    gid: options.gid,
    stdio: ['pipe', 'pipe', 'pipe'],
    timeout: PEER_TIMEOUT_MS,
    env: { ...process.env, NODE_OPTIONS: '', PIP_DISABLE_PIP_VERSION_CHECK: '1' },
  });
  const stdout: Buffer[] = [];
  const stderr: Buffer[] = [];
  child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
  child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
  // A program that exits without reading its input (`id`) closes the pipe first: that is no failure.
  child.stdin.on('error', () => {});
  child.stdin.end(options.input ?? '');
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  if (code !== 0) {
    const lastLine = Buffer.concat(stderr).toString('utf8').trim().split('\n').pop() ?? '';
    throw new Error(
      `${options.label ?? path.basename(command)} exited with ${signal ?? String(code)}${lastLine === '' ? '' : `: ${lastLine}`}`,
    );
  }
  return Buffer.concat(stdout).toString('utf8');
}

/** Parses a peer's stdout with its schema; a wrong shape is a one-line error naming the peer. */
function parseOutput<Schema extends z.ZodType>(
  peer: string,
  stdout: string,
  schema: Schema,
): z.output<Schema> {
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    throw new Error(`${peer} printed no JSON figures`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success)
    throw new Error(`${peer} printed figures of the wrong shape: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

async function exists(file: string): Promise<boolean> {
  return access(file).then(
    () => true,
    () => false,
  );
}

/** Turns a failure of `step` into the one-line reason printed in the peer's place. */
async function orUnavailable<Result>(
  step: string,
  measure: () => Promise<Result>,
): Promise<Result | Unavailable> {
  try {
    return await measure();
  } catch (error) {
    return { unavailable: `${step}: ${(error as Error).message.split('\n')[0] ?? 'failed'}` };
  }
}

/** Times `commits` fsync'd SQLite commits and as many fsync'd appends in `folder`. */
async function measureFloor(folder: string, commits: number): Promise<FloorFigures> {
  const stdout = await runProgram('python3', [path.join(PEERS_FOLDER, 'floor.py'), String(commits), folder], {
    label: 'floor.py',
  });
  return parseOutput('floor.py', stdout, floorFiguresSchema);
}

/**
 * The venv's python, making the venv first when it is missing: under `$AGENTS_HOME/cache`, named
 * by a digest of `requirements.txt` so a change of pins makes a new one, and reused only once its
 * install finished (a marker written last), so an interrupted install is made again.
 */
async function ensureLangGraphPython(progress: (line: string) => void): Promise<string> {
  const requirementsFile = path.join(PEERS_FOLDER, 'requirements.txt');
  const digest = createHash('sha256')
    .update(await readFile(requirementsFile))
    .digest('hex')
    .slice(0, 12);
  const venv = path.join(loadConfig(process.env).home, 'cache', `bench-venv-${digest}`);
  const python = path.join(venv, 'bin', 'python');
  const installed = path.join(venv, 'installed');
  if (await exists(installed)) return python;
  progress(`making the LangGraph venv in ${venv} (pip install -r bench/peers/requirements.txt)`);
  await rm(venv, { recursive: true, force: true });
  await mkdir(path.dirname(venv), { recursive: true });
  try {
    await runProgram('python3', ['-m', 'venv', venv], { label: 'python3 -m venv' });
    await runProgram(python, ['-m', 'pip', 'install', '--quiet', '-r', requirementsFile], {
      label: 'pip install',
    });
    await writeFile(installed, `${new Date().toISOString()}\n`);
  } catch (error) {
    await rm(venv, { recursive: true, force: true });
    throw error;
  }
  return python;
}

/** Installs the DBOS SDK into `bench/peers/dbos/node_modules` from its lock file, unless it is there. */
async function ensureDbosInstall(progress: (line: string) => void): Promise<void> {
  const lock = z
    .object({ packages: z.record(z.string(), z.object({ version: z.string().optional() })) })
    .parse(JSON.parse(await readFile(path.join(DBOS_FOLDER, 'package-lock.json'), 'utf8')));
  const wanted = lock.packages['node_modules/@dbos-inc/dbos-sdk']?.version;
  const installed = path.join(DBOS_FOLDER, 'node_modules', '@dbos-inc', 'dbos-sdk', 'package.json');
  if (await exists(installed)) {
    const { version } = z
      .object({ version: z.string() })
      .parse(JSON.parse(await readFile(installed, 'utf8')));
    if (version === wanted) return;
  }
  progress('installing the DBOS SDK (npm ci in bench/peers/dbos)');
  await runProgram('npm', ['ci', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd: DBOS_FOLDER,
    label: 'npm ci',
  });
}

/** A PostgreSQL of the bench's own, and how to stop it. */
interface Postgres {
  url: string;
  stop(): Promise<void>;
}

/**
 * Starts PostgreSQL 15 from a fresh `initdb` in a temporary folder, listening on 127.0.0.1 only, on a free
 * port, its socket in the same folder; as the `postgres` user when running as root, which initdb
 * requires. Its durability settings are the defaults: fsync on, synchronous_commit on.
 */
async function startPostgres(): Promise<Postgres> {
  const initdb = path.join(POSTGRES_BIN, 'initdb');
  if (!(await exists(initdb))) throw new Error(`${initdb} is missing (apt-get install postgresql-15)`);
  const cluster = await mkdtemp(path.join(os.tmpdir(), 'agents-bench-postgres-'));
  let owner: { uid: number; gid: number } | undefined;
  if (process.getuid?.() === 0) {
    const id = (flag: string) =>
      runProgram('id', [flag, 'postgres'], { label: 'id postgres' }).then((output) => Number(output.trim()));
    owner = { uid: await id('-u'), gid: await id('-g') };
    await chown(cluster, owner.uid, owner.gid);
  }
  const data = path.join(cluster, 'data');
  const pgCtl = path.join(POSTGRES_BIN, 'pg_ctl');
  const stop = async () => {
    try {
      await runProgram(pgCtl, ['-D', data, '-m', 'fast', '-w', 'stop'], {
        cwd: cluster,
        label: 'pg_ctl stop',
        ...owner,
      });
    } finally {
      await rm(cluster, { recursive: true, force: true });
    }
  };
  try {
    await runProgram(initdb, ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-instructions'], {
      cwd: cluster,
      label: 'initdb',
      ...owner,
    });
    const port = await freePort();
    const serverOptions = `-c listen_addresses=127.0.0.1 -p ${port} -c unix_socket_directories=${cluster}`;
    await runProgram(
      pgCtl,
      ['-D', data, '-l', path.join(cluster, 'server.log'), '-w', '-o', serverOptions, 'start'],
      {
        cwd: cluster,
        label: 'pg_ctl start',
        ...owner,
      },
    );
    return { url: `postgresql://postgres@127.0.0.1:${port}/durable_agents_bench`, stop };
  } catch (error) {
    // A server that started half way is stopped; the folder goes either way.
    await stop().catch(() => undefined);
    throw error;
  }
}

/** What `measurePeers` needs: the turns to play, the user prompts, the shapes, how many floor commits. */
export interface PeerOptions {
  turns: PeerRequest['turns'];
  prompts: PeerRequest['prompts'];
  shapes: PeerShape[];
  floorCommits: number;
  progress: (line: string) => void;
}

/** Measures the floor, then LangGraph and DBOS in every shape, one after another; never throws for a peer. */
export async function measurePeers(options: PeerOptions): Promise<PeerResults> {
  const { turns, prompts, shapes, progress } = options;
  const folder = await mkdtemp(path.join(os.tmpdir(), 'agents-bench-peers-'));
  try {
    progress(`floor: ${options.floorCommits} fsync'd SQLite commits and appends`);
    const floor = await orUnavailable('timing commits', () => measureFloor(folder, options.floorCommits));

    const python = await orUnavailable('making its venv', () => ensureLangGraphPython(progress));
    const langGraph: Array<PeerFigures | Unavailable> = [];
    for (const [index, shape] of shapes.entries()) {
      if (isUnavailable(python)) {
        langGraph.push(python);
        continue;
      }
      progress(`LangGraph: ${shape.runs} × ${shape.iterations}`);
      const request: PeerRequest = {
        turns,
        prompts,
        ...shape,
        database: path.join(folder, `langgraph-${index}.sqlite`),
      };
      langGraph.push(
        await orUnavailable('running the loop', async () =>
          parseOutput(
            'langgraph_loop.py',
            await runProgram(python, [path.join(PEERS_FOLDER, 'langgraph_loop.py')], {
              input: JSON.stringify(request),
              label: 'langgraph_loop.py',
            }),
            peerFiguresSchema,
          ),
        ),
      );
    }

    const dbos = await orUnavailable('setting it up', () => measureDbos(options));
    return { floor, langGraph, dbos: isUnavailable(dbos) ? shapes.map(() => dbos) : dbos };
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
}

/** Installs DBOS when needed, starts PostgreSQL, plays every shape on a database of its own, stops it. */
async function measureDbos(options: PeerOptions): Promise<Array<PeerFigures | Unavailable>> {
  await ensureDbosInstall(options.progress);
  options.progress('DBOS: starting PostgreSQL 15 (initdb in a temporary folder)');
  const postgres = await startPostgres();
  try {
    const results: Array<PeerFigures | Unavailable> = [];
    for (const [index, shape] of options.shapes.entries()) {
      options.progress(`DBOS: ${shape.runs} × ${shape.iterations}`);
      const request: PeerRequest = {
        turns: options.turns,
        prompts: options.prompts,
        ...shape,
        database: `${postgres.url}_${index}`,
      };
      results.push(
        await orUnavailable('running the loop', async () =>
          parseOutput(
            'dbos-loop.ts',
            await runProgram(
              process.execPath,
              ['--no-deprecation', '--import', 'tsx', path.join(DBOS_FOLDER, 'dbos-loop.ts')],
              {
                input: JSON.stringify(request),
                cwd: path.join(PEERS_FOLDER, '..', '..'),
                label: 'dbos-loop.ts',
              },
            ),
            peerFiguresSchema,
          ),
        ),
      );
    }
    return results;
  } finally {
    await postgres.stop();
  }
}
