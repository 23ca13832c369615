import type { ModelSpec, TokenUsage } from '../common/agent-input';
import type { ModelToolCall, TranscriptMessage } from '../common/agent-run-types';

/** Everything a provider needs for one model turn. */
export interface ModelRequest<Spec extends ModelSpec = ModelSpec> {
  spec: Spec;
  systemPrompt: string;
  /** The whole conversation so far, the new user message last. */
  messages: TranscriptMessage[];
  /** 0-based count of model calls made by this run before this one: stable across retries. */
  callIndex: number;
  /** Temporal's attempt number of this activity, 1 on the first try. */
  attempt: number;
  /** Aborted when the workflow cancels the turn (a stop) or the activity times out. */
  signal: AbortSignal;
  /** Called on each streamed chunk, so the activity heartbeats while a long answer streams. */
  onProgress: () => void;
}

/** A provider's answer to one model turn. */
export interface ModelResponse {
  text: string;
  /** Tools the model wants called before it goes on; empty when its turn is over. */
  toolCalls: ModelToolCall[];
  usage: TokenUsage;
  costUsd: number;
}

/**
 * A model backend. The workflow never sees providers: it passes the run's `ModelSpec` to the model
 * activity, and the worker picks the provider named by `spec.provider`.
 */
export interface ModelProvider<Spec extends ModelSpec = ModelSpec> {
  readonly provider: Spec['provider'];
  generate(request: ModelRequest<Spec>): Promise<ModelResponse>;
}

/** The providers a worker offers, by name. */
export type ModelProviders = ReadonlyMap<string, ModelProvider>;
