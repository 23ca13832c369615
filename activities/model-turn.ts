import { Context, log } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { ModelSpec } from '../common/agent-input';
import type { ModelUsage, TranscriptMessage } from '../common/agent-run-types';
import type { DailyUsage, ReservationDecision } from '../common/daily-ledger';
import type { McpServer } from '../common/mcp-servers';
import type { AgentNotification } from '../common/notification';
import {
  DEFAULT_MAX_TOOL_CALLS_PER_ANSWER,
  MODEL_RESULT_MAX_BYTES,
  PAYLOAD_TOO_LARGE_FAILURE,
  TEMPORAL_PAYLOAD_LIMIT_BYTES,
} from '../common/constants';
import { formatExactBytes, formatCount, jsonBytes } from '../common/payload-bounds';
import { assistantMessage } from '../common/transcript';
import { boundAnswer, type BoundedAnswer } from '../models/answer-bounds';
import type { CircuitBreakers } from '../models/circuit-breaker';
import { traceModelCall } from './call-spans';
import { ModelTurnStopped, type ModelProviders, type ModelResponse } from '../models/model-provider';
import type { DailyLedgerActivities, RoomRequest } from './daily-ledger';
import { measureModelCall, type AgentMetrics } from './metrics';
import type { Notifier } from './notifier';
import type { McpTools } from './mcp-tools';
import type { ToolCatalog } from './tool-catalog';
import type { Transcript, TranscriptStore } from './transcript-store';
import type { SandboxPolicy } from '../sandbox/tool-call';

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
  /**
   * Tool calls taken from the answer at most: the run's `guards.maxToolCallsPerAnswer`. Absent in
   * turns scheduled before the limit existed, which take the default.
   */
  maxToolCalls?: number;
  /**
   * Charges the turn's spend to the daily ledger of `day` under `chargeId` once the model answered,
   * so the run needs no round trip of its own to the ledger per call. Absent in turns scheduled
   * before turns charged themselves.
   */
  charge?: {
    day: string;
    chargeId: string;
    /**
     * The call's projection and the run's daily limits: the turn asks for room under them before
     * it calls the model (see `admitCall`), and calls it only if there is. Absent in turns
     * scheduled before they asked, and for runs without daily limits.
     */
    room?: RoomRequest;
  };
  /**
   * Notices of the run to deliver before the model is called (the iteration before ended with
   * them); absent in turns scheduled before turns delivered notices.
   */
  notices?: AgentNotification[];
  /** The run's own MCP servers; absent when it has none (the worker's may still offer tools). */
  mcpServers?: McpServer[];
  /** The run's sandbox policy, for the sandboxes of its stdio MCP servers; absent in older turns. */
  sandboxPolicy?: SandboxPolicy;
}

/**
 * A turn that did not call the model: the daily ledger had no room for it under the run's limits.
 * It delivered its notices; the run pauses on its daily budget with the spend the ledger counted.
 */
export interface RefusedTurn {
  refused: ReservationDecision;
}

/** The model's answer to one turn, within the bounds of a payload whatever the model sent. */
export interface ModelTurnResult extends BoundedAnswer {
  /**
   * The day's spend of all runs as this worker knows it, this turn's charge included; absent when
   * the turn was not asked to charge, or the ledger could not take the charge (the run then charges
   * the spend itself).
   */
  daily?: DailyUsage;
}

/**
 * What a model turn cancelled mid-answer (a stop) reports in the details of its cancellation: the
 * tokens the provider counted, or estimated, until then, and their cost, for the run's budgets.
 */
export interface StoppedTurn {
  usage: ModelUsage;
  costUsd: number;
}

/** Failure type when the run names a provider this worker does not offer. */
export const UNKNOWN_MODEL_PROVIDER = 'UnknownModelProvider';

/** Heartbeats of a streaming answer are at least this far apart. */
const HEARTBEAT_EVERY_MS = 200;

/** What a model turn needs from its worker. */
export interface ModelTurnDependencies {
  models: ModelProviders;
  transcripts: TranscriptStore;
  tools: ToolCatalog;
  /** The MCP tools of the run's servers, offered beside the catalog's. */
  mcp: McpTools;
  breakers: CircuitBreakers;
  /** The daily ledgers, for turns that charge their own spend; absent in workers without one. */
  ledger?: Pick<DailyLedgerActivities, 'chargeCall' | 'admitCall' | 'forgetCall'>;
  /** Delivers the notices a turn carries. */
  notifier?: Pick<Notifier, 'deliver'>;
  /** Records each model call; none recorded when absent. */
  metrics?: AgentMetrics;
}

/**
 * Runs one model turn. The provider heartbeats as its answer streams, so a killed worker or a
 * stalled stream is noticed within the heartbeat timeout and the turn retried, and a stop reaches
 * the provider through the cancellation signal. The call goes through the worker's circuit breaker
 * for its provider and model, and the model's tool calls come back checked against the tools'
 * schemas. The answer comes back within a payload's bounds whatever the model sent (see
 * `boundAnswer`), and a turn cancelled mid-answer reports the tokens it used in its cancellation.
 */
export async function runModelTurn(
  input: ModelTurnInput,
  dependencies: ModelTurnDependencies,
): Promise<ModelTurnResult | RefusedTurn> {
  // Delivered beside the model call, in order, and awaited before the turn completes, so a turn
  // that completed has delivered them; a retried turn delivers them again, and sinks deliver a
  // notice ID once where they can (the log file).
  const delivery = deliverNotices(input.notices ?? [], dependencies.notifier);
  // Awaited below; a turn that fails before then is retried, and its notices with it.
  delivery.catch(() => undefined);
  const refused = await askForRoom(input, dependencies.ledger);
  if (refused !== undefined) {
    await delivery;
    return { refused };
  }
  try {
    return await answerTurn(input, dependencies, delivery);
  } finally {
    // Charged, the call already left the worker's count of calls under way; failed, it leaves now.
    if (input.charge?.room !== undefined)
      dependencies.ledger?.forgetCall(input.charge.day, input.charge.chargeId);
  }
}

