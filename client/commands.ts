import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import os from 'node:os';
import { DefaultLogger, Runtime, type LogLevel } from '@temporalio/worker';
import { z } from 'zod';
import {
  budgetLimitsSchema,
  describeZodError,
  intervalSchema,
  localModelSchema,
  permissionRuleSchema,
  type AgentRunInputDraft,
  type BudgetLimits,
  type ModelSpec,
  type PermissionRule,
} from '../common/agent-input';
import { AGENT_STATES, type AgentRunResult } from '../common/agent-run-types';
import { DEFAULT_LOCAL_MODEL, DEFAULT_PERMISSION_EXTENSION_S, TASK_QUEUE } from '../common/constants';
import { terminalSafeJson, visibleProse } from '../common/display-text';
import type { SandboxEndpoint } from '../activities/tool-executor';
import { checkBubblewrap, sandboxHostIdentity } from '../sandbox/bubblewrap';
import { formatBytes } from '../sandbox/byte-size';
import { relayProblem, serverNetworkEgress, type NetworkEgress } from '../sandbox/network-proxy';
import { SandboxServer } from '../sandbox/sandbox-server';
import type { SandboxTotals } from '../sandbox/sandbox-watchdog';
import { loadOrCreateToken } from '../sandbox/token';
import { runSandboxTool, type SandboxIsolation } from '../sandbox/tools';
import { LocalModel } from '../models/local-model';
import type { ModelProviders } from '../models/model-provider';
import {
  closeActivityDependencies,
  createActivityDependencies,
  createAgentsWorker,
} from '../worker/create-worker';
import { AgentsClient, validateRunInput } from './agents-client';
import {
  byteSizeSchema,
  maxSessionsSchema,
  sandboxTokenFile,
  webUiRunUrl,
  type AgentsConfig,
} from './config';
import { cliIdentity, connectTemporal, workerConnectionOptions, type TemporalSession } from './connect';
import {
  ensureSearchAttributes,
  isServerUp,
  serverFiles,
  startDevServer,
  stopBackgroundServer,
} from './embedded-server';
import { AgentsError } from './errors';
import { formatListings, formatPending, formatRecord, formatStatus } from './format';
import { ensureLocalModel } from './local-model-install';
import { exportRun } from './run-export';
import { MODEL_OPTION_FORMS, parseModelOption, resolveModelSpec } from './model-option';
import { toolServerCommand, toolServerTokenFile } from './tool-server-command';
import { ensureTemporalBinary, findTemporalBinary } from './temporal-binary';
import { listTemplates, loadTemplate } from './templates';

/** What every command gets: the parsed command line, the configuration, and where to write. */
export interface CommandContext {
  positionals: string[];
  values: Record<string, string | boolean | undefined>;
  config: AgentsConfig;
  print: (line: string) => void;
}

function text(context: CommandContext, option: string): string | undefined {
  const value = context.values[option];
  return typeof value === 'string' ? value : undefined;
}

function flag(context: CommandContext, option: string): boolean {
  return context.values[option] === true;
}

/** Parses a numeric option with zod, failing with the option's name and what it accepts. */
function numberOption(
  context: CommandContext,
  option: string,
  schema: z.ZodType<number, number>,
): number | undefined {
  const raw = text(context, option);
  if (raw === undefined) return undefined;
  const parsed = z.coerce.number().pipe(schema).safeParse(raw);
  if (!parsed.success || raw.trim() === '') {
    const reason = parsed.success ? 'a number is required' : describeZodError(parsed.error);
    throw new AgentsError('invalid_argument', `--${option} '${raw}': ${reason}`);
  }
  return parsed.data;
}

/** Parses a size option (`2GiB`, `500MiB`, bytes), failing with the option's name and what it accepts. */
function byteSizeOption(context: CommandContext, option: string): number | undefined {
  const raw = text(context, option);
  if (raw === undefined) return undefined;
  const parsed = byteSizeSchema.safeParse(raw);
  if (!parsed.success) {
    throw new AgentsError('invalid_argument', `--${option} '${raw}': ${describeZodError(parsed.error)}`);
  }
  return parsed.data;
}

