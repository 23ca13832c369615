import { ApplicationFailure } from '@temporalio/common';
import { CIRCUIT_OPEN_FAILURE, MODEL_UNAVAILABLE_FAILURE } from '../common/constants';

/** When a breaker opens and for how long (SEED-BEHAVIOURS 23: 5 failures within 60 s open it for 120 s). */
export interface CircuitBreakerSettings {
  failureThreshold: number;
  windowMs: number;
  openMs: number;
}

export const DEFAULT_CIRCUIT_BREAKER: CircuitBreakerSettings = {
  failureThreshold: 5,
  windowMs: 60_000,
  openMs: 120_000,
};

/**
 * What an open breaker answers: non-retryable, so the run stops retrying, with `{ cooldownS }` in
 * its details for the runner's guard to wait out.
 */
export function circuitOpenFailure(label: string, cooldownS: number): ApplicationFailure {
  return ApplicationFailure.create({
    message: `Circuit breaker OPEN for ${label}. Cooldown: ${cooldownS}s`,
    type: CIRCUIT_OPEN_FAILURE,
    nonRetryable: true,
    details: [{ cooldownS }],
  });
}

type BreakerState =
  | { kind: 'closed'; failures: number[] }
  | { kind: 'open'; until: number }
  /** The cooldown passed and one trial call is out: it closes the breaker or opens it again. */
  | { kind: 'trial' };

/**
 * Circuit breakers of one worker, one per provider and model. Failures that say the model is
 * unavailable (`ModelUnavailable`: 429, 5xx, network, stall) count; refusals and cancellations do
 * not. An open breaker refuses calls at once with a non-retryable `ModelCircuitOpen` failure whose
 * details carry `{ cooldownS }`, so the run stops retrying and its guard waits the cooldown out
 * instead of hammering an API that is down.
 */
export class CircuitBreakers {
  private readonly states = new Map<string, BreakerState>();

  constructor(
    private readonly settings: CircuitBreakerSettings = DEFAULT_CIRCUIT_BREAKER,
    private readonly now: () => number = Date.now,
  ) {}

  /** Runs `call` through the breaker named `key`; `label` names the model in the refusal. */
  async call<T>(key: string, label: string, call: () => Promise<T>): Promise<T> {
    this.admit(key, label);
    try {
      const result = await call();
      this.states.set(key, { kind: 'closed', failures: [] });
      return result;
    } catch (error) {
      this.record(key, error);
      throw error;
    }
  }

  /** Seconds until the breaker named `key` lets a call through; 0 when it is closed. */
  cooldownS(key: string): number {
    const state = this.states.get(key);
    return state?.kind === 'open' ? Math.max(0, Math.ceil((state.until - this.now()) / 1000)) : 0;
  }

  private admit(key: string, label: string): void {
    const state = this.states.get(key);
    if (state === undefined || state.kind === 'closed') return;
    if (state.kind === 'open' && this.now() >= state.until) {
      this.states.set(key, { kind: 'trial' });
      return;
    }
    // While a trial call is out, others wait a second and look again.
    const cooldownS = state.kind === 'open' ? this.cooldownS(key) : 1;
    throw circuitOpenFailure(label, cooldownS);
  }

  private record(key: string, error: unknown): void {
    const state = this.states.get(key) ?? { kind: 'closed', failures: [] };
    if (!(error instanceof ApplicationFailure) || error.type !== MODEL_UNAVAILABLE_FAILURE) {
      // A refusal or a cancellation says nothing about the API's health; a trial call ends.
      if (state.kind === 'trial') this.states.set(key, { kind: 'closed', failures: [] });
      return;
    }
    const now = this.now();
    if (state.kind === 'trial') {
      this.states.set(key, { kind: 'open', until: now + this.settings.openMs });
      return;
    }
    if (state.kind === 'open') return;
    const failures = [...state.failures.filter((at) => now - at < this.settings.windowMs), now];
    this.states.set(
      key,
      failures.length >= this.settings.failureThreshold
        ? { kind: 'open', until: now + this.settings.openMs }
        : { kind: 'closed', failures },
    );
  }
}
