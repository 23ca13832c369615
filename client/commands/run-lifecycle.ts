import { readFileSync } from 'node:fs';
import { z } from 'zod';
import {
  intervalSchema,
  sandboxPolicySchema,
  type AgentRunInput,
  type AgentRunInputDraft,
  type ModelSpec,
  type SandboxPolicy,
  type TemplateRef,
} from '../../common/agent-input';
import { HOST_PATTERN_RULE } from '../../common/host-patterns';
import { DEFAULT_LOCAL_MODEL, FORCE_STOP_GRACE_S, TASK_QUEUE } from '../../common/constants';
import { validateRunInput, type RunEnd } from '../agents-client';
import { webUiRunUrl } from '../config';
import { AgentsError } from '../errors';
import { EXIT_SUCCESS, runExitCode } from '../exit-codes';
import { checkLocalModelFile, ensureLocalModel } from '../local-model-install';
import { mcpServersOption } from '../mcp-option';
import { resolveModelSpec } from '../model-option';
import { withSandboxEndpoints } from '../sandbox-endpoints';
import { describeWorkspaceSource, prepareWorkspaceSource, type WorkspaceRequest } from '../workspace-source';
import { loadTemplate } from '../templates';
import {
  budgetOptions,
  flag,
  numberOption,
  parseRules,
  printNews,
  requireName,
  text,
  texts,
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

/**
 * The run's arguments: `--args TEXT`, `--args -` (read from standard input) or `--args-file FILE`,
 * for arguments too long or too awkward to quote on a command line.
 */
function argsOption(context: CommandContext): string {
  const inline = text(context, 'args');
  const file = text(context, 'args-file');
  if (inline !== undefined && file !== undefined) {
    throw new AgentsError('invalid_argument', 'Give --args or --args-file, not both');
  }
  if (file === undefined && inline !== '-') return inline ?? '';
  const [source, shown] =
    file === undefined ? [0, '--args - (standard input)'] : [file, `--args-file '${file}'`];
  let bytes: Buffer;
  try {
    bytes = readFileSync(source);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason =
      code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a folder' : (error as Error).message;
    throw new AgentsError('invalid_argument', `${shown}: ${reason}`, { cause: error });
  }
  try {
    // The newline that ends a file or an `echo` is not part of the arguments.
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes).replace(/\r?\n$/, '');
  } catch {
    throw new AgentsError('invalid_argument', `${shown}: not UTF-8 text`);
  }
}

/** The forms `--network` accepts, as its error lists them. */
const NETWORK_FORMS = 'off, on, allow:HOST[,HOST…]';

/**
 * `--network off|on|allow:HOST[,HOST…]`: the run's `sandbox.network`, checked by the input's own
 * schema so a bad host is refused with the rule every allow list follows.
 */
export function networkOption(raw: string): SandboxPolicy['network'] {
  const value = raw.trim();
  if (value === 'off') return false;
  if (value === 'on') return true;
  if (!value.startsWith('allow:')) {
    throw new AgentsError('invalid_argument', `--network '${raw}'. Accepted: ${NETWORK_FORMS}`);
  }
  const allow = value
    .slice('allow:'.length)
    .split(',')
    .map((host) => host.trim())
    .filter(Boolean);
  if (allow.length === 0) {
    throw new AgentsError(
      'invalid_argument',
      `--network '${raw}': list at least one host. Accepted: ${NETWORK_FORMS}`,
    );
  }
  const parsed = sandboxPolicySchema.safeParse({ network: { allow } });
  if (!parsed.success) {
    const bad = allow.find((host) => !sandboxPolicySchema.safeParse({ network: { allow: [host] } }).success);
    throw new AgentsError(
      'invalid_argument',
      bad === undefined
        ? `--network '${raw}': ${parsed.error.issues[0]?.message ?? 'invalid'}`
        : `--network '${raw}': '${bad}' must be ${HOST_PATTERN_RULE}`,
    );
  }
  return parsed.data.network;
}

