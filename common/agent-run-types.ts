import type { BudgetLimits, TokenUsage } from './agent-input';

/** Where a run is; the value of the `AgentState` search attribute (contract). */
export const AGENT_STATES = [
  'running',
  'sleeping',
  'awaiting_approval',
  'paused_budget',
  'stopping',
  'stopped',
  'failed',
  /** This execution handed the run over to the next one (continue-as-new); the run goes on there. */
  'continued_as_new',
] as const;
export type AgentState = (typeof AGENT_STATES)[number];

/**
 * The states of an open execution. The run upserts a closing state before it ends, but a run
 * terminated from outside keeps the live state it had, so a listing by one of these asks Temporal
 * for running executions too.
 */
export const LIVE_AGENT_STATES: readonly AgentState[] = [
  'running',
  'sleeping',
  'awaiting_approval',
  'paused_budget',
  'stopping',
];

/** Why a run ended; the `exitReason` of the result (contract). */
export const EXIT_REASONS = [
  'stopped',
  'finished',
  'max_iterations',
  'repeated_failures',
  'stagnation',
  /** The model answered no text and called no tool `guards.emptyWindow` iterations in a row. */
  'no_output',
  'permission_denied',
  'permission_timeout',
  /** Cancelled from outside (the Web UI's "Request Cancellation", `temporal workflow cancel`): ended like a stop. */
  'cancelled',
] as const;
export type ExitReason = (typeof EXIT_REASONS)[number];

/**
 * Token counts of one model call. `estimated` when some of them are counted from characters rather
 * than reported by the provider: a server that reports no usage, or a turn stopped mid-answer.
 */
export interface ModelUsage extends TokenUsage {
  estimated?: true;
}

/** Tokens and money spent so far; `estimated` once any model call's counts were estimates. */
export interface RunUsage extends ModelUsage {
  costUsd: number;
}

/** One iteration as recorded in workflow state and returned by the `iterations` query. */
export interface IterationRecord {
  iteration: number;
  /** When the iteration ended (workflow time, ISO 8601). */
  timestamp: string;
  /** When it began, so consecutive records show the orchestration overhead between them. */
  startedAt: string;
  /** The last 400 characters of the model's text, or "(no output)". */
  summary: string;
  status: 'ok' | 'error' | 'permission';
  /** Seconds, one decimal. */
  durationS: number;
  tokensIn: number;
  tokensOut: number;
  costUsd: number;
  /** The failure message (first 300 characters) when status is `error`. */
  error?: string;
}

/** Answer of the `status` query. */
export interface AgentStatus {
  name: string;
  template: string;
  state: AgentState;
  iteration: number;
  maxIterations: number | null;
  /** Permission requests waiting for a `permission` signal. */
  pendingPermissions: PendingPermission[];
  usage: RunUsage;
  /** The run's budgets, `resume` overrides applied; 0 is unlimited. */
  budgets: BudgetLimits;
  /** Today's spend of all runs as last read from the shared ledger (UTC day). */
  dailyUsage: { day: string; tokens: number; costUsd: number } | null;
  /** Why the run is paused, while it is `paused_budget`. */
  pauseReason: string | null;
  lastError: string | null;
  exitReason: ExitReason | null;
  stopReason: string | null;
  /** Signals that did not parse or named nothing to act on: ignored, logged and counted here. */
  ignoredSignals: number;
  startedAt: string;
  updatedAt: string;
}

/** A tool call waiting for approval. */
export interface PendingPermission {
  /** `pr_` and 16 hex digits, from the workflow's deterministic random. */
  requestId: string;
  tool: string;
  /** The tool call's arguments, in full. */
  input: Record<string, unknown>;
  /** What the call does and which rule or mode asked for approval. */
  rationale: string;
  iteration: number;
  requestedAt: string;
  /** When the request is denied if nobody decides it; an `extendS` signal moves it. */
  expiresAt: string;
}

/** Result of an `agentRun` workflow (contract). */
export interface AgentRunResult {
  exitReason: ExitReason;
  iterations: number;
  usage: RunUsage;
}

/** A tool call as the model asked for it. */
export interface ModelToolCall {
  /** The model's own ID of the call, echoed in the result message. */
  id: string;
  tool: string;
  arguments: Record<string, unknown>;
  /**
   * Why the call cannot run as asked: arguments that are not JSON or do not fit the tool's schema
   * ("Invalid arguments for tool write_file: path is required"). The model reads it as the call's
   * result; nothing runs and nobody is asked.
   */
  invalid?: string;
  /**
   * The arguments text as the model sent it, when it was not a JSON object (and `arguments` is
   * empty), cut to `TOOL_ARGUMENT_MAX_BYTES`: the audit shows what the model really asked for.
   */
  rawArguments?: string;
}

/** One message of the conversation that spans all iterations of a run. */
export type TranscriptMessage =
  | { role: 'user'; content: string }
  | { role: 'assistant'; content: string; toolCalls?: ModelToolCall[] }
  | { role: 'tool'; toolCallId: string; tool: string; content: string; success: boolean };
