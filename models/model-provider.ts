import type { ModelSpec } from '../common/agent-input';
import type { ModelToolCall, ModelUsage, TranscriptMessage } from '../common/agent-run-types';

/** A tool as a model is told about it. */
export interface ToolDefinition {
  name: string;
  /** What the tool is for, in a sentence or two. */
  description: string;
  /** JSON Schema of the tool's arguments (an object). */
  parameters: Record<string, unknown>;
}

/** Everything a provider needs for one model turn. */
export interface ModelRequest<Spec extends ModelSpec = ModelSpec> {
  spec: Spec;
  systemPrompt: string;
  /** The whole conversation so far, the new user message last. */
  messages: TranscriptMessage[];
  /** The tools the model may call in this turn. */
  tools: ToolDefinition[];
  /** 0-based count of model calls made by this run before this one: stable across retries. */
  callIndex: number;
  /** Temporal's attempt number of this activity, 1 on the first try. */
  attempt: number;
  /** Aborted when the workflow cancels the turn (a stop) or the activity times out. */
  signal: AbortSignal;
  /**
   * Called on each streamed chunk: the activity's heartbeat. A provider calls it only while work
   * really progresses, so a stalled stream stops the heartbeats and Temporal retries the turn
   * after the heartbeat timeout, on another worker if this one is gone.
   */
  onProgress: () => void;
}

/** A provider's answer to one model turn. */
export interface ModelResponse {
  text: string;
  /**
   * Tools the model wants called before it goes on; empty when its turn is over. A call whose
   * arguments are not a JSON object carries `invalid` (see `parseToolCallArguments`).
   */
  toolCalls: ModelToolCall[];
  usage: ModelUsage;
  costUsd: number;
}

/**
 * What a provider throws when its call is cancelled mid-answer (a stop): the tokens used so far,
 * as the provider reported them or estimated from the prompt and the text streamed, since a paid
 * API bills a stopped answer too. The model activity hands them to the workflow with its cancellation.
 */
export class ModelTurnStopped extends Error {
  override readonly name = 'ModelTurnStopped';
  constructor(
    readonly usage: ModelUsage,
    readonly costUsd: number,
    options?: { cause?: unknown },
  ) {
    super('the model call was cancelled mid-answer', options);
  }
}

/**
 * A model backend. The workflow never sees providers: it passes the run's `ModelSpec` to the model
 * activity, and the worker picks the provider named by `spec.provider`.
 */
export interface ModelProvider<Spec extends ModelSpec = ModelSpec> {
  readonly provider: Spec['provider'];
  generate(request: ModelRequest<Spec>): Promise<ModelResponse>;
  /** Frees what the provider holds (loaded models, connections) when its worker stops. */
  close?(): Promise<void>;
}

/** The providers a worker offers, by name. */
export type ModelProviders = ReadonlyMap<string, ModelProvider>;
