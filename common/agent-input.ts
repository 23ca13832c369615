import { z } from 'zod';
import { HOST_PATTERN_RULE, isHostPattern } from './host-patterns';
import { runMcpServersSchema } from './mcp-servers';
import {
  AGENT_NAME_PATTERN,
  DEFAULT_ANY_FAILURE_LIMIT,
  DEFAULT_BUDGETS,
  DEFAULT_CONTEXT_BUDGET_TOKENS,
  DEFAULT_EMPTY_WINDOW,
  DEFAULT_ERROR_BACKOFF_S,
  DEFAULT_INTERVAL_S,
  DEFAULT_LOCAL_CONTEXT_TOKENS,
  DEFAULT_LOCAL_MAX_OUTPUT_TOKENS,
  DEFAULT_LOCAL_MODEL,
  DEFAULT_MAX_OUTPUT_TOKENS,
  DEFAULT_MAX_TOOL_CALLS_PER_ANSWER,
  DEFAULT_PERMISSION_TIMEOUT_S,
  DEFAULT_SAME_FAILURE_LIMIT,
  DEFAULT_STAGNATION_WINDOW,
  DEFAULT_STALL_TIMEOUT_S,
  MIN_INTERVAL_S,
  TOOL_CALLS_PER_ANSWER_LIMIT,
} from './constants';

/**
 * The input of an `agentRun` workflow, validated by the client before start so that bad input never
 * reaches Temporal, and again by the workflow itself, for a run started around the client (`temporal
 * workflow start`, the Web UI): so this module must stay loadable by workflow code. Everything the run needs is in here (the template's content too), so the history
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
    /** Refuse the call as a provider whose circuit breaker is open for this many seconds. */
    circuitOpenS: z.number().positive().max(3600).optional(),
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

/** Dollars per million tokens; overrides the worker's price table for the run's model. */
export const modelPriceSchema = z
  .object({
    inputUsdPerMTok: z.number().nonnegative().max(10_000),
    outputUsdPerMTok: z.number().nonnegative().max(10_000),
  })
  .strict();
export type ModelPrice = z.infer<typeof modelPriceSchema>;

/** A model API's base URL: http(s), and never credentials, since the input is in the history. */
const modelBaseUrlSchema = z
  .url({ protocol: /^https?$/, error: 'must be an http(s) URL' })
  // zod runs this refinement even when the URL check failed, so it must not assume a URL.
  .refine((value) => {
    if (!URL.canParse(value)) return true;
    const url = new URL(value);
    return url.username === '' && url.password === '';
  }, 'must not contain credentials: the key is read from the worker environment (apiKeyEnv)');

/** Fields shared by the remote providers. Only the NAME of the key's variable is in the input. */
function remoteModelSchema<Provider extends string>(provider: Provider, baseUrl: string, apiKeyEnv: string) {
  return z
    .object({
      provider: z.literal(provider),
      model: z.string().min(1).max(200),
      baseUrl: modelBaseUrlSchema.default(baseUrl),
      /** The worker's environment variable holding the API key; unset is allowed for local servers. */
      apiKeyEnv: z
        .string()
        .regex(/^[A-Za-z_][A-Za-z0-9_]{0,127}$/, 'must be the name of an environment variable')
        .default(apiKeyEnv),
      maxOutputTokens: z.number().int().min(1).max(1_000_000).default(DEFAULT_MAX_OUTPUT_TOKENS),
      temperature: z.number().min(0).max(2).optional(),
      price: modelPriceSchema.optional(),
      /**
       * Seconds a stream may go without a chunk before the call counts as stalled: the model
       * activity's heartbeat timeout, so a stall is retried, on another worker if need be.
       */
      stallTimeoutS: z.number().min(1).max(900).default(DEFAULT_STALL_TIMEOUT_S),
    })
    .strict();
}

/** Any OpenAI-compatible Chat Completions API: OpenAI, vLLM, Ollama, LM Studio, OpenRouter. */
export const openaiModelSchema = remoteModelSchema('openai', 'https://api.openai.com/v1', 'OPENAI_API_KEY');

/** Anthropic's Messages API. */
export const anthropicModelSchema = remoteModelSchema(
  'anthropic',
  'https://api.anthropic.com',
  'ANTHROPIC_API_KEY',
);

