import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, beforeEach } from 'node:test';
import type { SandboxEndpoint } from '../../activities/tool-executor';
import { AgentsClient } from '../../client/agents-client';
import type { ExternalTool } from '../../sandbox/external-tool';
import { SandboxServer, type SandboxServerOptions } from '../../sandbox/sandbox-server';
import { ToolServer } from '../../sandbox/tool-server';
import { runSandboxTool } from '../../sandbox/tools';
import { createActivityDependencies } from '../../worker/create-worker';
import { startTestTemporal, type TestTemporal } from './temporal-server';
import { startWorker, type RunningWorker } from './worker';

/** What a test file works with: its own dev server, a typed client, and the current test's worker. */
export interface AgentsTestEnvironment {
  temporal: TestTemporal;
  agents: AgentsClient;
  worker: RunningWorker;
  /** The sandbox server of the file, when asked for: real bubblewrap, on loopback. */
  sandbox: { server: SandboxServer; endpoint: SandboxEndpoint; root: string } | undefined;
  /** The external tool server of the file, when asked for. */
  toolServer: { server: ToolServer; url: string; token: string } | undefined;
}

export interface EnvironmentOptions {
  dynamicConfig?: Record<string, string | number>;
  /** Starts a sandbox server for the file and gives every worker its tool executor. */
  withSandbox?: boolean;
  /** Options of that sandbox server beyond the tests' root, token, lanes and tool runner. */
  sandboxOptions?: Partial<SandboxServerOptions>;
  /** Starts an external tool server offering these tools and gives every worker its client. */
  externalTools?: ExternalTool[];
}

/** The bearer token of the tests' sandbox servers. */
export const TEST_SANDBOX_TOKEN = 'test-sandbox-token';

/** Starts a real sandbox server on a temporary root, on a free loopback port. */
export async function startTestSandbox(
  options: Partial<SandboxServerOptions> = {},
): Promise<NonNullable<AgentsTestEnvironment['sandbox']>> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'agents-test-sandbox-'));
  const server = new SandboxServer({
    root,
    token: TEST_SANDBOX_TOKEN,
    lanes: 8,
    runTool: runSandboxTool,
    ...options,
  });
  const port = await server.listen(0);
  return { server, root, endpoint: { url: `http://127.0.0.1:${port}`, token: TEST_SANDBOX_TOKEN } };
}

/**
 * Registers the hooks of a test file: one real dev server for the file, created once, and a fresh
 * in-process worker for each test, so no test inherits another's worker state.
 */
export function useAgentsEnvironment(options: EnvironmentOptions = {}): AgentsTestEnvironment {
  const environment = { sandbox: undefined, toolServer: undefined } as AgentsTestEnvironment;
  before(async () => {
    environment.temporal = await startTestTemporal(options);
    environment.agents = new AgentsClient(environment.temporal.client);
    if (options.withSandbox === true) environment.sandbox = await startTestSandbox(options.sandboxOptions);
    if (options.externalTools !== undefined) {
      const server = new ToolServer({ token: TEST_SANDBOX_TOKEN, tools: options.externalTools });
      const port = await server.listen(0);
      environment.toolServer = { server, url: `http://127.0.0.1:${port}`, token: TEST_SANDBOX_TOKEN };
    }
  });
  beforeEach(async () => {
    const sandboxes = environment.sandbox === undefined ? [] : [environment.sandbox.endpoint];
    const { toolServer } = environment;
    environment.worker = await startWorker(
      environment.temporal,
      createActivityDependencies(environment.temporal.home, sandboxes, toolServer),
    );
  });
  afterEach(async () => {
    await environment.worker.stop();
  });
  after(async () => {
    await environment.sandbox?.server.close();
    await environment.toolServer?.server.close();
    if (environment.sandbox !== undefined)
      await rm(environment.sandbox.root, { recursive: true, force: true });
    await environment.temporal?.close();
  });
  return environment;
}
