import { z } from 'zod';
import { intervalSchema, type AgentRunInputDraft, type ModelSpec } from '../../common/agent-input';
import { DEFAULT_LOCAL_MODEL, TASK_QUEUE } from '../../common/constants';
import { validateRunInput } from '../agents-client';
import { webUiRunUrl } from '../config';
import { AgentsError } from '../errors';
import { ensureLocalModel } from '../local-model-install';
import { resolveModelSpec } from '../model-option';
import { loadTemplate } from '../templates';
import {
  budgetOptions,
  flag,
  numberOption,
  parseRules,
  requireName,
  text,
  withClient,
  type CommandContext,
} from './command-context';
import { watchRun } from './inspect';

/** The commands that start, stop and resume runs. */

/**
 * The run's model from `--model` and its options: `AGENTS_MODEL` when no `--model` is given, else
 * the local model. Its notes (a model with no known price) are printed.
 */
function chooseModel(context: CommandContext): ModelSpec {
  const { spec, notes } = resolveModelSpec(
    {
      model: text(context, 'model') ?? process.env.AGENTS_MODEL ?? 'local',
      baseUrl: text(context, 'base-url'),
      apiKeyEnv: text(context, 'api-key-env'),
      maxOutputTokens: text(context, 'max-output-tokens'),
      temperature: text(context, 'temperature'),
      price: text(context, 'price'),
    },
    process.env,
    context.config.home,
  );
  for (const note of notes) context.print(`Note: ${note}`);
  return spec;
}

/** `agents start <name> --template T …` */
export async function startCommand(context: CommandContext): Promise<void> {
  const usage =
    'agents start <name> --template <name|path> [--args TEXT] [--interval S] [--max-iterations N] [--model M] [--replace] [--watch]';
  const name = requireName(context, usage);
  const templateName = text(context, 'template');
  if (templateName === undefined)
    throw new AgentsError('invalid_argument', `--template is required: ${usage}`);
  const draft: AgentRunInputDraft = {
    name,
    template: loadTemplate(templateName, context.config.home),
    args: text(context, 'args') ?? '',
    model: chooseModel(context),
  };
  const interval = numberOption(context, 'interval', intervalSchema);
  if (interval !== undefined) draft.intervalS = interval;
  const maxIterations = numberOption(context, 'max-iterations', z.number().int().positive());
  if (maxIterations !== undefined) draft.maxIterations = maxIterations;
  const mode = text(context, 'permission-mode');
  if (mode !== undefined && mode !== 'ask' && mode !== 'auto-approve') {
    throw new AgentsError('invalid_argument', `--permission-mode '${mode}'. Accepted: ask, auto-approve`);
  }
  const onDeny = text(context, 'on-deny');
  if (onDeny !== undefined && onDeny !== 'stop' && onDeny !== 'continue') {
    throw new AgentsError('invalid_argument', `--on-deny '${onDeny}'. Accepted: stop, continue`);
  }
  const permissionTimeout = numberOption(context, 'permission-timeout', z.number().min(1));
  draft.permissions = {
    rules: parseRules(context),
    ...(mode === undefined ? {} : { mode }),
    ...(onDeny === undefined ? {} : { onDeny }),
    ...(permissionTimeout === undefined ? {} : { timeoutS: permissionTimeout }),
  };
  draft.budgets = budgetOptions(context);
  const webhook = text(context, 'webhook');
  if (webhook !== undefined) draft.notifications = { webhookUrl: webhook };
  const input = validateRunInput(draft);
  // This machine's workers look for the default local model here: install it once it is asked for.
  const { model } = input;
  if (
    model.provider === 'local' &&
    model.model === DEFAULT_LOCAL_MODEL &&
    context.config.temporal.kind === 'embedded'
  ) {
    await ensureLocalModel(context.config.home, context.print);
  }
  await withClient(context, async (agents) => {
    const handle = await agents.start(draft, { replace: flag(context, 'replace') });
    context.print(`Started agent ${name} (workflow ${handle.workflowId}, run ${handle.firstExecutionRunId})`);
    const link = webUiRunUrl(context.config, handle.workflowId, handle.firstExecutionRunId);
    if (link !== undefined) context.print(`Web UI: ${link}`);
    if (!(await agents.hasWorker())) {
      context.print(
        `No worker polls task queue '${TASK_QUEUE}' yet: start one with \`agents worker\` (or \`agents dev\`).`,
      );
    }
    if (flag(context, 'watch')) await watchRun(context, agents, name);
  });
}

/** `agents stop <name> | --all` */
export async function stopCommand(context: CommandContext): Promise<void> {
  const reason = text(context, 'reason') ?? 'stopped from the CLI';
  await withClient(context, async (agents) => {
    if (flag(context, 'all')) {
      if (context.positionals.length > 0)
        throw new AgentsError('invalid_argument', 'Give a name or --all, not both');
      const names = await agents.stopAll(reason);
      context.print(names.length === 0 ? 'No running agents.' : `Asked to stop: ${names.join(', ')}`);
      return;
    }
    const name = requireName(context, 'agents stop <name> | --all [--reason TEXT]');
    const stopped = await agents.stop(name, reason);
    context.print(stopped ? `Asked agent ${name} to stop.` : `Agent ${name} is not running.`);
  });
}

/** `agents resume <name> [--session-tokens N] [--session-cost USD] [--daily-tokens N] [--daily-cost USD]` */
export async function resumeCommand(context: CommandContext): Promise<void> {
  const name = requireName(
    context,
    'agents resume <name> [--session-tokens N] [--session-cost USD] [--daily-tokens N] [--daily-cost USD]',
  );
  const budgets = budgetOptions(context);
  await withClient(context, async (agents) => {
    await agents.resume(name, Object.keys(budgets).length === 0 ? {} : { budgets });
    context.print(
      `Asked agent ${name} to resume${Object.keys(budgets).length === 0 ? '' : ` with ${JSON.stringify(budgets)}`}.`,
    );
  });
}
