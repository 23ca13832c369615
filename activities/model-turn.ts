import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { ModelSpec } from '../common/agent-input';
import type { TranscriptMessage } from '../common/agent-run-types';
import { assistantMessage } from '../common/transcript';
import type { CircuitBreakers } from '../models/circuit-breaker';
import type { ModelProviders, ModelResponse } from '../models/model-provider';
import type { ToolCatalog } from './tool-catalog';
import type { Transcript, TranscriptStore } from './transcript-store';

/** Input of one model turn: a reference to the conversation plus only what is new. */
export interface ModelTurnInput {
  model: ModelSpec;
  /** Identifies the run's conversation across workers and continue-as-new. */
  transcriptKey: string;
  /** Compactions of the conversation so far: a stored transcript of another revision is stale. */
  revision: number;
  /** Messages the conversation had before this turn. */
  baseLength: number;
  /** The messages this turn adds before the model answers (the iteration's prompt). */
  append: TranscriptMessage[];
  /** The whole conversation so far: sent on the first turn and when a worker lacks it. */
  full?: Transcript;
  callIndex: number;
}

/** The model's answer to one turn. */
export type ModelTurnResult = ModelResponse;

/** Failure type when the run names a provider this worker does not offer. */
export const UNKNOWN_MODEL_PROVIDER = 'UnknownModelProvider';

/** Heartbeats of a streaming answer are at least this far apart. */
const HEARTBEAT_EVERY_MS = 200;

/** What a model turn needs from its worker. */
export interface ModelTurnDependencies {
  models: ModelProviders;
  transcripts: TranscriptStore;
  tools: ToolCatalog;
  breakers: CircuitBreakers;
}

/**
 * Runs one model turn. The provider heartbeats as its answer streams, so a killed worker or a
 * stalled stream is noticed within the heartbeat timeout and the turn retried, and a stop reaches
 * the provider through the cancellation signal. The call goes through the worker's circuit breaker
 * for its provider and model, and the model's tool calls come back checked against the tools'
 * schemas.
 */
export async function runModelTurn(
  input: ModelTurnInput,
  dependencies: ModelTurnDependencies,
): Promise<ModelTurnResult> {
  const context = Context.current();
  const provider = dependencies.models.get(input.model.provider);
  if (provider === undefined) {
    throw ApplicationFailure.nonRetryable(
      `this worker has no model provider '${input.model.provider}'; it offers: ${[...dependencies.models.keys()].join(', ')}`,
      UNKNOWN_MODEL_PROVIDER,
    );
  }
  const transcript = await dependencies.transcripts.extend(
    input.transcriptKey,
    input.revision,
    input.baseLength,
    input.append,
    input.full,
  );
  const tools = await dependencies.tools.definitions(context.cancellationSignal);
  const { key, label } = breakerOf(input.model);
  let lastHeartbeat = 0;
  const response = await dependencies.breakers.call(key, label, () =>
    provider.generate({
      spec: input.model,
      systemPrompt: transcript.systemPrompt,
      messages: transcript.messages,
      tools,
      callIndex: input.callIndex,
      attempt: context.info.attempt,
      signal: context.cancellationSignal,
      onProgress: () => {
        // A stream sends an event per token, and a heartbeat costs the worker about 0.2 ms: one
        // every 200 ms at most still shows a stall well within the shortest (1 s) timeout.
        const now = Date.now();
        if (now - lastHeartbeat < HEARTBEAT_EVERY_MS) return;
        lastHeartbeat = now;
        context.heartbeat();
      },
    }),
  );
  const answer = { ...response, toolCalls: response.toolCalls.map((call) => dependencies.tools.check(call)) };
  await dependencies.transcripts.save(input.transcriptKey, {
    revision: input.revision,
    systemPrompt: transcript.systemPrompt,
    messages: [...transcript.messages, assistantMessage(answer)],
  });
  return answer;
}

/** The breaker a call goes through: one per provider and model (and endpoint, for remote APIs). */
function breakerOf(spec: ModelSpec): { key: string; label: string } {
  switch (spec.provider) {
    case 'scripted':
      return { key: 'scripted', label: 'scripted model' };
    case 'local':
      return { key: `local ${spec.model}`, label: `local model ${spec.model}` };
    default:
      return {
        key: `${spec.provider} ${spec.model} ${spec.baseUrl}`,
        label: `${spec.provider} model ${spec.model}`,
      };
  }
}