/**
 * The totals of `agents sandbox`: `--disk-quota`, `--memory-limit` and `--max-sessions`, else the
 * environment's (`AGENTS_SANDBOX_DISK_QUOTA`, `…_MEMORY_LIMIT`, `…_MAX_SESSIONS`), else the defaults.
 */
function sandboxTotalsOptions(context: CommandContext): SandboxTotals {
  const configured = context.config.sandbox.totals;
  return {
    diskQuotaBytes: byteSizeOption(context, 'disk-quota') ?? configured.diskQuotaBytes,
    memoryLimitBytes: byteSizeOption(context, 'memory-limit') ?? configured.memoryLimitBytes,
    maxSessions: numberOption(context, 'max-sessions', maxSessionsSchema) ?? configured.maxSessions,
  };
}

function texts(context: CommandContext, option: string): string[] {
  const value = (context.values as Record<string, unknown>)[option];
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : [];
}

/** `--rule "allow bash(git status*)"`, in the order given: the first match wins. */
function parseRules(context: CommandContext): PermissionRule[] {
  return texts(context, 'rule').map((raw) => {
    const [action = '', ...rest] = raw.trim().split(/\s+/);
    const parsed = permissionRuleSchema.safeParse({ action, match: rest.join(' ') });
    if (!parsed.success) {
      throw new AgentsError(
        'invalid_argument',
        `--rule '${raw}': ${describeZodError(parsed.error)}. Accepted: "allow|ask|deny tool(pattern)", e.g. "allow bash(git status*)"`,
      );
    }
    return parsed.data;
  });
}

/** The budget options shared by `start` and `resume`; only the ones given. */
function budgetOptions(context: CommandContext): Partial<BudgetLimits> {
  const budgets: Partial<BudgetLimits> = {};
  const options = {
    'session-tokens': 'sessionTokens',
    'session-cost': 'sessionCostUsd',
    'daily-tokens': 'dailyTokens',
    'daily-cost': 'dailyCostUsd',
  } as const;
  for (const [option, field] of Object.entries(options)) {
    const value = numberOption(context, option, budgetLimitsSchema.shape[field].unwrap());
    if (value !== undefined) budgets[field] = value;
  }
  return budgets;
}

function requireName(context: CommandContext, usage: string): string {
  const [name, ...extra] = context.positionals;
  if (name === undefined) throw new AgentsError('invalid_argument', `An agent name is required: ${usage}`);
  if (extra.length > 0)
    throw new AgentsError('invalid_argument', `Unexpected argument '${extra[0]}': ${usage}`);
  return name;
}

async function withClient<T>(
  context: CommandContext,
  action: (agents: AgentsClient, session: TemporalSession) => Promise<T>,
  onServer: (message: string) => void = context.print,
): Promise<T> {
  const session = await connectTemporal(context.config, onServer);
  try {
    return await action(new AgentsClient(session.client), session);
  } finally {
    await session.close();
  }
}

/** Installs the SDK runtime with a logger at `level`, once per process. */
function installRuntime(level: LogLevel): void {
  try {
    Runtime.install({ logger: new DefaultLogger(level) });
  } catch {
    // Already installed by an earlier command in this process.
  }
}

function printResult(context: CommandContext, name: string, result: AgentRunResult): void {
  const { usage } = result;
  context.print(
    `Agent ${name} ended: ${result.exitReason} after ${result.iterations} iteration(s), ${usage.inputTokens} tokens in, ${usage.outputTokens} out, $${usage.costUsd.toFixed(4)}`,
  );
}

async function watchRun(
  context: CommandContext,
  agents: AgentsClient,
  name: string,
): Promise<AgentRunResult> {
  const result = await agents.watch(name, {
    onRecord: (record) => context.print(formatRecord(record)),
    // Running and sleeping alternate every iteration; the other states are news.
    onState: (state) => {
      if (state !== 'running' && state !== 'sleeping' && state !== 'stopped') context.print(`  · ${state}`);
    },
  });
  printResult(context, name, result);
  return result;
}

/** Calls one sandbox server runs at once unless `--lanes` says otherwise. */
const DEFAULT_SANDBOX_LANES = 8;

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

