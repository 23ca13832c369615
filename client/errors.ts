/** What went wrong, for callers that react to a kind of failure rather than its text. */
export type AgentsErrorCode =
  | 'invalid_argument'
  | 'invalid_environment'
  | 'unknown_template'
  | 'unknown_model'
  | 'temporal_missing'
  | 'server_failed'
  | 'server_unreachable'
  | 'already_running'
  | 'not_found'
  | 'not_running'
  | 'not_pending'
  | 'not_paused'
  | 'no_worker'
  | 'sandbox_unavailable'
  | 'local_model_missing'
  | 'run_failed';

/**
 * A failure of the client or CLI that a user can act on. Its message is the one line the CLI prints:
 * what was wrong and what is accepted.
 */
export class AgentsError extends Error {
  override readonly name = 'AgentsError';

  constructor(
    readonly code: AgentsErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
