import type { GuardLimits } from '../common/agent-input';
import { MAX_COOLDOWN_WAIT_S } from '../common/constants';

/**
 * Guards that end a run which no longer makes progress: repeated failures, a model that keeps saying
 * the same thing or nothing at all, and a circuit breaker that asks the run to wait (SEED-BEHAVIOURS
 * 20-23).
 * Pure functions over plain JSON state, so the state survives continue-as-new unchanged.
 */

/** What the guards remember between iterations. */
export interface GuardState {
  /** Consecutive failures with the signature in `lastSignature`. */
  sameFailures: number;
  /** Consecutive failures of any signature. */
  anyFailures: number;
  lastSignature: string | null;
  /** Normalised summaries of the latest successful iterations, oldest first. */
  recentSummaries: string[];
  /**
   * Consecutive iterations with no text and no tool call. Absent in state carried from an
   * execution that predates the empty-output guard: none counted yet.
   */
  emptyIterations?: number;
}

/** The state of a run that has not iterated yet. */
export function initialGuardState(): GuardState {
  return { sameFailures: 0, anyFailures: 0, lastSignature: null, recentSummaries: [], emptyIterations: 0 };
}

/** A failure as an activity reported it: the ApplicationFailure's message and type, and a breaker's cooldown. */
export interface FailureInfo {
  message: string;
  type?: string;
  /** Seconds until a circuit breaker that refused the call closes again. */
  cooldownS?: number;
}

/** The part of an iteration the guards look at. */
export interface GuardedIteration {
  status: 'ok' | 'error' | 'permission';
  /** The iteration's whole text, where the model layer may have left a failure marker. */
  text: string;
  /** The recorded summary: the text's last 400 characters, or "(no output)". */
  summary: string;
  failure?: FailureInfo;
  /** Tool calls the model made in the iteration, finished or not; none when absent. */
  toolCalls?: number;
}

/** Why the guards end a run. */
export interface GuardStop {
  exitReason: 'repeated_failures' | 'stagnation' | 'no_output';
  message: string;
}

/** Longest failure signature compared between iterations. */
const SIGNATURE_MAX_CHARS = 80;

/** Longest piece of a summary quoted in a stagnation message. */
const QUOTED_SUMMARY_MAX_CHARS = 200;

/** The marker a model layer writes when its retries ran out or its breaker is open. */
const FAILURE_MARKER = /\[(?:Failed|Circuit breaker)\b[^\]]*\]/i;

/** An open breaker's cooldown as the model layer writes it in the text. */
const CIRCUIT_COOLDOWN = /Circuit breaker OPEN.*?Cooldown:\s*(\d+(?:\.\d+)?)\s*s/i;

/**
 * The signature of a failed iteration, or null when it did not fail. An iteration fails when its
 * status is `error`, an activity reported a failure, or its text has a `[Failed …]` /
 * `[Circuit breaker …]` marker. The signature is that marker when there is one, else the failure's
 * message (the reference's order: the marker names the upstream problem, the message only how it
 * surfaced), cut to 80 characters so tiny differences further on do not make failures look new.
 */
export function failureSignature(iteration: GuardedIteration): string | null {
  const marker = FAILURE_MARKER.exec(iteration.text)?.[0];
  if (marker === undefined && iteration.status !== 'error' && iteration.failure === undefined) return null;
  return (marker ?? iteration.failure?.message ?? 'error').slice(0, SIGNATURE_MAX_CHARS);
}

/**
 * Whether the iteration brought nothing: it did not fail, the model wrote no text (whitespace aside)
 * and called no tool. A model that works through tools without a word is not empty.
 */
export function isEmptyIteration(iteration: GuardedIteration): boolean {
  return (
    failureSignature(iteration) === null && iteration.text.trim() === '' && (iteration.toolCalls ?? 0) === 0
  );
}

/** A summary in comparable form: lowercase, whitespace collapsed, punctuation kept ("Done." ≠ "Done!"). */
export function normalizeSummary(text: string): string {
  return text.toLowerCase().replace(/\s+/g, ' ').trim();
}

