import type { AgentRunResult, ExitReason } from '../common/agent-run-types';

/**
 * The exit codes of the `agents` CLI, defined once: scripts branch on them, and the README's table
 * of the CLI contract is this module read aloud.
 */

/** The command did what it was asked; a watched run ended as runs normally end. */
export const EXIT_SUCCESS = 0;

/**
 * The command failed and did nothing: a bad argument or environment, an unknown run or request, a
 * signal the run would ignore, no server or worker answering. One line on stderr says why.
 */
export const EXIT_FAILURE = 1;

/** `agents` was run with no command: the usage is printed. */
export const EXIT_USAGE = 2;

/**
 * The exit code of `watch` and `start --watch` for each way a run can end. The normal ends, the
 * ones a run is started to reach, are 0; every other end has a code of its own, so a script can
 * tell them apart without parsing text.
 */
export const RUN_EXIT_CODES: Readonly<Record<ExitReason, number>> = {
  max_iterations: EXIT_SUCCESS,
  finished: EXIT_SUCCESS,
  stopped: EXIT_SUCCESS,
  permission_denied: 3,
  permission_timeout: 4,
  repeated_failures: 5,
  stagnation: 6,
  no_output: 7,
  cancelled: 8,
};

/**
 * The exit code of `watch` and `start --watch` when the run ended any other way: its workflow
 * failed, was terminated (`stop --force`, `temporal workflow terminate`) or timed out, or it gave
 * an exit reason this CLI does not know (a newer worker's).
 */
export const RUN_ENDED_OTHERWISE_EXIT_CODE = 9;

/** How a followed run ended: its result, or how its workflow closed without one. */
export type RunEnding =
  | { outcome: 'completed'; result: AgentRunResult }
  | { outcome: 'failed' | 'terminated' | 'cancelled' | 'timed_out'; message: string };

/** The exit code that reports `ending`: its exit reason's code, else the code of the other ends. */
export function runExitCode(ending: RunEnding): number {
  // A cancellation the workflow did not turn into a result still ends the run as a cancellation.
  if (ending.outcome === 'cancelled') return RUN_EXIT_CODES.cancelled;
  if (ending.outcome !== 'completed') return RUN_ENDED_OTHERWISE_EXIT_CODE;
  const codes: Partial<Record<string, number>> = RUN_EXIT_CODES;
  return codes[ending.result.exitReason] ?? RUN_ENDED_OTHERWISE_EXIT_CODE;
}

/** The exit codes for `agents --help`, read from the definitions above so the two never disagree. */
export function describeExitCodes(): string {
  const normal = Object.entries(RUN_EXIT_CODES)
    .filter(([, code]) => code === EXIT_SUCCESS)
    .map(([reason]) => reason);
  const others = Object.entries(RUN_EXIT_CODES)
    .filter(([, code]) => code !== EXIT_SUCCESS)
    .sort(([, first], [, second]) => first - second)
    .map(([reason, code]) => `${code} ${reason}`);
  return [
    `Exit codes: ${EXIT_SUCCESS} done (a watched run ended ${normal.join(', ')}); ${EXIT_FAILURE} the command failed (one line on stderr); ${EXIT_USAGE} no command given.`,
    `watch and start --watch: ${others.join(', ')}, ${RUN_ENDED_OTHERWISE_EXIT_CODE} failed, terminated or timed out.`,
    'stdout holds the answer (--json: JSON only); news about the server and errors go to stderr.',
  ].join('\n');
}