/** `agents approve|deny <name> <requestId> | --all [--note TEXT] [--by NAME]` */
function decideCommand(approve: boolean) {
  return async (context: CommandContext): Promise<void> => {
    const verb = approve ? 'approve' : 'deny';
    const usage = `agents ${verb} <name> <requestId> | <name> --all [--note TEXT] [--by NAME]`;
    const [name, requestId, ...extra] = context.positionals;
    if (name === undefined) throw new AgentsError('invalid_argument', `An agent name is required: ${usage}`);
    if (extra.length > 0)
      throw new AgentsError('invalid_argument', `Unexpected argument '${extra[0]}': ${usage}`);
    if ((requestId === undefined) === !flag(context, 'all')) {
      throw new AgentsError('invalid_argument', `Give a request ID or --all: ${usage}`);
    }
    const note = text(context, 'note');
    const by = text(context, 'by') ?? cliIdentity().replace(/^agents-cli /, '');
    await withClient(context, async (agents) => {
      const ids =
        requestId === undefined
          ? (await agents.pending(name)).map(({ request }) => request.requestId)
          : [requestId];
      if (ids.length === 0) {
        context.print(`Agent ${name} has no pending permission requests.`);
        return;
      }
      for (const id of ids) {
        await agents.decide(name, { requestId: id, approve, by, ...(note === undefined ? {} : { note }) });
        context.print(`${approve ? 'Approved' : 'Denied'} ${id} of agent ${name}.`);
      }
    });
  };
}

/** `agents extend <name> <requestId> [--seconds S]` */
export async function extendCommand(context: CommandContext): Promise<void> {
  const usage = 'agents extend <name> <requestId> [--seconds S]';
  const [name, requestId, ...extra] = context.positionals;
  if (name === undefined || requestId === undefined || extra.length > 0) {
    throw new AgentsError('invalid_argument', `An agent name and a request ID are required: ${usage}`);
  }
  const seconds = numberOption(context, 'seconds', z.number().positive()) ?? DEFAULT_PERMISSION_EXTENSION_S;
  await withClient(context, async (agents) => {
    await agents.decide(name, { requestId, extendS: seconds });
    context.print(`Gave request ${requestId} of agent ${name} ${seconds} more seconds.`);
  });
}

