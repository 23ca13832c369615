import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { freePort, quietRuntime } from './temporal-server';
import { waitFor } from './wait';

const run = promisify(execFile);

/** The Temporal server version the cluster runs, the same as `docker-compose.yml`'s images. */
export const CLUSTER_SERVER_VERSION = 'v1.32.2';

/** Where PostgreSQL 15's binaries live on Debian. */
const POSTGRES_BIN = process.env.AGENTS_POSTGRES_BIN ?? '/usr/lib/postgresql/15/bin';

const ROOT = path.resolve(__dirname, '..', '..');

/** The Temporal services, each a process of its own as in a real deployment. */
export type ClusterService = 'frontend' | 'matching' | 'history-1' | 'history-2' | 'worker';
const SERVICES: ClusterService[] = ['frontend', 'matching', 'history-1', 'history-2', 'worker'];

/** A Temporal cluster on PostgreSQL: one process per service, two history hosts sharing its shards. */
export interface TestCluster {
  /** The frontend's `host:port`. */
  address: string;
  namespace: string;
  client: Client;
  connection: Connection;
  /** Environment for a child `agents` process on this cluster, with `home` as its `$AGENTS_HOME`. */
  environment(home: string): NodeJS.ProcessEnv;
  /** SIGKILLs one service's process. */
  kill(service: ClusterService): Promise<void>;
  /** Starts a killed service's process again, on the same ports and database. */
  restart(service: ClusterService): Promise<void>;
  /** The service's output so far, for a failure's message. */
  log(service: ClusterService | 'postgres'): Promise<string>;
  close(): Promise<void>;
}

/**
 * The server and sql tool, built from the Go module proxy once per version by
 * `tools/temporal-cluster/build.sh` (which `.ci/run` calls; a cold build takes 12–15 minutes, so
 * the first test on a machine without it builds it).
 */
async function clusterBinaries(): Promise<{ server: string; sql: string }> {
  const cache =
    process.env.AGENTS_CLUSTER_CACHE ??
    path.join(os.homedir(), '.cache', 'durable-agents', `temporal-server-${CLUSTER_SERVER_VERSION}`);
  const script = path.join(ROOT, 'tools', 'temporal-cluster', 'build.sh');
  const build = spawn('bash', [script, CLUSTER_SERVER_VERSION], {
    env: { ...process.env, AGENTS_CLUSTER_CACHE: cache },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const [code] = (await once(build, 'exit')) as [number | null];
  if (code !== 0) throw new Error(`building the Temporal server failed (${script} exited ${code})`);
  return { server: path.join(cache, 'bin', 'server'), sql: path.join(cache, 'bin', 'sql') };
}

/**
 * A free port below 32768: the schema stores a host's membership port as a SMALLINT, and a
 * larger one stops the server at start.
 */
async function freeMembershipPort(taken: Set<number>): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (taken.has(port)) continue;
    const server = createServer();
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false));
      server.listen(port, '127.0.0.1', () => resolve(true));
    });
    if (!bound) continue;
    server.close();
    await once(server, 'close');
    taken.add(port);
    return port;
  }
}

/** Runs a PostgreSQL binary as the `postgres` user when root: `initdb` refuses to run as root. */
function postgresCommand(binary: string, args: string[]): { command: string; args: string[] } {
  const full = path.join(POSTGRES_BIN, binary);
  return process.getuid?.() === 0
    ? { command: 'runuser', args: ['-u', 'postgres', '--', full, ...args] }
    : { command: full, args };
}

interface ServicePorts {
  grpc: number;
  membership: number;
  http?: number;
}

