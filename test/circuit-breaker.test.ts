import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { CIRCUIT_OPEN_FAILURE } from '../common/constants';
import { CircuitBreakers } from '../models/circuit-breaker';
import { modelRejected, modelUnavailable } from '../models/model-failures';

/** A clock the test moves by hand. */
function clock() {
  let now = 1_000_000;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

const settings = { failureThreshold: 5, windowMs: 60_000, openMs: 120_000 };
const unavailable = () => Promise.reject(modelUnavailable('openai model m: HTTP 503: overloaded', 1000));
const answer = () => Promise.resolve('answer');

async function fail(breakers: CircuitBreakers, times: number, key = 'openai m'): Promise<void> {
  for (let index = 0; index < times; index += 1) {
    await assert.rejects(breakers.call(key, 'openai model m', unavailable), { type: 'ModelUnavailable' });
  }
}

async function assertRefused(breakers: CircuitBreakers, cooldownS: number, key = 'openai m'): Promise<void> {
  await assert.rejects(breakers.call(key, 'openai model m', answer), (error) => {
    assert.ok(error instanceof ApplicationFailure);
    assert.equal(error.type, CIRCUIT_OPEN_FAILURE);
    assert.equal(error.nonRetryable, true);
    assert.deepEqual(error.details, [{ cooldownS }]);
    assert.equal(error.message, `Circuit breaker OPEN for openai model m. Cooldown: ${cooldownS}s`);
    return true;
  });
}

describe('circuit breakers', () => {
  it('open after five unavailable failures within 60 s and refuse calls with the cooldown left', async () => {
    const time = clock();
    const breakers = new CircuitBreakers(settings, time.now);
    await fail(breakers, 4);
    assert.equal(await breakers.call('openai m', 'openai model m', answer), 'answer');
    // A success closes the breaker: the count starts over.
    await fail(breakers, 4);
    await fail(breakers, 1);
    await assertRefused(breakers, 120);
    time.advance(30_500);
    await assertRefused(breakers, 90);
  });

  it('forget failures older than the window', async () => {
    const time = clock();
    const breakers = new CircuitBreakers(settings, time.now);
    await fail(breakers, 4);
    time.advance(61_000);
    await fail(breakers, 4);
    assert.equal(await breakers.call('openai m', 'openai model m', answer), 'answer');
  });

  it('count neither refusals nor cancellations', async () => {
    const breakers = new CircuitBreakers(settings, clock().now);
    for (let index = 0; index < 6; index += 1) {
      await assert.rejects(breakers.call('openai m', 'm', () => Promise.reject(modelRejected('HTTP 401'))));
      await assert.rejects(
        breakers.call('openai m', 'm', () => Promise.reject(new CancelledFailure('stop'))),
      );
    }
    assert.equal(await breakers.call('openai m', 'm', answer), 'answer');
  });

  it('let one trial call through after the cooldown: a success closes, a failure opens again', async () => {
    const time = clock();
    const breakers = new CircuitBreakers(settings, time.now);
    await fail(breakers, 5);
    time.advance(120_000);
    let release: (value: string) => void = () => undefined;
    const trial = breakers.call(
      'openai m',
      'openai model m',
      () => new Promise<string>((resolve) => (release = resolve)),
    );
    // While the trial is out, others are told to look again in a second.
    await assertRefused(breakers, 1);
    release('recovered');
    assert.equal(await trial, 'recovered');
    assert.equal(await breakers.call('openai m', 'openai model m', answer), 'answer');

    await fail(breakers, 5);
    time.advance(120_000);
    await fail(breakers, 1);
    await assertRefused(breakers, 120);
  });

  it('keep one breaker per provider and model', async () => {
    const breakers = new CircuitBreakers(settings, clock().now);
    await fail(breakers, 5, 'openai m');
    await assertRefused(breakers, 120, 'openai m');
    assert.equal(await breakers.call('anthropic m', 'anthropic model m', answer), 'answer');
  });
});