/** `--workspace DIR` or `--repo URL [--ref REF]`: what the run's workspace starts from, if anything. */
function workspaceRequest(context: CommandContext): WorkspaceRequest | undefined {
  const folder = text(context, 'workspace');
  const url = text(context, 'repo');
  const ref = text(context, 'ref');
  if (folder !== undefined && url !== undefined) {
    throw new AgentsError('invalid_argument', 'Give --workspace or --repo, not both');
  }
  if (ref !== undefined && url === undefined) {
    throw new AgentsError('invalid_argument', '--ref applies to --repo only');
  }
  if (folder !== undefined) return { kind: 'folder', folder };
  if (url !== undefined) return { kind: 'repository', url, ...(ref === undefined ? {} : { ref }) };
  return undefined;
}

/** What `agents start` reads before its options: the run's name, its template and its arguments. */
export interface RunBasics {
  name: string;
  template: TemplateRef;
  args: string;
}

/**
 * The input of the run `agents start` would start: `basics` and the options in `context` (model,
 * limits, permissions, budgets, sandbox, workspace), each checked the way the command checks it, the
 * workspace uploaded and the default local model installed. `agents mcp` starts runs through it
 * too, so a run is refused there with the very line the command would print.
 */
export async function prepareRunInput(
  context: CommandContext,
  basics: RunBasics,
): Promise<{ draft: AgentRunInputDraft; input: AgentRunInput }> {
  const draft: AgentRunInputDraft = { ...basics, model: chooseModel(context) };
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
  const network = text(context, 'network');
  const resetOnEnd = flag(context, 'reset-on-end');
  if (network !== undefined || resetOnEnd) {
    draft.sandbox = {
      ...(network === undefined ? {} : { network: networkOption(network) }),
      ...(resetOnEnd ? { resetOnEnd: true } : {}),
    };
  }
  const mcpServers = mcpServersOption(
    texts(context, 'mcp'),
    texts(context, 'mcp-token'),
    texts(context, 'mcp-timeout'),
  );
  if (mcpServers.length > 0) draft.mcpServers = mcpServers;
  const requested = workspaceRequest(context);
  // Checked before anything is packed or uploaded, and again with the workspace in it.
  let input = validateRunInput(draft);
  if (requested !== undefined) {
    const progress = (line: string) => process.stderr.write(`${line}\n`);
    draft.workspace = await withSandboxEndpoints(context.config, (endpoints) =>
      prepareWorkspaceSource(requested, endpoints, {
        limitBytes: context.config.workspaceLimitBytes,
        progress,
      }),
    );
    input = validateRunInput(draft);
  }
  // This machine's workers look for the default local model here: install it once it is asked for.
  const { model } = input;
  if (model.provider === 'local' && context.config.temporal.kind === 'embedded') {
    if (model.model === DEFAULT_LOCAL_MODEL) await ensureLocalModel(context.config.home, context.print);
    else checkLocalModelFile(model.model, context.config.home);
  }
  return { draft, input };
}

/** `agents start <name> --template T …`; with `--watch`, exits with the code of how the run ended. */
export async function startCommand(context: CommandContext): Promise<number> {
  const usage =
    'agents start <name> --template <name|path> [--args TEXT] [--interval S] [--max-iterations N] [--model M] [--workspace DIR | --repo URL [--ref REF]] [--network off|on|allow:HOSTS] [--reset-on-end] [--replace] [--watch]';
  const name = requireName(context, usage);
  const templateName = text(context, 'template');
  if (templateName === undefined)
    throw new AgentsError('invalid_argument', `--template is required: ${usage}`);
  const { draft, input } = await prepareRunInput(context, {
    name,
    template: loadTemplate(templateName, context.config.home),
    args: argsOption(context),
  });
  return withClient(context, async (agents) => {
    const handle = await agents.start(draft, { replace: flag(context, 'replace'), onWait: printNews });
    context.print(`Started agent ${name} (workflow ${handle.workflowId}, run ${handle.firstExecutionRunId})`);
    if (input.workspace !== undefined)
      context.print(`Workspace: ${describeWorkspaceSource(input.workspace)}`);
    const link = webUiRunUrl(context.config, handle.workflowId, handle.firstExecutionRunId);
    if (link !== undefined) context.print(`Web UI: ${link}`);
    if (!(await agents.hasWorker())) {
      context.print(
        `No worker polls task queue '${TASK_QUEUE}' yet: start one with \`agents worker\` (or \`agents dev\`).`,
      );
    }
    return flag(context, 'watch') ? runExitCode(await watchRun(context, agents, name)) : EXIT_SUCCESS;
  });
}

