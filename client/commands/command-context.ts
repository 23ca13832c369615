import { z } from 'zod';
import {
  budgetLimitsSchema,
  describeZodError,
  permissionRuleSchema,
  type BudgetLimits,
  type PermissionRule,
} from '../../common/agent-input';
import { AgentsClient } from '../agents-client';
import { byteSizeSchema, type AgentsConfig } from '../config';
import { connectTemporal, type TemporalSession } from '../connect';
import { AgentsError } from '../errors';

/**
 * What every `agents` command gets (the parsed command line, the configuration, where to write) and
 * the readers of its options: each fails with one line naming the option and what it accepts.
 */

/** What every command gets: the parsed command line, the configuration, and where to write. */
export interface CommandContext {
  positionals: string[];
  values: Record<string, string | boolean | undefined>;
  config: AgentsConfig;
  print: (line: string) => void;
}

/** The value of a string option, or undefined when it was not given. */
export function text(context: CommandContext, option: string): string | undefined {
  const value = context.values[option];
  return typeof value === 'string' ? value : undefined;
}

/** Whether a boolean option was given. */
export function flag(context: CommandContext, option: string): boolean {
  return context.values[option] === true;
}

/** Parses a numeric option with zod, failing with the option's name and what it accepts. */
export function numberOption(
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
export function byteSizeOption(context: CommandContext, option: string): number | undefined {
  const raw = text(context, option);
  if (raw === undefined) return undefined;
  const parsed = byteSizeSchema.safeParse(raw);
  if (!parsed.success) {
    throw new AgentsError('invalid_argument', `--${option} '${raw}': ${describeZodError(parsed.error)}`);
  }
  return parsed.data;
}

/** The values of an option given several times, in order. */
export function texts(context: CommandContext, option: string): string[] {
  const value = (context.values as Record<string, unknown>)[option];
  return Array.isArray(value) ? value.filter((item): item is string => typeof item === 'string') : [];
}

/** `--rule "allow bash(git status*)"`, in the order given: the first match wins. */
export function parseRules(context: CommandContext): PermissionRule[] {
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
export function budgetOptions(context: CommandContext): Partial<BudgetLimits> {
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

/** The one positional argument, the agent's name; fails with `usage` when it is missing or followed by more. */
export function requireName(context: CommandContext, usage: string): string {
  const [name, ...extra] = context.positionals;
  if (name === undefined) throw new AgentsError('invalid_argument', `An agent name is required: ${usage}`);
  if (extra.length > 0)
    throw new AgentsError('invalid_argument', `Unexpected argument '${extra[0]}': ${usage}`);
  return name;
}

/** Writes one line of news (about the server, not the command's answer) to stderr. */
export function printNews(line: string): void {
  process.stderr.write(`${line}\n`);
}

/**
 * Runs `action` with a typed client on a connection to the configured Temporal server, closed
 * afterwards; `onServer` hears about the embedded server being started. That news goes to stderr
 * unless told otherwise, so stdout holds only the command's answer and `--json` output parses.
 */
export async function withClient<T>(
  context: CommandContext,
  action: (agents: AgentsClient, session: TemporalSession) => Promise<T>,
  onServer: (message: string) => void = printNews,
): Promise<T> {
  const session = await connectTemporal(context.config, onServer);
  try {
    return await action(new AgentsClient(session.client), session);
  } finally {
    await session.close();
  }
}