/**
 * A GGUF model run by the worker itself. `model` is a file name under `$AGENTS_HOME/models` on the
 * worker (".gguf" optional) or an absolute path, so the history names the model and not a machine.
 */
export const localModelSchema = z
  .object({
    provider: z.literal('local'),
    model: z.string().min(1).max(500).default(DEFAULT_LOCAL_MODEL),
    maxOutputTokens: z.number().int().min(1).max(32_768).default(DEFAULT_LOCAL_MAX_OUTPUT_TOKENS),
    /** 0 answers greedily: the same prompt gives the same answer. */
    temperature: z.number().min(0).max(2).default(0),
    /** Tokens of context the worker allocates for the model. */
    contextTokens: z.number().int().min(512).max(131_072).default(DEFAULT_LOCAL_CONTEXT_TOKENS),
  })
  .strict();

/**
 * Which model answers the run. A union on `provider`, so a new provider adds a member here and an
 * implementation in the worker; the workflow passes the spec through without looking inside.
 */
export const modelSpecSchema = z.discriminatedUnion('provider', [
  scriptedModelSchema,
  openaiModelSchema,
  anthropicModelSchema,
  localModelSchema,
]);
export type ModelSpec = z.infer<typeof modelSpecSchema>;
export type ScriptedModelSpec = z.infer<typeof scriptedModelSchema>;
export type OpenAIModelSpec = z.infer<typeof openaiModelSchema>;
export type AnthropicModelSpec = z.infer<typeof anthropicModelSchema>;
export type LocalModelSpec = z.infer<typeof localModelSchema>;

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

/** Most host patterns one run's network allow list may hold. */
export const MAX_NETWORK_ALLOW_PATTERNS = 100;

/** One entry of a run's network allow list; see `common/host-patterns.ts`. */
const hostPatternSchema = z
  .string()
  .max(255)
  .refine(isHostPattern, { message: `must be ${HOST_PATTERN_RULE}` });

/**
 * How the run's tool calls are isolated: decided by whoever starts the run, never by the model.
 * `network` is `false` (no network), `true` (any public destination, through the sandbox server's
 * proxy) or `{ allow: [...] }` (only the hosts listed, through the same proxy). Loopback, private,
 * link-local and the host's own addresses are refused in every case.
 */
export const sandboxPolicySchema = z
  .object({
    network: z
      .union(
        [
          z.boolean(),
          z
            .object({
              allow: z
                .array(hostPatternSchema)
                .min(1, 'must list at least one host (use network: false for none)')
                .refine((patterns) => patterns.length <= MAX_NETWORK_ALLOW_PATTERNS, {
                  message: `must list at most ${MAX_NETWORK_ALLOW_PATTERNS} hosts`,
                }),
            })
            .strict(),
        ],
        { error: 'must be true, false or { "allow": [hosts] }' },
      )
      .default(false),
  })
  .strict();

/** A run's sandbox policy, as the workflow passes it with each tool batch. */
export type SandboxPolicy = z.infer<typeof sandboxPolicySchema>;

/** The run's sandbox: its policy, and what becomes of the workspace when the run ends. */
export const sandboxSettingsSchema = sandboxPolicySchema
  .extend({
    /** Delete the workspace when the run ends, instead of keeping it for its artifacts. */
    resetOnEnd: z.boolean().default(false),
  })
  .strict();

/** A sha256 digest as the sandbox servers name uploads: 64 lowercase hex digits. */
export const sha256DigestSchema = z
  .string()
  .regex(/^[0-9a-f]{64}$/, 'must be a sha256 digest: 64 lowercase hex digits');

/** A git commit ID: 40 hex digits (SHA-1) or 64 (SHA-256 repositories). */
export const commitIdSchema = z
  .string()
  .regex(/^(?:[0-9a-f]{40}|[0-9a-f]{64})$/, 'must be a commit ID of 40 or 64 lowercase hex digits');

/**
 * Whether a repository URL is free of credentials. A password never is, in any form; a user name is
 * refused in http(s) and git URLs, where it is how a token travels (`https://<token>@host/…`), but
 * allowed in ssh ones, where it names the account (`ssh://git@host/…`, `git@host:owner/name`).
 */
export function repositoryUrlHasCredentials(value: string): boolean {
  if (URL.canParse(value)) {
    const url = new URL(value);
    if (url.password !== '') return true;
    return url.username !== '' && url.protocol !== 'ssh:' && !url.protocol.startsWith('git+ssh');
  }
  // scp-like `user:password@host:path`.
  return /^[^/@:]+:[^/@]*@[^/]+:/.test(value);
}

