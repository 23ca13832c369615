/**
 * Profile: where the time of one iteration of an agent run goes, read from the run's history.
 *
 * Each iteration starts when the workflow schedules its `modelTurn` activity. The time from one
 * such event to the next is walked back along its critical path: the workflow task that scheduled
 * the next turn, what made the server schedule that task (an activity's completion, a signal, the
 * end of another workflow task), that activity's run and its wait for a worker, the workflow task
 * that scheduled it, and so on back to the previous turn. Every segment is named for what the run
 * waited on, so the figures add up to the iteration, and a lever can be measured by the segment it
 * removes. The other events of each iteration (a notice's activity, its extra workflow task) are
 * counted beside it: off the path, but they compete for the same worker slots.
 *
 * With `--workflow-id` it profiles that run on the configured Temporal server (`TEMPORAL_ADDRESS`,
 * else the embedded default; `--address` and `--namespace` override). Without it, it starts its own
 * dev server and in-process worker and profiles one run of `--iterations` (default 30) with no
 * interval, a scripted model that answers at once, and daily limits set, as `bench:iterations`
 * scenario A does.
 */
import { Client, Connection } from '@temporalio/client';
import { z } from 'zod';
import { renderProfile } from './history-profile';
import { hostPortSchema } from '../common/host-port';
import { countSchema, ITERATION_TURNS, parseBenchOptions } from './report';
import { AgentsClient } from '../client/agents-client';
import { loadConfig } from '../client/config';
import { scriptedRun, uniqueName } from '../test/helpers/run-input';
import { startTestTemporal, type TestTemporal } from '../test/helpers/temporal-server';
import { startWorker, type RunningWorker } from '../test/helpers/worker';

const profileOptionsSchema = z.object({
  workflowId: z.string().min(1, '--workflow-id must not be empty').optional(),
  address: hostPortSchema()
    .transform(({ address }) => address)
    .optional(),
  namespace: z.string().min(1, '--namespace must not be empty').optional(),
  iterations: countSchema('--iterations', 10_000).default(30),
});
type ProfileOptions = z.infer<typeof profileOptionsSchema>;

/** One history event, reduced to what the profile reads. */

function parseOptions(argv: string[]): ProfileOptions {
  return parseBenchOptions(
    argv,
    {},
    profileOptionsSchema,
    [
      { flag: 'workflow-id', field: 'workflowId' },
      { flag: 'address', field: 'address' },
      { flag: 'namespace', field: 'namespace' },
      { flag: 'iterations', field: 'iterations' },
    ],
    '--workflow-id ID [--address HOST:PORT] [--namespace NS] | --iterations N',
  );
}

/** Starts a dev server and a worker, runs one run of `iterations`, and returns its workflow ID. */
async function profileOwnRun(iterations: number, temporalServer: TestTemporal): Promise<string> {
  const agents = new AgentsClient(temporalServer.client);
  const runOf = async (prefix: string, count: number) => {
    const handle = await agents.start(
      scriptedRun(uniqueName(prefix), ITERATION_TURNS, {
        intervalS: 0,
        maxIterations: count,
        budgets: { sessionTokens: 0, sessionCostUsd: 0, dailyTokens: 1_000_000_000, dailyCostUsd: 1_000_000 },
      }),
    );
    const result = await handle.result();
    if (result.exitReason !== 'max_iterations')
      throw new Error(`run ${handle.workflowId} ended with ${result.exitReason}`);
    return handle.workflowId;
  };
  // The warm-up pays for the first workflow task, the ledger's start and the connections.
  await runOf('profile-warm-up', 3);
  return runOf('profile', iterations);
}

/** Prints the profile; resolves to the exit code. */
async function main(argv: string[]): Promise<number> {
  const progress = (line: string) => process.stderr.write(`· ${line}\n`);
  const verbose = argv.includes('--verbose');
  let temporalServer: TestTemporal | undefined;
  let worker: RunningWorker | undefined;
  let connection: Connection | undefined;
  try {
    const options = parseOptions(argv);
    let client: Client;
    let workflowId: string;
    if (options.workflowId === undefined) {
      progress('starting the Temporal dev server and an in-process worker (bundles the workflows)');
      temporalServer = await startTestTemporal();
      worker = await startWorker(temporalServer);
      progress(`one run of ${options.iterations} iterations, after a warm-up run`);
      workflowId = await profileOwnRun(options.iterations, temporalServer);
      client = temporalServer.client;
    } else {
      const configured = loadConfig(process.env).temporal;
      connection = await Connection.connect({ address: options.address ?? configured.address });
      client = new Client({ connection, namespace: options.namespace ?? configured.namespace });
      workflowId = options.workflowId;
    }
    const history = await client.workflow.getHandle(workflowId).fetchHistory();
    process.stdout.write(`${renderProfile(workflowId, history.events ?? [])}\n`);
    return 0;
  } catch (error) {
    if (verbose) console.error(error);
    process.stderr.write(`bench:iteration-profile: ${(error as Error).message.split('\n')[0]}\n`);
    return 1;
  } finally {
    await worker?.stop();
    await temporalServer?.close();
    await connection?.close();
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`bench:iteration-profile: ${(error as Error).message.split('\n')[0]}\n`);
    process.exit(1);
  },
);