/** The server's configuration for one process: the same cluster, this process's own ports. */
function serverConfig(options: {
  postgresPort: number;
  ports: Record<'frontend' | 'matching' | 'worker', ServicePorts>;
  history: ServicePorts;
  dynamicConfigFile: string;
}): string {
  const { postgresPort, ports, history } = options;
  const datastore = (database: string, connections: number) => `
      sql:
        pluginName: postgres12
        databaseName: ${database}
        connectAddr: 127.0.0.1:${postgresPort}
        connectProtocol: tcp
        user: temporal
        password: temporal
        maxConns: ${connections}
        maxIdleConns: ${connections}
        maxConnLifetime: 1h`;
  const service = (name: string, { grpc, membership, http }: ServicePorts) => `
  ${name}:
    rpc:
      grpcPort: ${grpc}
      membershipPort: ${membership}
      bindOnLocalHost: true${http === undefined ? '' : `\n      httpPort: ${http}`}`;
  const frontend = `127.0.0.1:${ports.frontend.grpc}`;
  return `log:
  stdout: true
  level: warn
persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:${datastore('temporal', 10)}
    postgres-visibility:${datastore('temporal_visibility', 4)}
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1
services:${service('frontend', ports.frontend)}${service('matching', ports.matching)}${service('history', history)}${service('worker', ports.worker)}
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: ${frontend}
dcRedirectionPolicy:
  policy: noop
publicClient:
  hostPort: ${frontend}
dynamicConfigClient:
  filepath: ${options.dynamicConfigFile}
  pollInterval: 10s
`;
}

/**
 * Starts PostgreSQL 15 in a temporary folder on a port of its own, creates the Temporal schemas
 * with the sql tool, starts frontend, matching, two history hosts and the worker service as
 * separate processes, and registers the `default` namespace. Search attributes are left to the
 * caller (`agents setup`), as in a real deployment.
 */
