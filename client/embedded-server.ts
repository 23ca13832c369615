import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, fchmodSync, fstatSync, openSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { SEARCH_ATTRIBUTES } from '../common/search-attributes';
import {
  ensurePrivateFolder,
  PRIVATE_FILE_MODE,
  tightenPrivateFile,
  writePrivateFile,
} from '../sandbox/private-files';
import type { EmbeddedTemporal } from './config';
import { AgentsError } from './errors';

/** Files of the embedded server under `$AGENTS_HOME`. */
export function serverFiles(home: string) {
  return {
    database: path.join(home, 'temporal.db'),
    pidFile: path.join(home, 'temporal.pid'),
    logFile: path.join(home, 'logs', 'temporal.log'),
  };
}

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
    ...SEARCH_ATTRIBUTES.flatMap(({ name, type }) => ['--search-attribute', `${name}=${type}`]),
  ];
}

/** True when a Temporal frontend answers at `address` within a second. */
export async function isServerUp(address: string): Promise<boolean> {
  try {
    const connection = await Connection.connect({ address, connectTimeout: '1s' });
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
 * `$AGENTS_HOME` are readable by their owner only (the database holds every run's history).
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
  const deadline = Date.now() + 60_000;
  while (!(await isServerUp(options.server.address))) {
    if (exit !== undefined || Date.now() > deadline) {
      if (exit === undefined) child.kill('SIGKILL');
      throw new AgentsError(
        'server_failed',
        `The Temporal dev server did not start on ${options.server.address} (${exit ?? 'no answer in 60 s'}): ${await logTail(files.logFile)}`,
      );
    }
    await sleep(200);
  }
  if (options.mode === 'background') {
    child.unref();
    await writePrivateFile(
      files.pidFile,
      JSON.stringify({ pid: child.pid, address: options.server.address }),
    );
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

/**
 * Reuses the embedded server when it answers (registering search attributes it may lack, as a
 * server someone else started would), or starts it in the background.
 */
export async function ensureEmbeddedServer(
  binary: () => string,
  server: EmbeddedTemporal,
  home: string,
  onProgress: (message: string) => void,
): Promise<'reused' | 'started'> {
  if (await isServerUp(server.address)) {
    const connection = await Connection.connect({ address: server.address });
    try {
      await ensureSearchAttributes(connection, server.namespace);
    } finally {
      await connection.close();
    }
    return 'reused';
  }
  const executable = binary();
  onProgress(`Starting the Temporal dev server on ${server.address} (data ${serverFiles(home).database}) …`);
  await startDevServer({ binary: executable, server, home, mode: 'background' });
  return 'started';
}

/** Stops the background server recorded in `$AGENTS_HOME/temporal.pid`; false when none runs. */
export async function stopBackgroundServer(home: string): Promise<boolean> {
  const { pidFile } = serverFiles(home);
  let pid: number;
  try {
    pid = (JSON.parse(await readFile(pidFile, 'utf8')) as { pid: number }).pid;
  } catch {
    return false;
  }
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (alive()) {
    process.kill(pid, 'SIGTERM');
    const deadline = Date.now() + 10_000;
    while (alive() && Date.now() < deadline) await sleep(100);
    if (alive()) process.kill(pid, 'SIGKILL');
  }
  await rm(pidFile, { force: true });
  return true;
}
