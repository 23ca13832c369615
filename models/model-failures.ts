import { ApplicationFailure } from '@temporalio/common';
import { MODEL_REQUEST_REJECTED_FAILURE, MODEL_UNAVAILABLE_FAILURE } from '../common/constants';

/**
 * The failures a model call ends with, as the workflow and Temporal's retry policy read them:
 * `ModelUnavailable` is retried (with the provider's `Retry-After` when it gave one, else backoff
 * with jitter), `ModelRequestRejected` is not. Messages name the provider and model and quote the
 * API's own error text, with the key cut out wherever it appears.
 */

/** Backoff of the retries of an unavailable model, when the API does not say how long to wait. */
const BACKOFF_BASE_MS = 1000;
const BACKOFF_MAX_MS = 30_000;
/** A `Retry-After` longer than this is waited only this long; the circuit breaker covers longer outages. */
export const MAX_RETRY_AFTER_MS = 120_000;

/** Who was called, for messages: "openai model gpt-4o". */
export function describeModel(spec: { provider: string; model: string }): string {
  return `${spec.provider} model ${spec.model}`;
}

/**
 * The delay before retry `attempt + 1`: exponential from 1 s up to 30 s, with "equal jitter" (half
 * fixed, half random), so workers that failed together do not retry together.
 */
export function backoffMs(attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/**
 * Milliseconds a `Retry-After` (seconds or an HTTP date) or `retry-after-ms` header asks for,
 * capped at {@link MAX_RETRY_AFTER_MS}; undefined when there is none or it does not parse.
 */
export function retryAfterMs(
  headers: Record<string, string | string[] | undefined>,
  now = Date.now(),
): number | undefined {
  const header = (name: string) => {
    const value = headers[name];
    return Array.isArray(value) ? value[0] : value;
  };
  const milliseconds = Number(header('retry-after-ms'));
  if (header('retry-after-ms') !== undefined && Number.isFinite(milliseconds) && milliseconds >= 0) {
    return Math.min(MAX_RETRY_AFTER_MS, Math.round(milliseconds));
  }
  const value = header('retry-after')?.trim();
  if (value === undefined || value === '') return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds))
    return seconds < 0 ? undefined : Math.min(MAX_RETRY_AFTER_MS, Math.round(seconds * 1000));
  const date = Date.parse(value);
  if (Number.isNaN(date)) return undefined;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, date - now));
}

/** Replaces every occurrence of the secrets in `text`, so an API that echoes a key cannot leak it. */
export function redact(text: string, secrets: ReadonlyArray<string | undefined>): string {
  let result = text;
  for (const secret of secrets) {
    if (secret !== undefined && secret.length >= 4) result = result.split(secret).join('[redacted]');
  }
  return result;
}

/** A failure worth retrying: 429, 5xx, a network error, a cut or stalled stream. */
export function modelUnavailable(
  message: string,
  nextRetryDelayMs: number,
  cause?: Error,
): ApplicationFailure {
  return ApplicationFailure.create({
    message,
    type: MODEL_UNAVAILABLE_FAILURE,
    nonRetryable: false,
    nextRetryDelay: nextRetryDelayMs,
    ...(cause === undefined ? {} : { cause }),
  });
}

/** A failure no retry can fix: the API refused the request (400, 401, 403, 404) or no key is set. */
export function modelRejected(message: string): ApplicationFailure {
  return ApplicationFailure.create({ message, type: MODEL_REQUEST_REJECTED_FAILURE, nonRetryable: true });
}