/**
 * Updates the guards with one finished iteration and says whether the run must stop.
 * A failure counts towards the same-signature and the any-failure limits and leaves the stagnation
 * window as it is; a success resets both counters and, when the window is 2 or more, adds its
 * summary: stagnation is N identical summaries in a row, and an empty summary clears the window.
 * An empty iteration (see {@link isEmptyIteration}) counts towards `emptyWindow`, anything else
 * ends the row: `emptyWindow` empty iterations in a row end the run with `no_output`, its own exit
 * reason, because a silent model is a different problem from one that repeats itself.
 */
export function assessIteration(
  state: GuardState,
  iteration: GuardedIteration,
  limits: GuardLimits,
): { state: GuardState; stop?: GuardStop } {
  const signature = failureSignature(iteration);
  if (signature !== null) {
    const sameFailures = signature === state.lastSignature ? state.sameFailures + 1 : 1;
    const anyFailures = state.anyFailures + 1;
    const next: GuardState = {
      ...state,
      sameFailures,
      anyFailures,
      lastSignature: signature,
      emptyIterations: 0,
    };
    let reason: string | undefined;
    if (sameFailures >= limits.sameFailureLimit) reason = `${sameFailures} consecutive identical failures`;
    else if (anyFailures >= limits.anyFailureLimit) {
      reason = `${anyFailures} consecutive failures (mixed signatures)`;
    }
    if (reason === undefined) return { state: next };
    return {
      state: next,
      stop: { exitReason: 'repeated_failures', message: `${reason}; last signature: ${signature}` },
    };
  }

  const next = initialGuardState();
  if (isEmptyIteration(iteration)) {
    const emptyIterations = (state.emptyIterations ?? 0) + 1;
    next.emptyIterations = emptyIterations;
    // An empty summary clears the stagnation window, as below.
    if (limits.emptyWindow < 1 || emptyIterations < limits.emptyWindow) return { state: next };
    return {
      state: next,
      stop: {
        exitReason: 'no_output',
        message: `no text and no tool call ${emptyIterations} iterations in a row`,
      },
    };
  }
  const window = limits.stagnationWindow;
  if (window < 2) return { state: next };
  const summary = normalizeSummary(iteration.summary);
  if (summary === '' || summary === '(no output)') return { state: next };
  next.recentSummaries = [...state.recentSummaries, summary].slice(-window);
  const stagnant =
    next.recentSummaries.length >= window && next.recentSummaries.every((entry) => entry === summary);
  if (!stagnant) return { state: next };
  const quoted = iteration.summary.trim().slice(0, QUOTED_SUMMARY_MAX_CHARS);
  return {
    state: next,
    stop: {
      exitReason: 'stagnation',
      message: `the same summary ${window} iterations in a row: "${quoted}"`,
    },
  };
}

/**
 * Seconds an open circuit breaker asks the run to wait: the activity's structured `cooldownS` when it
 * gave one, else the "Circuit breaker OPEN … Cooldown: 12.5s" marker in the text or failure message.
 */
export function circuitCooldownS(iteration: GuardedIteration): number | undefined {
  const structured = iteration.failure?.cooldownS;
  if (structured !== undefined && Number.isFinite(structured) && structured >= 0) return structured;
  for (const text of [iteration.text, iteration.failure?.message ?? '']) {
    const match = CIRCUIT_COOLDOWN.exec(text);
    if (match?.[1] !== undefined) return Number.parseFloat(match[1]);
  }
  return undefined;
}

/**
 * The pause before the next iteration: the error backoff after an `error`, else the interval; with an
 * open breaker of cooldown C, at least C + 1 seconds but never more than {@link MAX_COOLDOWN_WAIT_S}
 * for the cooldown part, so retries stop hammering an upstream that said "wait".
 */
export function nextWaitS(
  iteration: GuardedIteration,
  options: { intervalS: number; errorBackoffS: number },
): number {
  const base = iteration.status === 'error' ? options.errorBackoffS : options.intervalS;
  const cooldown = circuitCooldownS(iteration);
  return cooldown === undefined ? base : Math.max(base, Math.min(cooldown + 1, MAX_COOLDOWN_WAIT_S));
}