/** `agents stop <name> | --all` */
export async function stopCommand(context: CommandContext): Promise<void> {
  const usage = 'agents stop <name> | --all [--reason TEXT] [--force [--grace 30s]]';
  const reason = text(context, 'reason') ?? 'stopped from the CLI';
  const force = flag(context, 'force');
  const graceS = graceOption(context, force);
  await withClient(context, async (agents) => {
    if (flag(context, 'all')) {
      if (context.positionals.length > 0)
        throw new AgentsError('invalid_argument', 'Give a name or --all, not both');
      if (!force) {
        const names = await agents.stopAll(reason);
        context.print(names.length === 0 ? 'No running agents.' : `Asked to stop: ${names.join(', ')}`);
        return;
      }
      const running = await agents.list({ runningOnly: true });
      if (running.length === 0) context.print('No running agents.');
      const ends = await Promise.all(running.map(({ name }) => agents.forceStop(name, reason, graceS)));
      running.forEach(({ name }, index) => context.print(describeForcedStop(name, ends[index]!, graceS)));
      return;
    }
    const name = requireName(context, usage);
    if (force) {
      context.print(describeForcedStop(name, await agents.forceStop(name, reason, graceS), graceS));
      return;
    }
    // A closed run takes no stop: like `resume`, this fails with one line saying how it ended.
    await agents.runningHandle(name);
    await agents.stop(name, reason);
    context.print(`Asked agent ${name} to stop.`);
  });
}

/**
 * `--grace`: how long `stop --force` waits for the run to stop by itself, as `30s`, `2m` or seconds;
 * 0 terminates at once. Only with `--force`.
 */
function graceOption(context: CommandContext, force: boolean): number {
  const raw = text(context, 'grace');
  if (raw === undefined) return FORCE_STOP_GRACE_S;
  if (!force) throw new AgentsError('invalid_argument', '--grace applies to stop --force only');
  const match = /^\s*(\d+(?:\.\d+)?)\s*(s|m)?\s*$/.exec(raw);
  const seconds = match === null ? Number.NaN : Number(match[1]) * (match[2] === 'm' ? 60 : 1);
  if (!(seconds <= 3600)) {
    throw new AgentsError(
      'invalid_argument',
      `--grace '${raw}': must be a duration up to 1 hour such as 30s, 2m or 0 (terminate at once)`,
    );
  }
  return seconds;
}

/** What `stop --force` did to one run, on one line. */
function describeForcedStop(name: string, end: RunEnd, graceS: number): string {
  switch (end.kind) {
    case 'not_open':
      return `Agent ${name} had already ended.`;
    case 'stopped':
      return `Agent ${name} stopped within the grace of ${graceS} s.`;
    case 'terminated':
      return `${graceS > 0 ? `Agent ${name} did not stop within ${graceS} s: terminated it` : `Terminated agent ${name} at once`}; its history records the reason "${end.reason}".`;
  }
}

/** `agents resume <name> [--session-tokens N] [--session-cost USD] [--daily-tokens N] [--daily-cost USD]` */
export async function resumeCommand(context: CommandContext): Promise<void> {
  const name = requireName(
    context,
    'agents resume <name> [--session-tokens N] [--session-cost USD] [--daily-tokens N] [--daily-cost USD]',
  );
  const budgets = budgetOptions(context);
  await withClient(context, async (agents) => {
    // The run would ignore a resume it cannot act on: say so instead of asking.
    await agents.runningHandle(name);
    const { state } = await agents.status(name);
    if (state !== 'paused_budget') {
      throw new AgentsError(
        'not_paused',
        `Agent ${name} is not paused (state: ${state}): resume lifts a budget pause only`,
      );
    }
    await agents.resume(name, Object.keys(budgets).length === 0 ? {} : { budgets });
    context.print(
      `Asked agent ${name} to resume${Object.keys(budgets).length === 0 ? '' : ` with ${JSON.stringify(budgets)}`}.`,
    );
  });
}