/**
 * The ledger's refusal when the run's daily limits leave no room for the call; undefined when the
 * call may go ahead. A ledger that cannot be reached lets it: budgets must not stop work on their
 * own failure, and the run's own check still sees the day's last figure.
 */
async function askForRoom(
  input: ModelTurnInput,
  ledger: ModelTurnDependencies['ledger'],
): Promise<ReservationDecision | undefined> {
  const { charge } = input;
  if (charge?.room === undefined || ledger === undefined) return undefined;
  // The ledger's decision waits on its workflow task, which a busy server may take seconds to run.
  const context = Context.current();
  const heartbeat = setInterval(() => context.heartbeat(), 1000);
  try {
    const decision = await ledger.admitCall(charge.day, charge.chargeId, charge.room);
    return decision.granted ? undefined : decision;
  } catch (error) {
    log.warn('Daily ledger unavailable; the call goes ahead', {
      error: error instanceof Error ? error.message : String(error),
    });
    return undefined;
  } finally {
    clearInterval(heartbeat);
  }
}

/** Calls the model with the turn's conversation, and charges and delivers what the turn carries. */
async function answerTurn(
  input: ModelTurnInput,
  dependencies: ModelTurnDependencies,
  delivery: Promise<void>,
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
  const mcp = await dependencies.mcp.offer(
    {
      trajectoryId: input.transcriptKey,
      ...(input.mcpServers === undefined ? {} : { servers: input.mcpServers }),
      policy: input.sandboxPolicy ?? { network: false },
    },
    context.cancellationSignal,
  );
  const tools = [...(await dependencies.tools.definitions(context.cancellationSignal)), ...mcp.definitions];
  const { key, label } = breakerOf(input.model);
  let lastHeartbeat = 0;
  const callModel = () =>
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
    });
  const generate = traceModelCall(input.model, callModel);
  let response: ModelResponse;
  try {
    response = await measureModelCall(
      dependencies.metrics,
      input.model,
      () => dependencies.breakers.cooldownS(key) > 0,
      () => dependencies.breakers.call(key, label, generate),
    );
  } catch (error) {
    if (!(error instanceof ModelTurnStopped)) throw error;
    // Details of the cancellation reach the workflow, which waits for them (WAIT_CANCELLATION_COMPLETED).
    const stopped: StoppedTurn = { usage: error.usage, costUsd: error.costUsd };
    throw new CancelledFailure('the model turn was cancelled mid-answer', [stopped], error);
  }
  const checked = {
    ...response,
    toolCalls: response.toolCalls.map((call) => mcp.check(call) ?? dependencies.tools.check(call)),
  };
  const answer = boundAnswer(checked, input.maxToolCalls ?? DEFAULT_MAX_TOOL_CALLS_PER_ANSWER);
  assertWithinBound(answer);
  await dependencies.transcripts.save(input.transcriptKey, {
    revision: input.revision,
    systemPrompt: transcript.systemPrompt,
    messages: [...transcript.messages, assistantMessage(answer)],
  });
  const daily = await chargeAnswer(input, answer, dependencies.ledger);
  await delivery;
  return daily === undefined ? answer : { ...answer, daily };
}

/** Delivers a turn's notices one after the other. */
async function deliverNotices(
  notices: AgentNotification[],
  notifier: ModelTurnDependencies['notifier'],
): Promise<void> {
  for (const notification of notices) await notifier?.deliver(notification);
}

/**
 * Charges the answer's tokens and cost to the day's ledger when the turn was asked to. A ledger
 * that cannot take it costs the turn nothing: the answer is paid for already, and another attempt
 * would call the model again; the run charges the spend itself with its next ledger read.
 */
async function chargeAnswer(
  input: ModelTurnInput,
  answer: BoundedAnswer,
  ledger: ModelTurnDependencies['ledger'],
): Promise<DailyUsage | undefined> {
  if (input.charge === undefined || ledger === undefined) return undefined;
  const { day, chargeId } = input.charge;
  const tokens = answer.usage.inputTokens + answer.usage.outputTokens;
  try {
    const { chargeDropped, ...daily } = await ledger.chargeCall(day, {
      chargeId,
      tokens,
      costUsd: answer.costUsd,
    });
    return chargeDropped === true ? undefined : daily;
  } catch (error) {
    log.warn('Daily ledger unavailable; the run charges this turn itself', {
      error: error instanceof Error ? error.message : String(error),
    });
    return undefined;
  }
}

/**
 * Fails for good, naming the limit, when a result is still over its bound after the cuts: another
 * attempt would make the same answer, and only the model's bill would grow. The bounds make this
 * a safeguard that should never fire.
 */
function assertWithinBound(answer: ModelTurnResult): void {
  const bytes = jsonBytes(answer);
  if (bytes <= MODEL_RESULT_MAX_BYTES) return;
  throw ApplicationFailure.nonRetryable(
    `the model turn's result is ${formatCount(bytes)} bytes after its cuts, over the ${formatExactBytes(MODEL_RESULT_MAX_BYTES)} a model turn may return (Temporal refuses payloads over ${formatExactBytes(TEMPORAL_PAYLOAD_LIMIT_BYTES)})`,
    PAYLOAD_TOO_LARGE_FAILURE,
  );
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
