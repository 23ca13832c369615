/**
 * Benchmark: how long an `agents` command takes to start, as a user runs it.
 *
 * Each command runs `--runs` times (default 10; or BENCH_COMMAND_RUNS) through `bin/agents`, one
 * after another, timed from spawn to exit: `--version`, `--help`, `templates` (reads the
 * configuration and the template folders, no server) and a usage error. `status <name>` needs a
 * server, so it is timed to the moment it connects: TEMPORAL_ADDRESS names a TCP listener here,
 * and the time is the one at which the listener accepts the command's connection (the process is
 * then stopped). The baseline is `node -e ""` spawned the same way: what any Node.js program costs
 * on this machine. Each command runs once before the timed runs, so the CLI's bundle and its code
 * cache are built, as they are for a user after the first run.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { z } from 'zod';
import {
  countSchema,
  describeMachine,
  formatRatio,
  formatTable,
  parseBenchOptions,
  percentile,
} from './report';

const AGENTS_BIN = path.resolve(__dirname, '..', 'bin', 'agents');

/** One thing to time: what to spawn, and whether it ends on its own or when it connects. */
interface StartupCase {
  label: string;
  command: string;
  args: string[];
  until: 'exit' | 'connect';
}

const CASES: StartupCase[] = [
  { label: 'node -e ""', command: process.execPath, args: ['-e', ''], until: 'exit' },
  { label: 'agents --version', command: AGENTS_BIN, args: ['--version'], until: 'exit' },
  { label: 'agents --help', command: AGENTS_BIN, args: ['--help'], until: 'exit' },
  { label: 'agents templates', command: AGENTS_BIN, args: ['templates'], until: 'exit' },
  { label: 'agents nonsense (usage error)', command: AGENTS_BIN, args: ['nonsense'], until: 'exit' },
  {
    label: 'agents status x (until it connects)',
    command: AGENTS_BIN,
    args: ['status', 'bench-startup'],
    until: 'connect',
  },
];

/**
 * How long the warm-up run of a command timed until it connects goes on after connecting: a
 * user's first `agents status` runs to its end, and the CLI writes its code cache by then (see
 * bin/run-cli.cjs); a run stopped at once would leave none.
 */
const WARM_UP_LINGER_MS = 1500;

/** Milliseconds from spawn until the process exits, or until `connections` hears from it. */
async function timeOnce(
  startup: StartupCase,
  environment: NodeJS.ProcessEnv,
  connections: { next: () => Promise<void> },
  lingerMs = 0,
): Promise<number> {
  const started = performance.now();
  const child = spawn(startup.command, startup.args, { env: environment, stdio: 'ignore' });
  const exited = once(child, 'exit');
  if (startup.until === 'exit') {
    await exited;
    return performance.now() - started;
  }
  const connected = connections.next().then(() => performance.now() - started);
  const outcome = await Promise.race([connected, exited.then(() => undefined)]);
  if (outcome === undefined) throw new Error(`${startup.label} exited before it connected`);
  if (lingerMs > 0) await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, lingerMs))]);
  child.kill('SIGKILL');
  await exited;
  return outcome;
}

async function main(): Promise<void> {
  const options = parseBenchOptions(
    process.argv.slice(2),
    process.env,
    z.object({ runs: countSchema('--runs', 1000).default(10) }),
    [{ flag: 'runs', field: 'runs', variable: 'BENCH_COMMAND_RUNS' }],
    '[--runs N]',
  );
  const home = await mkdtemp(path.join(os.tmpdir(), 'bench-commands-'));
  // The listener `status` connects to: it accepts, then hangs up, and says when each connection came.
  const waiting: Array<() => void> = [];
  const listener = createServer((socket: Socket) => {
    socket.destroy();
    waiting.shift()?.();
  });
  listener.listen(0, '127.0.0.1');
  await once(listener, 'listening');
  const connections = {
    next: () => new Promise<void>((resolve) => waiting.push(resolve)),
  };
  const environment = {
    ...process.env,
    AGENTS_HOME: home,
    TEMPORAL_ADDRESS: `127.0.0.1:${(listener.address() as AddressInfo).port}`,
  };
  try {
    const samples = new Map<string, number[]>();
    for (const startup of CASES) {
      waiting.length = 0;
      await timeOnce(startup, environment, connections, WARM_UP_LINGER_MS);
      const times: number[] = [];
      for (let run = 0; run < options.runs; run += 1) {
        waiting.length = 0;
        times.push(await timeOnce(startup, environment, connections));
      }
      samples.set(startup.label, times);
    }
    const baseline = percentile(samples.get(CASES[0]?.label ?? '') ?? [], 0.5);
    const rows = CASES.map((startup) => {
      const times = samples.get(startup.label) ?? [];
      const median = percentile(times, 0.5);
      return [
        startup.label,
        percentile(times, 0.5).toFixed(0),
        percentile(times, 0.9).toFixed(0),
        formatRatio(median / baseline),
      ];
    });
    console.log(`Command start-up, ${options.runs} runs each after one warm-up · ${describeMachine()}`);
    console.log(formatTable(['command', 'p50 ms', 'p90 ms', 'p50 / node'], rows));
    console.log('Times are spawn to exit; status is spawn to its first TCP connection to TEMPORAL_ADDRESS.');
  } finally {
    listener.close();
    await rm(home, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(`bench:commands: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
});
