import { setTimeout as sleep } from 'node:timers/promises';
import { ApplicationFailure } from '@temporalio/common';
import type { ScriptedModelSpec, ScriptedTurn } from '../common/agent-input';
import { circuitOpenFailure } from './circuit-breaker';
import type { ModelProvider, ModelRequest, ModelResponse } from './model-provider';

/** Failure type of a turn scripted to throw. */
export const SCRIPTED_MODEL_ERROR = 'ScriptedModelError';

/** Picks the turn for a call: deterministic in the call index, so a retried call replays the same turn. */
export function pickScriptedTurn(spec: ScriptedModelSpec, callIndex: number): ScriptedTurn {
  const { turns } = spec;
  const index =
    spec.whenExhausted === 'cycle' ? callIndex % turns.length : Math.min(callIndex, turns.length - 1);
  const turn = turns[index];
  if (turn === undefined) throw new Error(`scripted model has no turn at index ${index}`);
  return turn;
}

/**
 * A model that plays a JSON script of turns: text, usage, an optional delay and an optional error.
 * It stands in for a real model at the one boundary where a fake is allowed, in tests, benchmarks
 * and the demo; everything around it (activity, retries, heartbeats, cancellation) is real.
 */
export class ScriptedModel implements ModelProvider<ScriptedModelSpec> {
  readonly provider = 'scripted' as const;

  async generate(request: ModelRequest<ScriptedModelSpec>): Promise<ModelResponse> {
    const turn = pickScriptedTurn(request.spec, request.callIndex);
    if (turn.delayMs > 0) await this.wait(turn.delayMs, request);
    if (turn.circuitOpenS !== undefined) {
      // What a real provider's breaker reports: structured, so the runner waits out the cooldown.
      throw circuitOpenFailure('scripted model', turn.circuitOpenS);
    }
    if (turn.error !== undefined) {
      if (turn.failAttempts === undefined) {
        throw ApplicationFailure.nonRetryable(turn.error, SCRIPTED_MODEL_ERROR);
      }
      if (request.attempt <= turn.failAttempts) {
        throw ApplicationFailure.retryable(turn.error, SCRIPTED_MODEL_ERROR);
      }
    }
    request.onProgress();
    const toolCalls = turn.toolCalls.map((call, index) => ({
      id: `call_${request.callIndex}_${index}`,
      tool: call.tool,
      arguments: call.arguments,
    }));
    return { text: turn.text, toolCalls, usage: turn.usage, costUsd: turn.costUsd };
  }

  /** Sleeps in slices so progress keeps flowing, and stops at once when the call is cancelled. */
  private async wait(delayMs: number, request: ModelRequest<ScriptedModelSpec>): Promise<void> {
    const sliceMs = 500;
    for (let waited = 0; waited < delayMs; waited += sliceMs) {
      await sleep(Math.min(sliceMs, delayMs - waited), undefined, { signal: request.signal });
      request.onProgress();
    }
  }
}