/** `agents pending [<name>] [--json]`: requests waiting for a decision, across all runs by default. */
export async function pendingCommand(context: CommandContext): Promise<void> {
  const [name, ...extra] = context.positionals;
  if (extra.length > 0)
    throw new AgentsError('invalid_argument', `Unexpected argument '${extra[0]}': agents pending [<name>]`);
  await withClient(context, async (agents) => {
    const pending = await agents.pending(name);
    if (flag(context, 'json')) context.print(terminalSafeJson(pending, 2));
    else context.print(formatPending(pending));
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

/** `agents export <name> [--format jsonl|md] [--output FILE]`: the run's whole story from its history. */
export async function exportCommand(context: CommandContext): Promise<void> {
  const name = requireName(context, 'agents export <name> [--format jsonl|md] [--output FILE]');
  const format = text(context, 'format') ?? 'jsonl';
  if (format !== 'jsonl' && format !== 'md') {
    throw new AgentsError('invalid_argument', `--format '${format}'. Accepted: jsonl, md`);
  }
  const output = text(context, 'output');
  await withClient(
    context,
    async (_agents, session) => {
      // Resolved before the file is created, so an unknown agent leaves no empty file behind.
      const chunks = await exportRun(session.client, name, { format });
      const sink = output === undefined ? process.stdout : createWriteStream(output);
      for await (const chunk of chunks) {
        if (!sink.write(chunk)) await once(sink, 'drain');
      }
      if (output !== undefined) {
        await new Promise<void>((resolve, reject) =>
          sink.end((error?: Error | null) => (error ? reject(error) : resolve())),
        );
        context.print(`Wrote the ${format} export of agent ${name} to ${output}`);
      }
      // On stdout the export is the output: news about the server goes to stderr.
    },
    output === undefined ? (message) => process.stderr.write(`${message}\n`) : context.print,
  );
}

/** `agents list [--state S]` */
export async function listCommand(context: CommandContext): Promise<void> {
  const state = text(context, 'state');
  if (state !== undefined && !(AGENT_STATES as readonly string[]).includes(state)) {
    throw new AgentsError(
      'invalid_argument',
      `Unknown --state '${state}'. Accepted: ${AGENT_STATES.join(', ')}`,
    );
  }
  await withClient(context, async (agents) => {
    const listings = await agents.list(state === undefined ? {} : { state });
    if (flag(context, 'json')) context.print(terminalSafeJson(listings, 2));
    else context.print(formatListings(listings));
  });
}

/** `agents status <name>` */
export async function statusCommand(context: CommandContext): Promise<void> {
  const name = requireName(context, 'agents status <name> [--json]');
  await withClient(context, async (agents) => {
    const status = await agents.status(name);
    context.print(flag(context, 'json') ? terminalSafeJson(status, 2) : formatStatus(status));
  });
}

/** `agents log <name> [-n N]` */
export async function logCommand(context: CommandContext): Promise<void> {
  const name = requireName(context, 'agents log <name> [-n N] [--json]');
  const count = numberOption(context, 'lines', z.number().int().positive()) ?? 10;
  await withClient(context, async (agents) => {
    const { iteration } = await agents.status(name);
    const records = await agents.iterations(name, { from: Math.max(1, iteration - count + 1), limit: count });
    if (flag(context, 'json')) {
      for (const record of records) context.print(terminalSafeJson(record));
    } else {
      context.print(
        records.length === 0 ? `Agent ${name} has no iterations yet.` : records.map(formatRecord).join('\n'),
      );
    }
  });
}

/** `agents watch <name>` */
export async function watchCommand(context: CommandContext): Promise<void> {
  const name = requireName(context, 'agents watch <name>');
  await withClient(context, async (agents) => {
    await watchRun(context, agents, name);
  });
}

/** `agents templates` */
export function templatesCommand(context: CommandContext): Promise<void> {
  for (const template of listTemplates(context.config.home)) {
    context.print(`${template.name.padEnd(22)} ${template.source.padEnd(9)} ${template.path}`);
  }
  return Promise.resolve();
}

/** `agents setup`: registers the search attributes on the configured server. */
export async function setupCommand(context: CommandContext): Promise<void> {
  await withClient(context, async (_agents, session) => {
    const added = await ensureSearchAttributes(session.connection, session.namespace);
    context.print(
      added.length === 0
        ? `Search attributes already registered in namespace ${session.namespace}.`
        : `Registered search attributes in namespace ${session.namespace}: ${added.join(', ')}`,
    );
  });
}

/** `agents worker`: polls task queue `agents` until Ctrl-C or SIGTERM. */
export async function workerCommand(context: CommandContext): Promise<void> {
  installRuntime('INFO');
  if (context.config.temporal.kind === 'embedded') {
    await connectTemporal(context.config, (message) => context.print(message)).then((session) =>
      session.close(),
    );
  }
  const sandboxes = await configuredSandboxes(context.config);
  if (sandboxes.length === 0) {
    context.print(
      'No sandbox servers configured (AGENTS_SANDBOX_URLS): tool calls will fail with a clear result.',
    );
  }
  const agentsWorker = await createAgentsWorker({
    connectionOptions: workerConnectionOptions(context.config),
    namespace: context.config.temporal.namespace,
    home: context.config.home,
    identity: `agents-worker-${process.pid}@${os.hostname()}`,
    sandboxes,
    toolServer: await configuredToolServer(context.config),
  });
  context.print(
    `Worker polling task queue '${TASK_QUEUE}' on ${context.config.temporal.address} (Ctrl-C stops it)`,
  );
  await agentsWorker.run();
}

/** `agents server [start|stop|status]`: the embedded dev server, in the foreground by default. */
export async function serverCommand(context: CommandContext): Promise<void> {
  const { temporal } = context.config;
  if (temporal.kind !== 'embedded') {
    throw new AgentsError(
      'invalid_argument',
      `TEMPORAL_ADDRESS is set (${temporal.address}): there is no embedded server to manage`,
    );
  }
  const action = context.positionals[0] ?? 'run';
  const running = await isServerUp(temporal.address);
  switch (action) {
    case 'status':
      context.print(
        running
          ? `Temporal dev server answers on ${temporal.address} (Web UI http://localhost:${temporal.uiPort})`
          : `No Temporal server on ${temporal.address}`,
      );
      return;
    case 'stop':
      context.print(
        (await stopBackgroundServer(context.config.home))
          ? 'Stopped the background Temporal dev server.'
          : `No background server recorded in ${serverFiles(context.config.home).pidFile}`,
      );
      return;
    case 'start':
    case 'run': {
      if (running) {
        context.print(`A Temporal server already answers on ${temporal.address}.`);
        return;
      }
      const binary = findTemporalBinary(context.config.home, temporal.binary);
      const mode = action === 'start' ? 'background' : 'foreground';
      const child = await startDevServer({
        binary,
        server: temporal,
        home: context.config.home,
        mode,
        inheritOutput: mode === 'foreground',
      });
      context.print(
        `Temporal dev server on ${temporal.address}, Web UI http://localhost:${temporal.uiPort}, data ${serverFiles(context.config.home).database}`,
      );
      if (mode === 'background') return;
      const forward = () => child.kill('SIGTERM');
      process.once('SIGINT', forward).once('SIGTERM', forward);
      await once(child, 'exit');
      return;
    }
    default:
      throw new AgentsError(
        'invalid_argument',
        `Unknown server action '${action}'. Accepted: start, stop, status (none runs it in the foreground)`,
      );
  }
}

/** The external tool server workers use: `AGENTS_TOOL_SERVER_URL` with its token, or none. */
async function configuredToolServer(
  config: AgentsConfig,
): Promise<{ url: string; token: string } | undefined> {
  const { url, token } = config.toolServer;
  if (url === undefined) return undefined;
  return { url, token: await loadOrCreateToken(toolServerTokenFile(config.home), token) };
}

/** The sandbox servers workers use: `AGENTS_SANDBOX_URLS` with its token, or none. */
async function configuredSandboxes(config: AgentsConfig): Promise<SandboxEndpoint[]> {
  if (config.sandbox.urls.length === 0) return [];
  const token = await loadOrCreateToken(sandboxTokenFile(config.home), config.sandbox.token);
  return config.sandbox.urls.map((url) => ({ url, token }));
}

/**
 * Starts a sandbox server in this process on loopback, for `agents dev` when no sandbox servers are
 * configured; undefined (with the reason printed) when bubblewrap is unusable.
 */
async function startLocalSandbox(
  context: CommandContext,
  port: number,
): Promise<{ server: SandboxServer; endpoint: SandboxEndpoint } | undefined> {
  const check = await checkBubblewrap();
  if (!check.usable) {
    context.print(
      `No sandbox: bubblewrap is not usable (${check.reason}); tool calls will fail until it is.`,
    );
    return undefined;
  }
  const token = await loadOrCreateToken(sandboxTokenFile(context.config.home), context.config.sandbox.token);
  const { totals } = context.config.sandbox;
  const network = sandboxNetwork(context);
  const server = new SandboxServer({
    root: context.config.sandbox.root,
    token,
    lanes: DEFAULT_SANDBOX_LANES,
    runTool: (call, workspace, signal) =>
      runSandboxTool(call, workspace, signal, 'bubblewrap', totals, network),
  });
  const bound = await server.listen(port);
  return { server, endpoint: { url: `http://127.0.0.1:${bound}`, token } };
}

/**
 * The way out of a sandbox server's sandboxes: its network proxies, with the operator's
 * `AGENTS_SANDBOX_ALLOW_CIDRS`. Says so at start when the relay the network needs is missing, or
 * when ranges that are refused by default are let through.
 */
function sandboxNetwork(context: CommandContext): NetworkEgress {
  const { root, allowCidrs = [] } = context.config.sandbox;
  const problem = relayProblem();
  if (problem !== undefined) context.print(`Note: ${problem}`);
  if (allowCidrs.length > 0) {
    context.print(
      `Network: sandboxed commands may also reach ${allowCidrs.join(', ')} (AGENTS_SANDBOX_ALLOW_CIDRS)`,
    );
  }
  return serverNetworkEgress(root, { allowCidrs, owner: sandboxHostIdentity() });
}

/**
 * `agents sandbox`: the sandbox server in the foreground, on loopback unless told otherwise. It
 * refuses to start without a usable bubblewrap unless `--unsafe-no-sandbox` is given; then `bash`
 * runs on the host (no isolation; absolute `/workspace/...` paths do not map) and the stateful tools
 * are refused. Where bubblewrap is usable the flag changes nothing.
 */
export async function sandboxCommand(context: CommandContext): Promise<void> {
  const port =
    numberOption(context, 'port', z.number().int().min(0).max(65_535)) ?? context.config.sandbox.port;
  const lanes = numberOption(context, 'lanes', z.number().int().min(1).max(1024)) ?? DEFAULT_SANDBOX_LANES;
  const host = text(context, 'host') ?? '127.0.0.1';
  const unsafeNoSandbox = flag(context, 'unsafe-no-sandbox');
  const totals = sandboxTotalsOptions(context);
  const check = await checkBubblewrap();
  let isolation: SandboxIsolation = 'bubblewrap';
  if (!check.usable) {
    if (!unsafeNoSandbox) {
      throw new AgentsError(
        'sandbox_unavailable',
        `bubblewrap is not usable (${check.reason}): install it (Debian: apt-get install bubblewrap) and allow unprivileged user namespaces, or pass --unsafe-no-sandbox to run tool calls unsandboxed on this host`,
      );
    }
    isolation = 'none';
    context.print(
      `WARNING: bubblewrap is not usable (${check.reason}); running tool calls UNSANDBOXED on this host because of --unsafe-no-sandbox: commands see the host's files, processes and network, absolute /workspace/... paths do not map to the workspace, and bash_stateful and tmux are refused`,
    );
  } else if (unsafeNoSandbox) {
    context.print(
      'Note: bubblewrap is usable, so --unsafe-no-sandbox changes nothing: tool calls run in bubblewrap',
    );
  }
  const tokenFile = sandboxTokenFile(context.config.home);
  const token = await loadOrCreateToken(tokenFile, context.config.sandbox.token);
  const { root } = context.config.sandbox;
  const network = sandboxNetwork(context);
  const server = new SandboxServer({
    root,
    token,
    lanes,
    runTool: (call, workspace, signal) => runSandboxTool(call, workspace, signal, isolation, totals, network),
  });
  const bound = await server.listen(port, host);
  const mode = isolation === 'none' ? ' (UNSANDBOXED)' : '';
  context.print(`Sandbox server on http://${host}:${bound}${mode}: ${lanes} lanes, workspaces in ${root}`);
  context.print(
    `Totals: ${formatBytes(totals.diskQuotaBytes)} of disk per workspace, ${formatBytes(totals.memoryLimitBytes)} of memory per call or session, ${totals.maxSessions} stateful sessions`,
  );
  context.print(
    context.config.sandbox.token === undefined
      ? `Bearer token in ${tokenFile}`
      : 'Bearer token from AGENTS_SANDBOX_TOKEN',
  );
  await new Promise<void>((resolve) => process.once('SIGINT', resolve).once('SIGTERM', resolve));
  await server.close();
}

/** `agents dev`: the embedded server and a worker in the foreground; Ctrl-C stops both. */
export async function devCommand(context: CommandContext): Promise<void> {
  const { temporal } = context.config;
  installRuntime('INFO');
  let server: Awaited<ReturnType<typeof startDevServer>> | undefined;
  if (temporal.kind === 'embedded' && !(await isServerUp(temporal.address))) {
    const binary = findTemporalBinary(context.config.home, temporal.binary);
    server = await startDevServer({
      binary,
      server: temporal,
      home: context.config.home,
      mode: 'foreground',
    });
    context.print(
      `Temporal dev server on ${temporal.address}, Web UI http://localhost:${temporal.uiPort} (log ${serverFiles(context.config.home).logFile})`,
    );
  } else {
    await connectTemporal(context.config, (message) => context.print(message)).then((session) =>
      session.close(),
    );
  }
  let sandboxes = await configuredSandboxes(context.config);
  const localSandbox =
    sandboxes.length === 0 ? await startLocalSandbox(context, context.config.sandbox.port) : undefined;
  if (localSandbox !== undefined) {
    sandboxes = [localSandbox.endpoint];
    context.print(`Sandbox server on ${localSandbox.endpoint.url} (bubblewrap)`);
  }
  try {
    const agentsWorker = await createAgentsWorker({
      connectionOptions: workerConnectionOptions(context.config),
      namespace: temporal.namespace,
      home: context.config.home,
      sandboxes,
      toolServer: await configuredToolServer(context.config),
    });
    context.print(
      `Worker polling task queue '${TASK_QUEUE}'. Start agents from another terminal; Ctrl-C stops.`,
    );
    await agentsWorker.run();
  } finally {
    await localSandbox?.server.close();
    if (server !== undefined && server.exitCode === null) {
      server.kill('SIGTERM');
      await once(server, 'exit');
    }
  }
}

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
    await withClient(context, async (agents) => {
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
        const result = await watchRun(context, agents, 'demo');
        const link = webUiRunUrl(context.config, handle.workflowId, handle.firstExecutionRunId);
        if (link !== undefined) context.print(`Web UI of this run: ${link}`);
        if (result.exitReason === 'repeated_failures') {
          const { lastError } = await agents.status('demo');
          throw new AgentsError(
            'run_failed',
            `The demo run failed: ${lastError === null ? 'see its history' : visibleProse(lastError)}`,
          );
        }
        if (temporal.kind === 'embedded') {
          context.print(
            'The dev server keeps running in the background for the Web UI; `agents server stop` ends it.',
          );
        }
      } finally {
        agentsWorker.worker.shutdown();
        await running;
      }
    });
  } finally {
    await closeActivityDependencies(dependencies);
    await localSandbox?.server.close();
  }
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

const BUDGET_OPTIONS = {
  'session-tokens': { type: 'string' },
  'session-cost': { type: 'string' },
  'daily-tokens': { type: 'string' },
  'daily-cost': { type: 'string' },
} as const;

/** Every `agents` command with its options (for `node:util` parseArgs) and one line of help. */
export const COMMANDS = {
  demo: {
    run: demoCommand,
    usage: 'demo [--iterations N] [--model local|scripted]',
    help: 'run a short agent on the embedded default (the local model) and show its progress',
    options: { iterations: { type: 'string' }, model: { type: 'string' } },
  },
  dev: {
    run: devCommand,
    usage: 'dev',
    help: 'embedded Temporal server and a worker in the foreground (Ctrl-C stops both)',
    options: {},
  },
  server: {
    run: serverCommand,
    usage: 'server [start|stop|status]',
    help: 'the embedded Temporal dev server: foreground, background start, stop, status',
    options: {},
  },
  sandbox: {
    run: sandboxCommand,
    usage:
      'sandbox [--port P] [--host H] [--lanes N] [--disk-quota SIZE] [--memory-limit SIZE] [--max-sessions N] [--unsafe-no-sandbox]',
    help: 'the sandbox server: bubblewrap workspaces for tool calls (bearer token, loopback by default); --disk-quota per workspace and --memory-limit per call or session (default 2GiB each), --max-sessions stateful sessions (default 16); --unsafe-no-sandbox runs them on the host when bubblewrap is not usable',
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      lanes: { type: 'string' },
      'disk-quota': { type: 'string' },
      'memory-limit': { type: 'string' },
      'max-sessions': { type: 'string' },
      'unsafe-no-sandbox': { type: 'boolean' },
    },
  },
  'tool-server': {
    run: toolServerCommand,
    usage: 'tool-server --tools <module> [--port P] [--host H] [--concurrency N]',
    help: 'the external tool server: the tools of a TypeScript/JS module over HTTP (bearer token, loopback by default)',
    options: {
      tools: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string' },
      concurrency: { type: 'string' },
    },
  },
  worker: {
    run: workerCommand,
    usage: 'worker',
    help: `a worker polling task queue '${TASK_QUEUE}'`,
    options: {},
  },
  setup: {
    run: setupCommand,
    usage: 'setup',
    help: 'register the search attributes on the configured Temporal server',
    options: {},
  },
  start: {
    run: startCommand,
    usage:
      'start <name> --template T [--args TEXT] [--interval S] [--max-iterations N] [--model M] [--base-url URL] [--api-key-env VAR] [--max-output-tokens N] [--temperature T] [--price IN,OUT] [--permission-mode ask|auto-approve] [--rule "allow|ask|deny tool(pattern)"]… [--permission-timeout S] [--on-deny stop|continue] [--session-tokens N] [--session-cost USD] [--daily-tokens N] [--daily-cost USD] [--webhook URL] [--replace] [--watch]',
    help: `start an agent run; tool calls ask for approval unless --permission-mode auto-approve or a rule allows them. --model: ${MODEL_OPTION_FORMS.join(', ')} (default: $AGENTS_MODEL, else local)`,
    options: {
      template: { type: 'string', short: 't' },
      args: { type: 'string' },
      interval: { type: 'string' },
      'max-iterations': { type: 'string' },
      model: { type: 'string' },
      'base-url': { type: 'string' },
      'api-key-env': { type: 'string' },
      'max-output-tokens': { type: 'string' },
      temperature: { type: 'string' },
      price: { type: 'string' },
      'permission-mode': { type: 'string' },
      rule: { type: 'string', multiple: true },
      'permission-timeout': { type: 'string' },
      'on-deny': { type: 'string' },
      ...BUDGET_OPTIONS,
      webhook: { type: 'string' },
      replace: { type: 'boolean' },
      watch: { type: 'boolean', short: 'w' },
    },
  },
  approve: {
    run: decideCommand(true),
    usage: 'approve <name> <requestId> | <name> --all [--note TEXT] [--by NAME]',
    help: 'approve a pending permission request (or all of a run)',
    options: { all: { type: 'boolean' }, note: { type: 'string' }, by: { type: 'string' } },
  },
  deny: {
    run: decideCommand(false),
    usage: 'deny <name> <requestId> | <name> --all [--note TEXT] [--by NAME]',
    help: 'deny a pending permission request (or all of a run)',
    options: { all: { type: 'boolean' }, note: { type: 'string' }, by: { type: 'string' } },
  },
  extend: {
    run: extendCommand,
    usage: `extend <name> <requestId> [--seconds S]`,
    help: `give a pending permission request more time (default ${DEFAULT_PERMISSION_EXTENSION_S} s)`,
    options: { seconds: { type: 'string' } },
  },
  pending: {
    run: pendingCommand,
    usage: 'pending [<name>] [--json]',
    help: 'permission requests waiting for a decision, across all runs unless a name is given',
    options: { json: { type: 'boolean' } },
  },
  resume: {
    run: resumeCommand,
    usage: 'resume <name> [--session-tokens N] [--session-cost USD] [--daily-tokens N] [--daily-cost USD]',
    help: 'resume a run paused on its budgets, with new budgets for it if given (0 lifts a limit)',
    options: { ...BUDGET_OPTIONS },
  },
  export: {
    run: exportCommand,
    usage: 'export <name> [--format jsonl|md] [--output FILE]',
    help: "a run's whole story from its Temporal history, across continue-as-new: prompts, outputs, tool calls, approvals",
    options: { format: { type: 'string' }, output: { type: 'string', short: 'o' } },
  },
  stop: {
    run: stopCommand,
    usage: 'stop <name> | --all [--reason TEXT]',
    help: 'ask a run (or all) to stop',
    options: { all: { type: 'boolean' }, reason: { type: 'string' } },
  },
  list: {
    run: listCommand,
    usage: 'list [--state S] [--json]',
    help: 'list runs, optionally by AgentState',
    options: { state: { type: 'string' }, json: { type: 'boolean' } },
  },
  status: {
    run: statusCommand,
    usage: 'status <name> [--json]',
    help: "a run's state, iteration, usage and last error",
    options: { json: { type: 'boolean' } },
  },
  log: {
    run: logCommand,
    usage: 'log <name> [-n N] [--json]',
    help: 'the last iteration records of a run',
    options: { lines: { type: 'string', short: 'n' }, json: { type: 'boolean' } },
  },
  watch: { run: watchCommand, usage: 'watch <name>', help: 'follow a run live until it ends', options: {} },
  templates: {
    run: templatesCommand,
    usage: 'templates',
    help: 'list built-in and user templates',
    options: {},
  },
} as const;
