import { z } from 'zod';
import { MAX_FILE_CHARS, type SandboxToolName } from './tool-call';

/**
 * The arguments of each sandbox tool, defined once: the sandbox server parses every call with them,
 * and the worker describes the tools to models from them (as JSON Schema) and checks a model's
 * calls before anything runs.
 */

const noNul = (value: string): boolean => !value.includes('\0');

/** A path as the model gives it: relative to the workspace, or absolute under /workspace. */
const pathArgument = z.string().min(1, 'must not be empty').refine(noNul, 'must not contain NUL characters');

/** Seconds; the call's own `timeoutS` wins, and either is clamped to 1..600. */
const timeoutArgument = z
  .number()
  .optional()
  .describe('Seconds before the command is stopped (1-600, default 30)');

export const bashArgumentsSchema = z.object({
  command: z.string().min(1, 'must not be empty').describe('The shell command'),
  timeout: timeoutArgument,
});

export const readFileArgumentsSchema = z.object({
  path: pathArgument.describe('File path, relative to the workspace'),
  /** Characters to skip from the start of the file. */
  offset: z
    .number()
    .int('must be a whole number')
    .min(0, 'must be 0 or more')
    .default(0)
    .describe('Characters to skip from the start'),
  /** Characters to return at most; never more than MAX_FILE_CHARS. */
  limit: z
    .number()
    .int('must be a whole number')
    .min(1, 'must be 1 or more')
    .optional()
    .describe(`Characters to return at most (up to ${MAX_FILE_CHARS})`),
});

export const writeFileArgumentsSchema = z.object({
  path: pathArgument.describe('File path, relative to the workspace'),
  content: z
    .string()
    .max(MAX_FILE_CHARS, `must be at most ${MAX_FILE_CHARS} characters`)
    .describe('The whole new content of the file'),
});

/** Arguments of `bash_stateful`: those of `bash`. */
export const bashStatefulArgumentsSchema = z.object({
  command: z
    .string()
    .min(1, 'must not be empty')
    .refine(noNul, 'must not contain NUL characters')
    .describe('The shell command'),
  timeout: timeoutArgument,
});

/** Longest `keys` accepted; longer text belongs in a file (write_file). */
const MAX_TMUX_KEYS_CHARS = 50_000;

const TMUX_ACTIONS = ['start', 'send_keys', 'capture', 'stream', 'stop'] as const;

/** Arguments of `tmux`. Width and height are clamped, not refused. */
export const tmuxArgumentsSchema = z.object({
  action: z.enum(TMUX_ACTIONS, { error: `must be one of ${TMUX_ACTIONS.join(', ')}` }),
  /** tmux itself refuses "." and ":" in a name; the name also names the session's log file. */
  session: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 characters of A-Z, a-z, 0-9, "_" or "-"')
    .default('main'),
  keys: z
    .string()
    .min(1, 'must not be empty')
    .max(MAX_TMUX_KEYS_CHARS, `must be at most ${MAX_TMUX_KEYS_CHARS} characters`)
    .refine(noNul, 'must not contain NUL characters')
    .optional()
    .describe('Keys to type, for send_keys; "\\n" presses Enter'),
  block: z.boolean().default(false).describe('send_keys: wait until the pane is quiet'),
  min_wait: z.number().min(0, 'must be 0 or more').optional(),
  max_wait: z.number().min(0, 'must be 0 or more').optional(),
  offset: z
    .number()
    .int('must be a whole number')
    .min(0, 'must be 0 or more')
    .default(0)
    .describe('stream: byte offset to read the output from'),
  width: z.number().optional(),
  height: z.number().optional(),
});

/** Each sandbox tool: what it is for, and its arguments. */
export const SANDBOX_TOOL_ARGUMENTS: Record<SandboxToolName, { description: string; schema: z.ZodObject }> = {
  bash: {
    description:
      'Run a shell command in the workspace, isolated: a fresh shell each call. Returns stdout, stderr and the exit code.',
    schema: bashArgumentsSchema,
  },
  read_file: { description: 'Read a text file of the workspace.', schema: readFileArgumentsSchema },
  write_file: {
    description:
      'Write a text file of the workspace, creating folders as needed and replacing what was there.',
    schema: writeFileArgumentsSchema,
  },
  bash_stateful: {
    description:
      'Run a shell command in a shell that persists between calls: working folder, variables and functions stay.',
    schema: bashStatefulArgumentsSchema,
  },
  tmux: {
    description:
      'Named terminal sessions for interactive programs and servers: start, send_keys, capture, stream, stop.',
    schema: tmuxArgumentsSchema,
  },
};

/**
 * The parsed arguments, or a one-line error naming the tool and the fields: "Invalid arguments for
 * tool write_file: path is required". Unknown arguments are dropped, so whatever the model adds
 * (`allow_network`, `require_sandbox`) changes nothing.
 */
export function parseToolArguments<T>(
  tool: string,
  args: Record<string, unknown>,
  schema: z.ZodType<T>,
): { ok: true; value: T } | { ok: false; error: string } {
  const parsed = schema.safeParse(args, {
    error: (issue) => {
      if (issue.code !== 'invalid_type') return undefined;
      return issue.input === undefined ? 'is required' : `must be a ${issue.expected}`;
    },
  });
  if (parsed.success) return { ok: true, value: parsed.data };
  const problems = parsed.error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.length > 0 ? issue.path.join('.') : 'arguments'} ${issue.message}`);
  return { ok: false, error: `Invalid arguments for tool ${tool}: ${problems.join('; ')}` };
}
