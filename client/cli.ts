import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { TEMPORAL_CLI_VERSION } from '../common/constants';
import { COMMANDS } from './commands';
import type { CommandContext } from './commands/command-context';
import { AgentsError } from './errors';
import { describeExitCodes, EXIT_FAILURE, EXIT_SUCCESS, EXIT_USAGE } from './exit-codes';

type CommandName = keyof typeof COMMANDS;

function usage(): string {
  return [
    'agents: autonomous LLM agents as durable Temporal workflows',
    '',
    'Usage: agents <command> [options]   (--verbose adds stack traces to errors)',
    '',
    ...Object.values(COMMANDS).map((command) => `  agents ${command.usage}\n      ${command.help}`),
    '',
    'Environment: AGENTS_HOME (default ~/.durable-agents); TEMPORAL_ADDRESS to use a cluster instead of the',
    'embedded dev server (with TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_* as Temporal reads them);',
    'TEMPORAL_CLI, AGENTS_TEMPORAL_PORT, AGENTS_UI_PORT for the embedded server.',
    '',
    describeExitCodes(),
  ].join('\n');
}

/** `agents --version`: this package's version, and the Temporal CLI it pins. */
function versionLine(): string {
  const { version } = JSON.parse(readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as {
    version: string;
  };
  return `agents ${version} (durable-agents; Temporal CLI ${TEMPORAL_CLI_VERSION}; Node.js ${process.version})`;
}

/**
 * Writes a string option followed by a negative number (`--interval -1`) as `--interval=-1`, which
 * parseArgs would otherwise refuse as ambiguous: the command's own check then says what the option
 * accepts. Short options are written with their long name.
 */
function joinNegativeNumbers(
  args: string[],
  options: Record<string, { type: 'string' | 'boolean'; short?: string }>,
): string[] {
  const joined: string[] = [];
  for (let index = 0; index < args.length; index += 1) {
    const argument = args[index] ?? '';
    if (argument === '--') return [...joined, ...args.slice(index)];
    const next = args[index + 1];
    const long = argument.startsWith('--')
      ? argument.slice(2)
      : Object.keys(options).find((option) => `-${options[option]?.short}` === argument);
    if (
      long !== undefined &&
      options[long]?.type === 'string' &&
      next !== undefined &&
      /^-\.?\d/.test(next)
    ) {
      joined.push(`--${long}=${next}`);
      index += 1;
    } else {
      joined.push(argument);
    }
  }
  return joined;
}

/** Whether `name` is an `agents` command (bin/run-cli.cjs records, with its code cache, which ran). */
export function isCommand(name: string): name is CommandName {
  return Object.hasOwn(COMMANDS, name);
}

/** An unexpected error on one line: its name and message, then the messages of its causes. */
function describeUnexpected(error: unknown): string {
  const parts: string[] = [];
  for (let current: unknown = error; current instanceof Error && parts.length < 4; current = current.cause) {
    parts.push(parts.length === 0 ? `${current.name}: ${current.message}` : current.message);
  }
  return parts.length === 0 ? String(error) : parts.join(': ');
}

/** Runs the CLI; resolves to the exit code. Failures print one line (a stack trace with --verbose). */
export async function main(argv: string[]): Promise<number> {
  const print = (line: string) => process.stdout.write(`${line}\n`);
  const verbose = argv.includes('--verbose');
  const rest = argv.filter((argument) => argument !== '--verbose');
  const [name, ...commandArguments] = rest;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    print(usage());
    return name === undefined ? EXIT_USAGE : EXIT_SUCCESS;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    print(versionLine());
    return EXIT_SUCCESS;
  }
  try {
    if (!isCommand(name)) {
      throw new AgentsError(
        'invalid_argument',
        `Unknown command '${name}'. Commands: ${Object.keys(COMMANDS).join(', ')}`,
      );
    }
    const command = COMMANDS[name];
    if (commandArguments.includes('--help') || commandArguments.includes('-h')) {
      print(`Usage: agents ${command.usage}\n${command.help}`);
      return 0;
    }
    let parsed;
    try {
      parsed = parseArgs({
        args: joinNegativeNumbers(commandArguments, command.options),
        options: command.options,
        allowPositionals: true,
        strict: true,
      });
    } catch (error) {
      const { message } = error as Error;
      // "ambiguous" says how to give a value that starts with '-': keep all of it, on one line.
      const reason = message.includes('ambiguous')
        ? message.split('\n').join(' ').replace(/\.$/, '')
        : message.split('. ')[0];
      throw new AgentsError('invalid_argument', `${reason}. Usage: agents ${command.usage}`);
    }
    // Loaded only now: the configuration's schemas and Temporal's environment reader are not needed
    // for help, the version or a usage error (see commandModules in ./commands).
    /* eslint-disable @typescript-eslint/no-require-imports -- see above */
    const { loadConfig } = require('./config') as typeof import('./config');
    const { tightenPrivateFolder } =
      require('../sandbox/private-files') as typeof import('../sandbox/private-files');
    /* eslint-enable @typescript-eslint/no-require-imports */
    const context: CommandContext = {
      positionals: parsed.positionals,
      values: parsed.values as CommandContext['values'],
      config: loadConfig(),
      print,
    };
    // A home an earlier version made 0755 is closed before anything reads or writes in it.
    await tightenPrivateFolder(context.config.home);
    // A command that follows a run answers with the exit code of how the run ended.
    const code: unknown = await command.run(context);
    return typeof code === 'number' ? code : EXIT_SUCCESS;
  } catch (error) {
    // The reader went away (`agents export x | head`): nothing left to say, and nothing failed.
    if ((error as NodeJS.ErrnoException).code === 'EPIPE') return EXIT_SUCCESS;
    if (verbose) console.error(error);
    const message = error instanceof AgentsError ? error.message : describeUnexpected(error);
    process.stderr.write(`agents: ${message.split('\n')[0]}\n`);
    return EXIT_FAILURE;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(error);
      process.exit(1);
    },
  );
}
