import { parseArgs } from 'node:util';
import { tightenPrivateFolder } from '../sandbox/private-files';
import { COMMANDS } from './commands';
import type { CommandContext } from './commands/command-context';
import { loadConfig } from './config';
import { AgentsError } from './errors';

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
  ].join('\n');
}

function isCommand(name: string): name is CommandName {
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
    return name === undefined ? 2 : 0;
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
        args: commandArguments,
        options: command.options,
        allowPositionals: true,
        strict: true,
      });
    } catch (error) {
      const reason = (error as Error).message.split('. ')[0];
      throw new AgentsError('invalid_argument', `${reason}. Usage: agents ${command.usage}`);
    }
    const context: CommandContext = {
      positionals: parsed.positionals,
      values: parsed.values as CommandContext['values'],
      config: loadConfig(),
      print,
    };
    // A home an earlier version made 0755 is closed before anything reads or writes in it.
    await tightenPrivateFolder(context.config.home);
    await command.run(context);
    return 0;
  } catch (error) {
    // The reader went away (`agents export x | head`): nothing left to say, and nothing failed.
    if ((error as NodeJS.ErrnoException).code === 'EPIPE') return 0;
    if (verbose) console.error(error);
    const message = error instanceof AgentsError ? error.message : describeUnexpected(error);
    process.stderr.write(`agents: ${message.split('\n')[0]}\n`);
    return 1;
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
