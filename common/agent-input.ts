import { z } from 'zod';
import { AGENT_NAME_PATTERN, DEFAULT_ERROR_BACKOFF_S, DEFAULT_INTERVAL_S, MIN_INTERVAL_S } from './constants';

/**
 * The input of an `agentRun` workflow, validated by the client before start so that bad input never
 * reaches Temporal. Everything the run needs is in here (the template's content too), so the history
 * alone shows exactly what the agent was asked to do.
 */

/** An agent name as used in the workflow ID, the search attributes and file names. */
export const agentNameSchema = z
  .string()
  .regex(
    AGENT_NAME_PATTERN,
    'must be 1-63 characters of a-z, 0-9, "_" or "-", starting with a letter or digit',
  );

/** Token counts of one model call or of a whole run. */
export const tokenUsageSchema = z.object({
  inputTokens: z.number().int().nonnegative(),
  outputTokens: z.number().int().nonnegative(),
});
export type TokenUsage = z.infer<typeof tokenUsageSchema>;

/**
 * One turn of a scripted model. A turn with `error` throws instead of answering: on every attempt
 * (a non-retryable failure, so the iteration records an error) or, with `failAttempts`, only on the
 * first attempts (a transient failure that Temporal's retry absorbs, after which `text` is played).
 */
export const scriptedTurnSchema = z
  .object({
    text: z.string().default(''),
    usage: tokenUsageSchema.default({ inputTokens: 0, outputTokens: 0 }),
    costUsd: z.number().nonnegative().default(0),
    delayMs: z.number().int().min(0).max(600_000).default(0),
    error: z.string().min(1).optional(),
    failAttempts: z.number().int().positive().optional(),
    /** Tools the model calls in this turn; their results go to the next turn. */
    toolCalls: z
      .array(
        z
          .object({ tool: z.string().min(1), arguments: z.record(z.string(), z.unknown()).default({}) })
          .strict(),
      )
      .default([]),
  })
  .strict();
export type ScriptedTurn = z.infer<typeof scriptedTurnSchema>;
/** A scripted turn as written, defaults not yet applied. */
export type ScriptedTurnDraft = z.input<typeof scriptedTurnSchema>;

/** A scripted model plays its turns in order, one per model call, then starts over or repeats the last. */
export const scriptedModelSchema = z
  .object({
    provider: z.literal('scripted'),
    turns: z.array(scriptedTurnSchema).min(1, 'a script needs at least one turn'),
    whenExhausted: z.enum(['cycle', 'repeat-last']).default('cycle'),
  })
  .strict();

/**
 * Which model answers the run. A union on `provider`, so a new provider adds a member here and an
 * implementation in the worker; the workflow passes the spec through without looking inside.
 */
export const modelSpecSchema = z.discriminatedUnion('provider', [scriptedModelSchema]);
export type ModelSpec = z.infer<typeof modelSpecSchema>;

/** The task program, embedded so the history shows the exact text the agent followed. */
export const templateRefSchema = z
  .object({
    name: z.string().min(1),
    source: z.enum(['built-in', 'user', 'file']),
    content: z
      .string()
      .min(1, 'the template is empty')
      .max(200_000, 'templates are limited to 200,000 characters'),
  })
  .strict();
export type TemplateRef = z.infer<typeof templateRefSchema>;

/** Pause between iterations: 0 runs them back to back, otherwise at least the safe minimum. */
export const intervalSchema = z
  .number()
  .min(0)
  .max(86_400)
  .refine((seconds) => seconds === 0 || seconds >= MIN_INTERVAL_S, {
    message: `must be 0 (no pause) or between ${MIN_INTERVAL_S} and 86400 seconds`,
  });

/** How the run's tool calls are isolated: decided by whoever starts the run, never by the model. */
export const sandboxPolicySchema = z
  .object({
    /** Whether commands may reach the network. */
    network: z.boolean().default(false),
  })
  .strict();

/** The run's sandbox: its policy, and what becomes of the workspace when the run ends. */
export const sandboxSettingsSchema = sandboxPolicySchema
  .extend({
    /** Delete the workspace when the run ends, instead of keeping it for its artifacts. */
    resetOnEnd: z.boolean().default(false),
  })
  .strict();

/** Limits that protect a run from looping on failures. */
export const guardLimitsSchema = z
  .object({
    /** Pause after an iteration whose model call failed, instead of the interval (seconds). */
    errorBackoffS: z.number().min(0).max(3600).default(DEFAULT_ERROR_BACKOFF_S),
  })
  .strict();

export const agentRunInputSchema = z
  .object({
    name: agentNameSchema,
    template: templateRefSchema,
    args: z.string().max(20_000).default(''),
    intervalS: intervalSchema.default(DEFAULT_INTERVAL_S),
    maxIterations: z.number().int().positive().optional(),
    model: modelSpecSchema,
    guards: guardLimitsSchema.default({ errorBackoffS: DEFAULT_ERROR_BACKOFF_S }),
    sandbox: sandboxSettingsSchema.default({ network: false, resetOnEnd: false }),
  })
  .strict();

/** What a caller may pass: defaults not yet applied. */
export type AgentRunInputDraft = z.input<typeof agentRunInputSchema>;
/** What the workflow receives: every default applied by the client. */
export type AgentRunInput = z.output<typeof agentRunInputSchema>;

/** Formats the first zod issue as "field: what was wrong" for a one-line error. */
export function describeZodError(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => (issue.path.length > 0 ? `${issue.path.join('.')}: ${issue.message}` : issue.message))
    .join('; ');
}
