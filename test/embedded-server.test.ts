import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isServerUp, serverFiles } from '../client/embedded-server';
import { processIdentity, processListeningOn } from '../client/local-processes';
import { AGENTS_BIN, runCli } from './helpers/cli';
import { freePort, testTemporalBinary } from './helpers/temporal-server';
import { waitFor } from './helpers/wait';

/**
 * The embedded dev server as users meet it through the `agents` binary: many commands at once
 * start one server; `agents server stop` stops that one and nothing else.
 */

/** A fresh `$AGENTS_HOME` on free ports, for a server of its own. */
async function freshHome(): Promise<{ home: string; port: number; environment: NodeJS.ProcessEnv }> {
  const home = await mkdtemp(path.join(os.tmpdir(), 'agents-embedded-'));
  const port = await freePort();
  const temporalDirectory = path.dirname(await testTemporalBinary());
  return {
    home,
    port,
    environment: {
      ...process.env,
      // The pinned binary the suite installs, when `temporal` is not on PATH.
      PATH: `${process.env.PATH ?? ''}${path.delimiter}${temporalDirectory}`,
      AGENTS_HOME: home,
      AGENTS_TEMPORAL_PORT: String(port),
      AGENTS_UI_PORT: String(await freePort()),
      AGENTS_SANDBOX_PORT: String(await freePort()),
      TEMPORAL_ADDRESS: '',
    },
  };
}

/** The PIDs of `temporal server start-dev` processes serving `home`'s database, from /proc. */
async function devServersOf(home: string): Promise<number[]> {
  const database = serverFiles(home).database;
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const commandLine = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const words = commandLine.split('\0');
    if (words.includes('start-dev') && words.includes(database) && !words.includes('-c')) {
      if ((await processIdentity(Number(entry))) !== undefined) found.push(Number(entry));
    }
  }
  return found;
}

const homes: string[] = [];

after(async () => {
  for (const home of homes) {
    await runCli(['server', 'stop'], { ...process.env, AGENTS_HOME: home, TEMPORAL_ADDRESS: '' });
    await rm(home, { recursive: true, force: true });
  }
});

describe('the embedded dev server', () => {
  let sleeper: ReturnType<typeof spawn>;

  before(() => {
    sleeper = spawn('sleep', ['600'], { stdio: 'ignore' });
  });

  after(() => {
    sleeper.kill('SIGKILL');
  });

  it('is started exactly once by twenty `agents start` at once, stopped by `server stop`, and a second stop says nothing was stopped', async () => {
    const { home, port, environment } = await freshHome();
    homes.push(home);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, index) =>
        runCli(
          ['start', `many-${index}`, '--template', 'demo', '--model', 'scripted', '--interval', '3600'],
          environment,
          240_000,
        ),
      ),
    );
    for (const result of results) assert.equal(result.code, 0, result.stderr);
    const output = results.map((result) => result.stdout + result.stderr).join('');
    assert.equal(output.match(/Started the Temporal dev server/g)?.length, 1, output);
    assert.equal(output.match(/Using the Temporal dev server/g)?.length, 19, output);

    const servers = await devServersOf(home);
    assert.equal(servers.length, 1, `one server process, found ${servers.join(', ')}`);
    const [server] = servers;
    assert.equal(await processListeningOn(port), server, 'that process is the one listening');
    const record = JSON.parse(await readFile(serverFiles(home).pidFile, 'utf8')) as {
      pid: number;
      startTime: string;
    };
    assert.equal(record.pid, server, 'temporal.pid names the listening process');
    assert.equal(record.startTime, (await processIdentity(server!))?.startTime);

    const stopped = await runCli(['server', 'stop'], environment);
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.match(
      stopped.stdout,
      new RegExp(`Stopped the background Temporal dev server \\(pid ${server}\\)`),
    );
    assert.deepEqual(await devServersOf(home), []);
    assert.equal(await isServerUp(`127.0.0.1:${port}`), false);

    const again = await runCli(['server', 'stop'], environment);
    assert.equal(again.code, 0, again.stderr);
    assert.match(
      again.stdout,
      /No embedded server was running in the background \(nothing is recorded in .*temporal\.pid\): nothing was stopped/,
    );
  });

  it('never signals an unrelated process whose PID temporal.pid names, with or without a start time', async () => {
    const { home, environment } = await freshHome();
    homes.push(home);
    const pid = sleeper.pid!;
    const { pidFile } = serverFiles(home);
    const address = `127.0.0.1:${environment.AGENTS_TEMPORAL_PORT}`;
    // The second was written before start times were kept: its PID is checked against the listener.
    const records = [
      { pid, startTime: '1', address },
      { pid, address },
    ];
    for (const record of records) {
      await writeFile(pidFile, JSON.stringify(record));
      const stopped = await runCli(['server', 'stop'], environment);
      assert.equal(stopped.code, 0, stopped.stderr);
      assert.match(
        stopped.stdout,
        new RegExp(
          `No embedded server was running in the background \\(pid ${pid}, recorded in .*, is now another process and was left alone\\): nothing was stopped`,
        ),
      );
      assert.equal(sleeper.exitCode, null, 'the unrelated process still runs');
      assert.equal(sleeper.signalCode, null);
      assert.ok((await processIdentity(pid)) !== undefined);
      await assert.rejects(readFile(pidFile), { code: 'ENOENT' }, 'the stale record is removed');
    }
  });

  it('takes over the start lock of a command that died while starting the server', async () => {
    const { home, port, environment } = await freshHome();
    homes.push(home);
    const dead = spawn('true');
    await once(dead, 'exit');
    await writeFile(
      serverFiles(home).lockFile,
      JSON.stringify({ pid: dead.pid, startTime: '1', token: 'left-behind' }),
    );
    const started = await runCli(['server', 'start'], environment);
    assert.equal(started.code, 0, started.stderr);
    assert.match(started.stdout, new RegExp(`Temporal dev server on 127\\.0\\.0\\.1:${port} \\(pid \\d+\\)`));
    assert.equal((await devServersOf(home)).length, 1);
    await assert.rejects(readFile(serverFiles(home).lockFile), { code: 'ENOENT' }, 'the lock is released');
  });

  it('is reused by `agents dev`, which says so and leaves it running on Ctrl-C', async () => {
    const { home, port, environment } = await freshHome();
    homes.push(home);
    const started = await runCli(['server', 'start'], environment);
    assert.equal(started.code, 0, started.stderr);
    const [server] = await devServersOf(home);
    const dev = spawn(AGENTS_BIN, ['dev'], { env: environment, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    dev.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    dev.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    try {
      await waitFor('the worker of dev to poll', () => output.includes('Worker polling'), 120_000);
      assert.match(
        output,
        new RegExp(
          `Reusing the Temporal dev server already running on 127\\.0\\.0\\.1:${port} \\(pid ${server}\\): Ctrl-C stops this worker and leaves that server running`,
        ),
      );
      dev.kill('SIGINT');
      const [code] = (await once(dev, 'exit')) as [number | null];
      assert.equal(code, 0, output);
      assert.equal(await isServerUp(`127.0.0.1:${port}`, 5_000), true, 'the reused server still answers');
      assert.deepEqual(await devServersOf(home), [server], 'and no other server was started');
    } finally {
      if (dev.exitCode === null) dev.kill('SIGKILL');
    }
  });
});