/** Whether `value` holds an ASCII control character (a newline, a NUL, an escape). */
function hasControlCharacter(value: string): boolean {
  for (let index = 0; index < value.length; index += 1) {
    const code = value.charCodeAt(index);
    if (code < 0x20 || code === 0x7f) return true;
  }
  return false;
}

/** Where a repository was cloned from: a path or URL that git accepts, never with credentials. */
export const repositoryUrlSchema = z
  .string()
  .min(1, 'must name a repository')
  .max(2000, 'must be at most 2000 characters')
  .refine((value) => !hasControlCharacter(value), 'must not contain control characters')
  .refine((value) => !value.startsWith('-'), 'must not start with "-"')
  .refine(
    (value) => !repositoryUrlHasCredentials(value),
    'must not contain credentials, since the run input is kept in the history: let git find them (a credential helper, an SSH key)',
  );

/** A branch, tag or commit a repository is checked out at, as git names it. */
export const gitRefSchema = z
  .string()
  .min(1)
  .max(256)
  .refine(
    (value) => !value.startsWith('-') && !/\s/.test(value) && !hasControlCharacter(value),
    'must be a branch, tag or commit name (no spaces, not starting with "-")',
  );

/** Counts of what an upload unpacks to, as the CLI measured it. */
const workspaceCounts = {
  files: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
};

/**
 * What the run's workspace starts from: a folder of the starting machine or a repository cloned
 * there, packed into a tar.gz and uploaded to a sandbox server under its sha256 `digest`. The run's
 * first execution unpacks it into the workspace before its first iteration; the history records
 * exactly which upload (and commit) the agent started from.
 */
export const workspaceSourceSchema = z.discriminatedUnion(
  'kind',
  [
    z
      .object({
        kind: z.literal('folder'),
        /** The folder on the machine that started the run, for people reading the history. */
        path: z.string().min(1).max(4096),
        digest: sha256DigestSchema,
        ...workspaceCounts,
      })
      .strict(),
    z
      .object({
        kind: z.literal('repository'),
        url: repositoryUrlSchema,
        ref: gitRefSchema.optional(),
        commit: commitIdSchema,
        digest: sha256DigestSchema,
        ...workspaceCounts,
      })
      .strict(),
  ],
  { error: 'must be { "kind": "folder", … } or { "kind": "repository", … }' },
);
export type WorkspaceSource = z.infer<typeof workspaceSourceSchema>;

/** What `guards.maxToolCallsPerAnswer` accepts, as its error says. */
const TOOL_CALLS_PER_ANSWER_RULE = `must be a whole number from 1 to ${TOOL_CALLS_PER_ANSWER_LIMIT}`;

/** Limits that protect a run from looping on failures (SEED-BEHAVIOURS 20-23). */
export const guardLimitsSchema = z
  .object({
    /** Pause after an iteration that failed, instead of the interval (seconds). */
    errorBackoffS: z.number().min(0).max(3600).default(DEFAULT_ERROR_BACKOFF_S),
    /** Stop after this many consecutive failures with the same signature. */
    sameFailureLimit: z.number().int().min(1).max(1000).default(DEFAULT_SAME_FAILURE_LIMIT),
    /** Stop after this many consecutive failures of any kind. */
    anyFailureLimit: z.number().int().min(1).max(1000).default(DEFAULT_ANY_FAILURE_LIMIT),
    /** Stop when this many successful iterations in a row end with the same summary; below 2 disables. */
    stagnationWindow: z.number().int().min(0).max(1000).default(DEFAULT_STAGNATION_WINDOW),
    /** Stop when this many iterations in a row bring no text and no tool call; 0 disables. */
    emptyWindow: z.number().int().min(0).max(1000).default(DEFAULT_EMPTY_WINDOW),
    /**
     * Tool calls taken from one model answer; the model is told that the rest were not taken. Each
     * call may open a permission request and send notices, so an answer of thousands cannot jam the run.
     */
    maxToolCallsPerAnswer: z
      .number(TOOL_CALLS_PER_ANSWER_RULE)
      .int(TOOL_CALLS_PER_ANSWER_RULE)
      .min(1, TOOL_CALLS_PER_ANSWER_RULE)
      .max(TOOL_CALLS_PER_ANSWER_LIMIT, TOOL_CALLS_PER_ANSWER_RULE)
      .default(DEFAULT_MAX_TOOL_CALLS_PER_ANSWER),
  })
  .strict();
