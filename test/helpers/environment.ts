import { after, afterEach, before, beforeEach } from 'node:test';
import { AgentsClient } from '../../client/agents-client';
import { startTestTemporal, type TestTemporal } from './temporal-server';
import { startWorker, type RunningWorker } from './worker';

/** What a test file works with: its own dev server, a typed client, and the current test's worker. */
export interface AgentsTestEnvironment {
  temporal: TestTemporal;
  agents: AgentsClient;
  worker: RunningWorker;
}

/**
 * Registers the hooks of a test file: one real dev server for the file, created once, and a fresh
 * in-process worker for each test, so no test inherits another's worker state.
 */
export function useAgentsEnvironment(
  options: Parameters<typeof startTestTemporal>[0] = {},
): AgentsTestEnvironment {
  const environment = {} as AgentsTestEnvironment;
  before(async () => {
    environment.temporal = await startTestTemporal(options);
    environment.agents = new AgentsClient(environment.temporal.client);
  });
  beforeEach(async () => {
    environment.worker = await startWorker(environment.temporal);
  });
  afterEach(async () => {
    await environment.worker.stop();
  });
  after(async () => {
    await environment.temporal?.close();
  });
  return environment;
}