export async function startTestCluster(): Promise<TestCluster> {
  quietRuntime();
  const binaries = await clusterBinaries();
  const folder = await mkdtemp(path.join(os.tmpdir(), 'agents-cluster-'));
  const children = new Map<ClusterService | 'postgres', ChildProcess>();
  const logFile = (name: string) => path.join(folder, `${name}.log`);
  const startProcess = (name: ClusterService | 'postgres', command: string, args: string[]) => {
    const log = createWriteStream(logFile(name), { flags: 'a' });
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    children.set(name, child);
    return child;
  };
  const stopAll = async () => {
    for (const name of [...SERVICES, 'postgres'] as const) {
      const child = children.get(name);
      if (child === undefined || child.exitCode !== null || child.signalCode !== null) continue;
      // PostgreSQL's SIGINT is its fast shutdown; the Temporal services stop on SIGTERM.
      child.kill(name === 'postgres' ? 'SIGINT' : 'SIGTERM');
      await Promise.race([
        once(child, 'exit'),
        new Promise((resolve) => setTimeout(resolve, 10_000).unref()),
      ]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  };

  try {
    // PostgreSQL: a data folder and socket folder the postgres user owns.
    const data = path.join(folder, 'postgres');
    const socket = path.join(folder, 'socket');
    await mkdir(data);
    await mkdir(socket);
    if (process.getuid?.() === 0) {
      const { stdout } = await run('id', ['-u', 'postgres']);
      const { stdout: group } = await run('id', ['-g', 'postgres']);
      const [uid, gid] = [Number(stdout.trim()), Number(group.trim())];
      await Promise.all([chown(folder, uid, gid), chown(data, uid, gid), chown(socket, uid, gid)]);
    }
    const initdb = postgresCommand('initdb', ['-D', data, '-U', 'temporal', '--auth=trust', '-E', 'UTF8']);
    await run(initdb.command, initdb.args);
    const postgresPort = await freePort();
    const postgres = postgresCommand('postgres', [
      '-D',
      data,
      '-p',
      String(postgresPort),
      '-k',
      socket,
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'max_connections=200',
    ]);
    startProcess('postgres', postgres.command, postgres.args);
    const sqlTool = (database: string, ...command: string[]) =>
      run(binaries.sql, [
        '--plugin',
        'postgres12',
        '--ep',
        '127.0.0.1',
        '-p',
        String(postgresPort),
        '-u',
        'temporal',
        '--pw',
        'temporal',
        '--db',
        database,
        ...command,
      ]);
    await waitFor('PostgreSQL to accept connections', async () => {
      try {
        await sqlTool('temporal', 'create-database');
        return true;
      } catch (error) {
        if (String((error as { stderr?: string }).stderr ?? error).includes('already exists')) return true;
        return false;
      }
    });
    await sqlTool('temporal_visibility', 'create-database');
    for (const [database, schema] of [
      ['temporal', 'postgresql/v12/temporal'],
      ['temporal_visibility', 'postgresql/v12/visibility'],
    ] as const) {
      await sqlTool(database, 'setup-schema', '-v', '0.0');
      await sqlTool(database, 'update-schema', '--schema-name', schema);
    }

    // The Temporal services, each with its own ports, the membership ports below 32768.
    const membershipPorts = new Set<number>();
    const portsOf = async (http = false): Promise<ServicePorts> => ({
      grpc: await freePort(),
      membership: await freeMembershipPort(membershipPorts),
      ...(http ? { http: await freePort() } : {}),
    });
    const ports = { frontend: await portsOf(true), matching: await portsOf(), worker: await portsOf() };
    const histories: [ServicePorts, ServicePorts] = [await portsOf(), await portsOf()];
    const dynamicConfigFile = path.join(folder, 'dynamic-config.yaml');
    // Eager activity dispatch, as the dev server has it on.
    await writeFile(dynamicConfigFile, 'system.enableActivityEagerExecution:\n  - value: true\n');
    const configFiles = new Map<ClusterService, string>();
    for (const service of SERVICES) {
      const history = service === 'history-2' ? histories[1] : histories[0];
      const file = path.join(folder, `${service}.yaml`);
      await writeFile(file, serverConfig({ postgresPort, ports, history, dynamicConfigFile }));
      configFiles.set(service, file);
    }
    const startService = (service: ClusterService) => {
      const name = service.startsWith('history') ? 'history' : service;
      startProcess(service, binaries.server, [
        '--config-file',
        configFiles.get(service)!,
        '--allow-no-auth',
        'start',
        '--service',
        name,
      ]);
    };
    // The frontend first, alone: the first process on a fresh database writes the cluster's
    // metadata, and processes started together race to write it and fail.
    startService('frontend');

    const address = `127.0.0.1:${ports.frontend.grpc}`;
    const connection: Connection = await waitFor<{ exited: string } | { connection: Connection }>(
      'the frontend to answer',
      async () => {
        const exited = [...children].find(([, child]) => child.exitCode !== null);
        if (exited !== undefined) return { exited: exited[0] };
        const candidate = await Connection.connect({ address, connectTimeout: 1000 });
        try {
          await candidate.workflowService.getSystemInfo({});
          return { connection: candidate };
        } catch (error) {
          await candidate.close();
          throw error;
        }
      },
      60_000,
    ).then(async (outcome) => {
      if ('connection' in outcome) return outcome.connection;
      const log = await readFile(logFile(outcome.exited), 'utf8');
      throw new Error(`${outcome.exited} exited at start: ${log.slice(-2000)}`);
    });
    for (const service of SERVICES) if (service !== 'frontend') startService(service);
    const namespace = 'default';
    await waitFor('the default namespace to be registered', async () => {
      try {
        await connection.workflowService.registerNamespace({
          namespace,
          workflowExecutionRetentionPeriod: msToTs('1 day'),
        });
        return true;
      } catch (error) {
        return String(error).includes('already exists') || String(error).includes('AlreadyExists');
      }
    });
    await waitFor('the default namespace to be served', async () => {
      try {
        await connection.workflowService.describeNamespace({ namespace });
        return true;
      } catch {
        return false;
      }
    });
    const client = new Client({ connection, namespace });
    const kill = async (service: ClusterService) => {
      const child = children.get(service);
      if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await once(child, 'exit');
    };
    return {
      address,
      namespace,
      client,
      connection,
      environment: (home) => ({
        ...process.env,
        AGENTS_HOME: home,
        TEMPORAL_ADDRESS: address,
        TEMPORAL_NAMESPACE: namespace,
      }),
      kill,
      async restart(service) {
        await kill(service);
        startService(service);
      },
      log: (service) => readFile(logFile(service), 'utf8'),
      async close() {
        await connection.close();
        await stopAll();
        await rm(folder, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await stopAll();
    const postgresLog = await readFile(logFile('postgres'), 'utf8').catch(() => '');
    await rm(folder, { recursive: true, force: true });
    throw new Error(`the test cluster did not start: ${String(error)}\n${postgresLog.slice(-1500)}`, {
      cause: error,
    });
  }
}
