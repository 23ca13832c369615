/**
 * The DBOS peer of bench:iterations: the same scripted turns as a DBOS workflow on PostgreSQL.
 *
 * Reads a peer request (see ../peer-protocol.ts) on stdin, whose `database` is the PostgreSQL URL
 * of DBOS's system database. Each run is one workflow of `iterations` steps; each step plays one
 * turn and returns its iteration record, which DBOS checkpoints in PostgreSQL (a committed,
 * fsync'd transaction) before the workflow goes on. `runs` workflows go at once in this process,
 * after one untimed warm-up workflow.
 * Prints the peer figures on stdout: each sample runs from one step's start to the next's (the
 * last: to the workflow's end), so every sample covers one full step and its checkpoint.
 *
 * The SDK lives in this folder's own node_modules, installed by the bench on first use, so it is
 * loaded by a computed specifier and typed here by the few calls the loop makes: the project
 * type-checks and lints the same whether or not it was installed.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { text } from 'node:stream/consumers';
import { peerRequestSchema, type PeerFigures, type PeerRequest } from '../peer-protocol';

/** The part of `DBOS` (from `@dbos-inc/dbos-sdk`) the loop uses. */
interface DbosApi {
  setConfig(config: { name: string; systemDatabaseUrl: string; logLevel?: string }): void;
  registerWorkflow<Args extends unknown[], Return>(
    workflow: (...args: Args) => Promise<Return>,
    config?: { name?: string },
  ): (...args: Args) => Promise<Return>;
  runStep<Return>(step: () => Promise<Return>, config?: { name?: string }): Promise<Return>;
  launch(): Promise<void>;
  shutdown(): Promise<void>;
}

const SDK_PACKAGE = '@dbos-inc/dbos-sdk';

/** What one step records, like an agent's iteration record. */
interface LoopRecord {
  iteration: number;
  startedAtMs: number;
  endedAtMs: number;
  text: string;
  status: 'ok';
  tokensIn: number;
  tokensOut: number;
  costUsd: number;
}

async function loadDbos(): Promise<{ dbos: DbosApi; version: string }> {
  const sdk = (await import(SDK_PACKAGE)) as { DBOS?: Partial<DbosApi> };
  const dbos = sdk.DBOS;
  if (typeof dbos?.registerWorkflow !== 'function' || typeof dbos.launch !== 'function') {
    throw new Error(`${SDK_PACKAGE} has no DBOS.registerWorkflow and DBOS.launch`);
  }
  const manifest = JSON.parse(
    await readFile(path.join(__dirname, 'node_modules', SDK_PACKAGE, 'package.json'), 'utf8'),
  ) as { version?: string };
  return { dbos: dbos as DbosApi, version: `${SDK_PACKAGE} ${manifest.version ?? 'unknown'}` };
}

async function runLoops(request: PeerRequest): Promise<PeerFigures> {
  const { dbos, version } = await loadDbos();
  const starts = new Map<number, number[]>();
  const ends = new Map<number, number>();

  const agentLoop = dbos.registerWorkflow(
    async (run: number): Promise<number> => {
      const transcript: Array<{ role: 'user' | 'assistant'; content: string }> = [];
      const records: LoopRecord[] = [];
      for (let iteration = 1; iteration <= request.iterations; iteration += 1) {
        starts.get(run)?.push(performance.now());
        transcript.push({
          role: 'user',
          content: transcript.length > 0 ? request.prompts.next : request.prompts.first,
        });
        const record = await dbos.runStep(
          async () => {
            const startedAtMs = Date.now();
            const turn = request.turns[(iteration - 1) % request.turns.length];
            if (turn === undefined) throw new Error('the request has no turns');
            return Promise.resolve<LoopRecord>({
              iteration,
              startedAtMs,
              endedAtMs: Date.now(),
              text: turn.text,
              status: 'ok',
              tokensIn: turn.usage.inputTokens,
              tokensOut: turn.usage.outputTokens,
              costUsd: turn.costUsd,
            });
          },
          { name: 'playTurn' },
        );
        transcript.push({ role: 'assistant', content: record.text });
        records.push(record);
      }
      ends.set(run, performance.now());
      return records.length;
    },
    { name: 'agentLoop' },
  );

  dbos.setConfig({ name: 'durable-agents-bench', systemDatabaseUrl: request.database, logLevel: 'error' });
  await dbos.launch();
  try {
    // One run first, untimed, pays for the first connections, statements and table pages.
    starts.set(-1, []);
    await agentLoop(-1);
    const runs = Array.from({ length: request.runs }, (_, run) => run);
    for (const run of runs) starts.set(run, []);
    const began = performance.now();
    const recorded = await Promise.all(runs.map((run) => agentLoop(run)));
    const wallClockS = (performance.now() - began) / 1000;
    const short = recorded.findIndex((count) => count !== request.iterations);
    if (short !== -1)
      throw new Error(`run ${short} recorded ${recorded[short]} of ${request.iterations} iterations`);
    const iterationMs = runs.flatMap((run) => {
      const marks = [...(starts.get(run) ?? []), ends.get(run) ?? Number.NaN];
      return marks.slice(1).map((mark, index) => mark - (marks[index] ?? mark));
    });
    return { iterationMs, totalIterations: request.runs * request.iterations, wallClockS, version };
  } finally {
    await dbos.shutdown();
  }
}

async function main(): Promise<number> {
  const parsed = peerRequestSchema.safeParse(JSON.parse(await text(process.stdin)));
  if (!parsed.success) {
    process.stderr.write(`dbos-loop: invalid request on stdin: ${parsed.error.issues[0]?.message ?? ''}\n`);
    return 2;
  }
  process.stdout.write(`${JSON.stringify(await runLoops(parsed.data))}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`dbos-loop: ${(error as Error).message.split('\n')[0]}\n`);
    process.exit(1);
  },
);
