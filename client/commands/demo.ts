import { stat } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { SandboxEndpoint } from '../../activities/tool-executor';
import { localModelSchema, type ModelSpec } from '../../common/agent-input';
import { visibleProse } from '../../common/display-text';
import { LocalModel } from '../../models/local-model';
import type { ModelProviders } from '../../models/model-provider';
import {
  closeActivityDependencies,
  createActivityDependencies,
  createAgentsWorker,
} from '../../worker/create-worker';
import { webUiRunUrl } from '../config';
import { workerConnectionOptions } from '../connect';
import { isServerUp } from '../embedded-server';
import { AgentsError } from '../errors';
import { EXIT_SUCCESS, runExitCode } from '../exit-codes';
import { ensureLocalModel } from '../local-model-install';
import { parseModelOption } from '../model-option';
import { ensureTemporalBinary } from '../temporal-binary';
import { loadTemplate } from '../templates';
import { findWorkspaceServer } from '../workspace-reader';
import { numberOption, text, withClient, type CommandContext } from './command-context';
import { watchRun } from './inspect';
import { configuredSandboxes, startLocalSandbox } from './sandbox';
import { installRuntime } from './server';

/**
 * `agents demo`: everything needed to see an agent run: installs the Temporal CLI and the local
 * model if they are missing, reuses or starts the embedded server, runs a worker and a sandbox
 * server in this process, and follows a short run of the `demo` template to its end. The model is
 * the real local one unless `--model scripted` is asked for, or it cannot run here: then the demo
 * says why and plays the scripted model instead.
 */
export async function demoCommand(context: CommandContext): Promise<void> {
  const iterations = numberOption(context, 'iterations', z.number().int().min(1).max(50)) ?? 3;
  const requested = text(context, 'model') ?? 'local';
  if (requested !== 'local' && requested !== 'scripted') {
    throw new AgentsError(
      'invalid_argument',
      `Invalid --model '${requested}': the demo runs 'local' or 'scripted'`,
    );
  }
  const { temporal } = context.config;
  if (temporal.kind === 'embedded' && !(await isServerUp(temporal.address))) {
    await ensureTemporalBinary(context.config.home, temporal.binary, context.print);
  }
  installRuntime('WARN');
  let sandboxes = await configuredSandboxes(context.config);
  const localSandbox = sandboxes.length === 0 ? await startLocalSandbox(context, 0) : undefined;
  if (localSandbox !== undefined) sandboxes = [localSandbox.endpoint];
  const dependencies = createActivityDependencies(context.config.home, sandboxes);
  try {
    const model =
      requested === 'local'
        ? await demoLocalModel(context, dependencies.models)
        : parseModelOption('scripted');
    await withClient(
      context,
      async (agents) => {
        context.print('Starting a worker (its first start bundles the workflow code, a few seconds) …');
        const agentsWorker = await createAgentsWorker({
          connectionOptions: workerConnectionOptions(context.config),
          namespace: temporal.namespace,
          home: context.config.home,
          dependencies,
        });
        const running = agentsWorker.run();
        try {
          const handle = await agents.start(
            {
              name: 'demo',
              template: loadTemplate('demo', context.config.home),
              model,
              intervalS: 1,
              maxIterations: iterations,
              // The demo's one tool call writes demo.txt in its sandboxed workspace: granted, and noted.
              permissions: { mode: 'auto-approve' },
            },
            { replace: true },
          );
          const described = model.provider === 'local' ? `local model ${model.model}` : 'scripted model';
          context.print(
            `Started agent demo (workflow ${handle.workflowId}): ${iterations} iterations of the demo template, ${described}`,
          );
          const ending = await watchRun(context, agents, 'demo');
          const link = webUiRunUrl(context.config, handle.workflowId, handle.firstExecutionRunId);
          if (link !== undefined) context.print(`Web UI of this run: ${link}`);
          if (runExitCode(ending) !== EXIT_SUCCESS) {
            const { lastError } = await agents.status('demo');
            throw new AgentsError(
              'run_failed',
              `The demo run failed: ${lastError === null ? 'see its history' : visibleProse(lastError)}`,
            );
          }
          context.print(await demoWorkspaceLine(sandboxes, localSandbox !== undefined, context, handle));
          if (temporal.kind === 'embedded') {
            context.print(
              'The dev server keeps running in the background for the Web UI; `agents server stop` ends it.',
            );
          }
        } finally {
          agentsWorker.worker.shutdown();
          await running;
        }
        // The demo is a show for a person: the server it uses is part of its story, on stdout.
      },
      context.print,
    );
  } finally {
    await closeActivityDependencies(dependencies);
    await localSandbox?.server.close();
  }
}

/**
 * Where the demo's demo.txt is and how to see it: the trajectory's folder on this machine when the
 * demo ran its own sandbox server, else its folder under the root of the configured server that
 * holds it. A model that ran no tool (the scripted one) left no workspace, and that is said instead.
 */
async function demoWorkspaceLine(
  sandboxes: SandboxEndpoint[],
  local: boolean,
  context: CommandContext,
  handle: { workflowId: string; firstExecutionRunId: string },
): Promise<string> {
  const trajectoryId = `${handle.workflowId}-${handle.firstExecutionRunId}`;
  const see = 'see it with: agents cat demo demo.txt';
  const none = "The demo's model ran no tool, so the run has no workspace to see.";
  if (local) {
    const folder = path.join(context.config.sandbox.root, 'trajectories', trajectoryId, 'workspace');
    const exists = await stat(folder).then(
      () => true,
      () => false,
    );
    return exists ? `Its workspace: ${folder} on this machine; ${see}` : none;
  }
  const found = await findWorkspaceServer(sandboxes, trajectoryId).catch(() => undefined);
  if (found === undefined) return none;
  await found.reader.close();
  return `Its workspace: trajectories/${trajectoryId}/workspace on ${found.reader.endpoint.url}; ${see}`;
}

/**
 * The demo's model: the local one, installed and loaded first so a model that cannot run here is
 * known before the run starts; otherwise the scripted model, with the reason printed.
 */
async function demoLocalModel(context: CommandContext, models: ModelProviders): Promise<ModelSpec> {
  const spec = localModelSchema.parse({ provider: 'local' });
  try {
    await ensureLocalModel(context.config.home, context.print);
    const local = models.get('local');
    if (!(local instanceof LocalModel)) throw new Error('this worker offers no local model');
    context.print(`Loading the local model ${spec.model} …`);
    await local.warmUp(spec);
    return spec;
  } catch (error) {
    context.print(`The local model cannot run here (${(error as Error).message}).`);
    context.print(
      'Falling back to the scripted model: its answers are a fixed script, not a language model.',
    );
    return parseModelOption('scripted');
  }
}