export type GuardLimits = z.infer<typeof guardLimitsSchema>;

/**
 * A permission rule: `tool(pattern)` or `tool`, where `*` matches any run of characters and `?`
 * one. The pattern is matched against the call's main argument (a command or a path), or its JSON.
 */
export const permissionRuleSchema = z
  .object({
    action: z.enum(['allow', 'ask', 'deny']),
    match: z
      .string()
      .regex(
        /^[A-Za-z0-9_*?-]+(\(.*\))?$/s,
        'must be "tool" or "tool(pattern)", for example "bash(git status*)"',
      ),
  })
  .strict();
export type PermissionRule = z.infer<typeof permissionRuleSchema>;

/** Which tool calls run at once, which wait for a person, which are refused. First matching rule wins. */
export const permissionPolicySchema = z
  .object({
    /** `auto-approve` grants what no rule stops (and notifies); `ask` waits for every call but read-only ones. */
    mode: z.enum(['auto-approve', 'ask']).default('ask'),
    rules: z.array(permissionRuleSchema).max(200).default([]),
    /** How long a request waits for a decision before it is denied (seconds). */
    timeoutS: z
      .number()
      .min(1)
      .max(7 * 86_400)
      .default(DEFAULT_PERMISSION_TIMEOUT_S),
    /** After a denial: end the run (`stop`), or give the model the denial and go on (`continue`). */
    onDeny: z.enum(['stop', 'continue']).default('stop'),
  })
  .strict();
export type PermissionPolicy = z.infer<typeof permissionPolicySchema>;

/** Spending limits; 0 means unlimited (SEED-BEHAVIOURS 15). Daily ones are per UTC day across all runs. */
export const budgetLimitsSchema = z
  .object({
    sessionTokens: z.number().int().nonnegative().default(DEFAULT_BUDGETS.sessionTokens),
    sessionCostUsd: z.number().nonnegative().default(DEFAULT_BUDGETS.sessionCostUsd),
    dailyTokens: z.number().int().nonnegative().default(DEFAULT_BUDGETS.dailyTokens),
    dailyCostUsd: z.number().nonnegative().default(DEFAULT_BUDGETS.dailyCostUsd),
  })
  .strict();
export type BudgetLimits = z.infer<typeof budgetLimitsSchema>;

/** Where the run's notices go, besides the history. */
export const notificationSinksSchema = z
  .object({
    /** The worker's log. */
    console: z.boolean().default(true),
    /** One line per iteration in `$AGENTS_HOME/logs/<name>/log.jsonl` on the worker's machine. */
    logFile: z.boolean().default(true),
    /** POSTs `{"text": …}` as chat webhooks accept. */
    webhookUrl: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
  })
  .strict();
export type NotificationSinks = z.infer<typeof notificationSinksSchema>;

/** The whole input of a run: what `agents start` sends, and what the workflow checks at its start. */
export const agentRunInputSchema = z
  .object({
    name: agentNameSchema,
    template: templateRefSchema,
    args: z.string().max(20_000).default(''),
    intervalS: intervalSchema.default(DEFAULT_INTERVAL_S),
    maxIterations: z.number().int().positive().optional(),
    model: modelSpecSchema,
    guards: guardLimitsSchema.prefault({}),
    sandbox: sandboxSettingsSchema.prefault({}),
    permissions: permissionPolicySchema.prefault({}),
    budgets: budgetLimitsSchema.prefault({}),
    notifications: notificationSinksSchema.prefault({}),
    /** The folder or repository the workspace starts from; without it, an empty workspace. */
    workspace: workspaceSourceSchema.optional(),
    /** Tokens of conversation the model is given; older turns are compacted into a summary beyond it. */
    contextBudgetTokens: z.number().int().min(1000).max(10_000_000).default(DEFAULT_CONTEXT_BUDGET_TOKENS),
    /**
     * MCP servers whose tools the run offers its model as `mcp__<server>__<tool>`, beside those of
     * the worker's own servers; see `common/mcp-servers.ts`.
     */
    mcpServers: runMcpServersSchema.optional(),
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
