import {
  closeActivityDependencies,
  createAgentsWorker,
  createActivityDependencies,
} from '../../worker/create-worker';
import type { ActivityDependencies } from '../../activities';
import type { TestTemporal } from './temporal-server';

/** A worker running in the test process until `stop()`. */
export interface RunningWorker {
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
  return {
    async stop() {
      agentsWorker.worker.shutdown();
      await running;
      await closeActivityDependencies(dependencies);
    },
  };
}
