import {
  closeActivityDependencies,
  createAgentsWorker,
  createActivityDependencies,
} from '../../worker/create-worker';
import type { ActivityDependencies } from '../../activities';
import type { TestTemporal } from './temporal-server';

/** A worker running in the test process until `stop()`. */
export interface RunningWorker {
  /** Shuts the worker down and closes its dependencies; later calls wait for the first. */
  stop(): Promise<void>;
}

/** Starts an in-process agents worker against the test server (the bundle is cached per home). */
export async function startWorker(
  temporal: TestTemporal,
  dependencies: ActivityDependencies = createActivityDependencies(temporal.home),
): Promise<RunningWorker> {
  const agentsWorker = await createAgentsWorker({
    connectionOptions: { address: temporal.config.temporal.address },
    namespace: temporal.config.temporal.namespace,
    home: temporal.home,
    dependencies,
  });
  const running = agentsWorker.run();
  let stopped: Promise<void> | undefined;
  return {
    stop() {
      stopped ??= (async () => {
        agentsWorker.worker.shutdown();
        await running;
        await closeActivityDependencies(dependencies);
      })();
      return stopped;
    },
  };
}
