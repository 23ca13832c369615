import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, fchmodSync, fstatSync, openSync } from 'node:fs';
import { link, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { z } from 'zod';
import { parseHostPort } from '../common/host-port';
import { SEARCH_ATTRIBUTES } from '../common/search-attributes';
import {
  ensurePrivateFolder,
  PRIVATE_FILE_MODE,
  tightenPrivateFile,
  writePrivateFile,
} from '../sandbox/private-files';
import type { EmbeddedTemporal } from './config';
import { AgentsError } from './errors';
import { commandLineOf, isSameProcess, processIdentity, processListeningOn } from './local-processes';

/** Files of the embedded server under `$AGENTS_HOME`. */
export function serverFiles(home: string) {
  return {
    database: path.join(home, 'temporal.db'),
    pidFile: path.join(home, 'temporal.pid'),
    /** Held by the one command that starts the server, so commands run at once start one. */
    lockFile: path.join(home, 'temporal.lock'),
    logFile: path.join(home, 'logs', 'temporal.log'),
  };
}

/**
 * Dynamic config of the embedded server. The history service reads the tasks it hands to matching
 * (a workflow task after an activity completes, a fired timer) at most `…MaxPollRPS` times per second
 * per shard, 20 by default, and the dev server has one shard: past a short burst every workflow task
 * then waits up to 50 ms (measured: 35 ms p50 of the time from an activity's completion to the next
 * workflow task). Reads are triggered by new tasks, so a higher cap costs nothing when idle.
 */
const DEV_SERVER_DYNAMIC_CONFIG = {
  'history.transferProcessorMaxPollRPS': 2000,
  'history.timerProcessorMaxPollRPS': 2000,
} as const;

/** The `temporal server start-dev` arguments: SQLite file, loopback, Web UI, search attributes. */
export function devServerArguments(server: EmbeddedTemporal, home: string): string[] {
  return [
    'server',
    'start-dev',
    '--db-filename',
    serverFiles(home).database,
    '--ip',
    '127.0.0.1',
    '--port',
    String(server.port),
    '--ui-port',
    String(server.uiPort),
    '--namespace',
    server.namespace,
    '--log-level',
    'warn',
    '--ui-disable-news-fetch',
    // WAL with full sync stays durable on every commit and, measured with bench/iterations.ts,
    // nearly doubles the throughput of concurrent runs over SQLite's default rollback journal.
    '--sqlite-pragma',
    'journal_mode=wal',
    '--sqlite-pragma',
    'synchronous=full',
    ...Object.entries(DEV_SERVER_DYNAMIC_CONFIG).flatMap(([key, value]) => [
      '--dynamic-config-value',
      `${key}=${value}`,
    ]),
    ...SEARCH_ATTRIBUTES.flatMap(({ name, type }) => ['--search-attribute', `${name}=${type}`]),
  ];
}

/** True when a Temporal frontend answers at `address` within `timeoutMs` (a second by default). */
export async function isServerUp(address: string, timeoutMs = 1000): Promise<boolean> {
  try {
    const connection = await Connection.connect({ address, connectTimeout: timeoutMs });
    await connection.close();
    return true;
  } catch {
    return false;
  }
}

const INDEXED_VALUE_TYPES = {
  Keyword: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  Int: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_INT,
} as const;

/**
 * Registers the custom search attributes that the namespace lacks; returns their names. Safe to
 * run again: attributes already there are left alone.
 */
export async function ensureSearchAttributes(connection: Connection, namespace: string): Promise<string[]> {
  const existing = await connection.operatorService.listSearchAttributes({ namespace });
  const missing = SEARCH_ATTRIBUTES.filter(({ name }) => existing.customAttributes?.[name] === undefined);
  if (missing.length === 0) return [];
  await connection.operatorService.addSearchAttributes({
    namespace,
    searchAttributes: Object.fromEntries(missing.map(({ name, type }) => [name, INDEXED_VALUE_TYPES[type]])),
  });
  return missing.map(({ name }) => name);
}

export interface StartServerOptions {
  binary: string;
  server: EmbeddedTemporal;
  home: string;
  /** `background` outlives the CLI (pid file, log file); `foreground` ends with it. */
  mode: 'foreground' | 'background';
  /** Where a foreground server's output goes: the log file unless inherited. */
  inheritOutput?: boolean;
  /** More `start-dev` arguments, such as `--dynamic-config-value` (tests). */
  extraArguments?: string[];
}

/**
 * The SQLite files of the dev server: the database with its write-ahead log and shared memory.
 * SQLite creates the last two with the database's own mode.
 */
function databaseFiles(home: string): string[] {
  const { database } = serverFiles(home);
  return [database, `${database}-wal`, `${database}-shm`];
}

/**
 * Runs the server under umask 077, so every file it creates (the database and its companions,
 * whatever a later version adds) is its owner's only; `exec` keeps the process and its pid.
 */
const PRIVATE_UMASK_WRAPPER = ['-c', 'umask 077 && exec "$0" "$@"'];

/**
 * Starts `temporal server start-dev` and resolves once its frontend answers. Its files under
 * `$AGENTS_HOME` are readable by their owner only (the database holds every run's history). A
 * background server is recorded in `temporal.pid` by the process that listens on its port, with
 * that process's start time, so a later stop signals that server and nothing else.
 */
export async function startDevServer(options: StartServerOptions): Promise<ChildProcess> {
  const files = serverFiles(options.home);
  await ensurePrivateFolder(path.dirname(files.logFile));
  for (const file of databaseFiles(options.home)) await tightenPrivateFile(file);
  const logDescriptor = openSync(files.logFile, 'a', PRIVATE_FILE_MODE);
  const logStatus = fstatSync(logDescriptor);
  if ((logStatus.mode & 0o077) !== 0) fchmodSync(logDescriptor, logStatus.mode & 0o700);
  const output = options.inheritOutput === true ? 'inherit' : logDescriptor;
  const serverArguments = [
    ...PRIVATE_UMASK_WRAPPER,
    options.binary,
    ...devServerArguments(options.server, options.home),
    ...(options.extraArguments ?? []),
  ];
  const child = spawn('/bin/sh', serverArguments, {
    stdio: ['ignore', output, output],
    detached: options.mode === 'background',
  });
  closeSync(logDescriptor);
  let exit: string | undefined;
  child.once('exit', (code, signal) => {
    exit = signal === null ? `exit code ${code}` : `signal ${signal}`;
  });
  child.once('error', (error) => {
    exit = error.message;
  });
  const deadline = Date.now() + SERVER_START_TIMEOUT_MS;
  while (!(await isServerUp(options.server.address))) {
    if (exit !== undefined || Date.now() > deadline) {
      if (exit === undefined) child.kill('SIGKILL');
      throw new AgentsError(
        'server_failed',
        `The Temporal dev server did not start on ${options.server.address} (${exit ?? `no answer in ${SERVER_START_TIMEOUT_MS / 1000} s`}): ${await logTail(files.logFile)}`,
      );
    }
    await sleep(200);
  }
  if (options.mode === 'background') {
    child.unref();
    const listener = (await processListeningOn(options.server.port)) ?? child.pid;
    const identity = listener === undefined ? undefined : await processIdentity(listener);
    if (identity !== undefined) {
      const record: ServerRecord = { ...identity, address: options.server.address };
      await writePrivateFile(files.pidFile, JSON.stringify(record));
    }
  }
  return child;
}

/** The end of the server log, on one line, for error messages. */
async function logTail(logFile: string): Promise<string> {
  try {
    const text = await readFile(logFile, 'utf8');
    return text.trim().split('\n').slice(-3).join(' | ').slice(-400) || `see ${logFile}`;
  } catch {
    return `see ${logFile}`;
  }
}

/** How long the server may take to answer after it starts. */
const SERVER_START_TIMEOUT_MS = 60_000;

/**
 * How long a command waits for the server another command is starting: that one's start, and
 * room for the many commands that may queue behind the same lock.
 */
const SERVER_WAIT_TIMEOUT_MS = 90_000;

/** What `temporal.pid` holds: the process that listens on the server's port, and its start time. */
const serverRecordSchema = z.object({
  pid: z.number().int().positive(),
  /** Absent in records written before start times were kept. */
  startTime: z.string().optional(),
  address: z.string(),
});

/** The background server as `$AGENTS_HOME/temporal.pid` records it. */
export type ServerRecord = z.infer<typeof serverRecordSchema>;

/** The port of a `host:port` address. */
function portOf(address: string): number {
  return Number(address.slice(address.lastIndexOf(':') + 1));
}

/**
 * True when something accepts TCP connections on `address`. A connection the kernel completes,
 * however busy the process behind it: unlike a Temporal call, it does not time out under load.
 */
export async function isPortListening(address: string): Promise<boolean> {
  const target = parseHostPort(address);
  if (target === undefined) return false;
  const socket = connect({ host: target.host, port: target.port });
  try {
    return await new Promise<boolean>((resolve) => {
      socket.setTimeout(5_000);
      socket.once('connect', () => resolve(true));
      // A connection neither made nor refused: the backlog of a busy listener is full.
      socket.once('timeout', () => resolve(true));
      socket.once('error', () => resolve(false));
    });
  } finally {
    socket.destroy();
  }
}

/** The embedded server a command uses: one that already ran, or the one it started. */
export type ServerAcquisition =
  /** `pid` is the process listening on the port, when it can be seen. */
  | { kind: 'reused'; pid: number | undefined }
  | { kind: 'started'; pid: number | undefined; child: ChildProcess };

/** What {@link acquireEmbeddedServer} needs: how to start a server, and where to say it does. */
export interface AcquireServerOptions extends Omit<StartServerOptions, 'binary'> {
  /** Finds the `temporal` binary; called only when a server has to be started. */
  binary: () => string;
  onProgress: (message: string) => void;
}

/**
 * Reuses the embedded server when its port is taken, or starts it, so that any number of commands
 * at once start exactly one. Starting happens under `$AGENTS_HOME/temporal.lock`; the others wait,
 * then find the port taken and reuse that server once it answers (registering search attributes it
 * may lack, as a server someone else started would).
 */
export async function acquireEmbeddedServer(options: AcquireServerOptions): Promise<ServerAcquisition> {
  const { server, home } = options;
  const { lockFile } = serverFiles(home);
  await ensurePrivateFolder(home);
  const deadline = Date.now() + SERVER_WAIT_TIMEOUT_MS;
  for (;;) {
    if (await isPortListening(server.address)) return reuseServer(server, deadline);
    const release = await tryLock(lockFile);
    if (release !== undefined) {
      try {
        // Whoever held the lock before may have started it.
        if (await isPortListening(server.address)) return await reuseServer(server, deadline);
        const binary = options.binary();
        options.onProgress(
          `Starting the Temporal dev server on ${server.address} (data ${serverFiles(home).database}) …`,
        );
        const child = await startDevServer({ ...options, binary });
        return { kind: 'started', pid: (await processListeningOn(server.port)) ?? child.pid, child };
      } finally {
        await release();
      }
    }
    if (Date.now() > deadline) {
      throw new AgentsError(
        'server_failed',
        `Another command held ${lockFile} for ${SERVER_WAIT_TIMEOUT_MS / 1000} s while starting the Temporal dev server on ${server.address}, and it does not answer: see ${serverFiles(home).logFile}`,
      );
    }
    await sleep(100);
  }
}

/** Waits for the server listening on the port to answer, then registers the search attributes. */
async function reuseServer(server: EmbeddedTemporal, deadline: number): Promise<ServerAcquisition> {
  while (!(await isServerUp(server.address, 5_000))) {
    if (Date.now() > deadline) {
      const pid = await processListeningOn(server.port);
      const owner = pid === undefined ? '' : ` (pid ${pid}: ${(await commandLineOf(pid)).slice(0, 120)})`;
      throw new AgentsError(
        'server_failed',
        `Something listens on ${server.address}${owner} but does not answer as a Temporal server: free the port or choose another with AGENTS_TEMPORAL_PORT`,
      );
    }
    await sleep(200);
  }
  const connection = await Connection.connect({ address: server.address, connectTimeout: '10s' });
  try {
    await ensureSearchAttributes(connection, server.namespace);
  } finally {
    await connection.close();
  }
  return { kind: 'reused', pid: await processListeningOn(server.port) };
}

/** What a lock file holds: the process holding it, and a token no other holder has. */
const lockOwnerSchema = z.object({ pid: z.number().int(), startTime: z.string(), token: z.string() });

/** A lock whose holder died before writing it is taken back after this long. */
const UNWRITTEN_LOCK_MS = 10_000;

/**
 * Takes `lockFile` when nobody holds it (created with O_EXCL); returns its release, or undefined
 * when a live process holds it. A lock whose holder has ended is broken for the next attempt.
 */
async function tryLock(lockFile: string): Promise<(() => Promise<void>) | undefined> {
  const self = await processIdentity(process.pid);
  const content = JSON.stringify({ pid: process.pid, startTime: self?.startTime ?? '', token: randomUUID() });
  try {
    await writeFile(lockFile, content, { flag: 'wx', mode: PRIVATE_FILE_MODE });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    await breakStaleLock(lockFile);
    return undefined;
  }
  return async () => {
    const current = await readFile(lockFile, 'utf8').catch(() => '');
    if (current === content) await rm(lockFile, { force: true });
  };
}

/**
 * Removes `lockFile` when its holder is gone: a command killed while it started the server. The
 * file is first renamed aside, so of two commands breaking it at once only one removes it, and a
 * lock taken meanwhile by a live command is put back.
 */
async function breakStaleLock(lockFile: string): Promise<void> {
  let content: string;
  let modified: number;
  try {
    content = await readFile(lockFile, 'utf8');
    modified = (await stat(lockFile)).mtimeMs;
  } catch {
    return; // Released meanwhile.
  }
  const owner = lockOwnerSchema.safeParse(safeJson(content));
  const stale = owner.success
    ? !(await isSameProcess(owner.data))
    : Date.now() - modified > UNWRITTEN_LOCK_MS;
  if (!stale) return;
  const aside = `${lockFile}.${randomUUID()}.stale`;
  try {
    await rename(lockFile, aside);
  } catch {
    return; // Another command broke it first.
  }
  if ((await readFile(aside, 'utf8').catch(() => content)) !== content) {
    // A live command took the lock between the read and the rename: give it back.
    await link(aside, lockFile).catch(() => undefined);
  }
  await rm(aside, { force: true });
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** How `agents server stop` ended: the server it stopped, or why nothing was stopped. */
export type ServerStop = { stopped: true; pid: number } | { stopped: false; reason: string };

/**
 * Stops the background server recorded in `$AGENTS_HOME/temporal.pid`, after checking that the
 * recorded PID is still that server: the same start time (or, in a record without one, the
 * process listening on its address). A PID the kernel has given to another program is left alone
 * and the stale record removed.
 */
export async function stopEmbeddedServer(home: string): Promise<ServerStop> {
  const { pidFile } = serverFiles(home);
  let text: string;
  try {
    text = await readFile(pidFile, 'utf8');
  } catch {
    return { stopped: false, reason: `nothing is recorded in ${pidFile}` };
  }
  const parsed = serverRecordSchema.safeParse(safeJson(text));
  if (!parsed.success) {
    await rm(pidFile, { force: true });
    return { stopped: false, reason: `${pidFile} held no server record; it was removed` };
  }
  const record = parsed.data;
  const current = await processIdentity(record.pid);
  const isServer =
    current !== undefined &&
    (record.startTime === undefined
      ? (await processListeningOn(portOf(record.address))) === record.pid
      : current.startTime === record.startTime);
  if (!isServer) {
    await rm(pidFile, { force: true });
    return {
      stopped: false,
      reason:
        current === undefined
          ? `the server recorded in ${pidFile} (pid ${record.pid}) had already ended`
          : `pid ${record.pid}, recorded in ${pidFile}, is now another process and was left alone`,
    };
  }
  const identity = current;
  const ended = async (timeoutMs: number) => {
    const until = Date.now() + timeoutMs;
    while (await isSameProcess(identity)) {
      if (Date.now() > until) return false;
      await sleep(100);
    }
    return true;
  };
  process.kill(record.pid, 'SIGTERM');
  if (!(await ended(10_000)) && (await isSameProcess(identity))) {
    process.kill(record.pid, 'SIGKILL');
    await ended(5_000);
  }
  await rm(pidFile, { force: true });
  return { stopped: true, pid: record.pid };
}
