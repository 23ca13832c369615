import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { ModelSpec } from '../common/agent-input';
import type { TranscriptMessage } from '../common/agent-run-types';
import { assistantMessage } from '../common/transcript';
import type { ModelProviders, ModelResponse } from './model-provider';
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

const HEARTBEAT_EVERY_MS = 1000;

/**
 * Runs one model turn. Heartbeats every second whatever the provider does, so a killed worker is
 * noticed within the heartbeat timeout and the turn retried elsewhere, and a stop reaches the
 * provider through the cancellation signal.
 */
export async function runModelTurn(
  input: ModelTurnInput,
  dependencies: { models: ModelProviders; transcripts: TranscriptStore },
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
  const heartbeat = setInterval(() => context.heartbeat(), HEARTBEAT_EVERY_MS);
  try {
    const response = await provider.generate({
      spec: input.model,
      systemPrompt: transcript.systemPrompt,
      messages: transcript.messages,
      callIndex: input.callIndex,
      attempt: context.info.attempt,
      signal: context.cancellationSignal,
      onProgress: () => context.heartbeat(),
    });
    await dependencies.transcripts.save(input.transcriptKey, {
      revision: input.revision,
      systemPrompt: transcript.systemPrompt,
      messages: [...transcript.messages, assistantMessage(response)],
    });
    return response;
  } finally {
    clearInterval(heartbeat);
  }
}
