import * as wf from '@temporalio/workflow';
import type { AgentActivities, ModelTurnInput, ModelTurnResult } from '../activities';
import type { AgentRunInput } from '../common/agent-input';
import type {
  AgentRunResult,
  AgentState,
  AgentStatus,
  ExitReason,
  IterationRecord,
  ModelToolCall,
  RunUsage,
  TranscriptMessage,
} from '../common/agent-run-types';
import {
  MAX_TOOL_ROUNDS_PER_ITERATION,
  MODEL_HEARTBEAT_TIMEOUT_S,
  MODEL_START_TO_CLOSE_TIMEOUT_S,
  TOOL_BATCH_START_TO_CLOSE_TIMEOUT_S,
  TRANSCRIPT_UNAVAILABLE,
} from '../common/constants';
import {
  iterationsQuery,
  iterationsQueryArgsSchema,
  permissionPayloadSchema,
  permissionSignal,
  resumePayloadSchema,
  resumeSignal,
  statusQuery,
  stopPayloadSchema,
  stopSignal,
} from '../common/messages';
import { agentIterationKey, agentStateKey } from '../common/search-attributes';
import { assistantMessage, FINISH_TOOL } from '../common/transcript';
import type { ToolResult } from '../sandbox/tool-call';
import { renderCurrentDetails } from './current-details';
import { buildIterationRecord, errorMarker, shortenError } from './iteration-record';
import { buildIterationPrompt, buildSystemPrompt } from './prompts';
import { finishResult, resultOrMissing, toolBatchSummary, toolResultMessage } from './tool-results';

/** What a run hands to its next execution on continue-as-new: plain JSON. */
export interface CarriedState {
  iteration: number;
  modelCalls: number;
  records: IterationRecord[];
  usage: RunUsage;
  transcript: TranscriptMessage[];
  /** Tool results the model has not read yet: they open the next iteration's turn. */
  pendingMessages: TranscriptMessage[];
  /** Whether the run has a workspace on a sandbox server, to release when it ends. */
  usedSandbox: boolean;
  lastError: string | null;
  ignoredSignals: number;
  startedAt: string;
}

/**
 * One autonomous agent: iteration after iteration of the task program until it is stopped or a
 * limit ends it. Every model call is an activity, every pause a durable timer, every decision a
 * signal; the history is the run's complete, replayable story.
 */
export async function agentRun(input: AgentRunInput, carried?: CarriedState): Promise<AgentRunResult> {
  const info = wf.workflowInfo();
  const run: CarriedState = {
    iteration: 0,
    modelCalls: 0,
    records: [],
    usage: { inputTokens: 0, outputTokens: 0, costUsd: 0 },
    transcript: [],
    pendingMessages: [],
    usedSandbox: false,
    lastError: null,
    ignoredSignals: 0,
    startedAt: new Date().toISOString(),
    // State carried from before a field existed keeps that field's default.
    ...carried,
  };
  const systemPrompt = buildSystemPrompt(input.template.content);
  // The conversation's key outlives continue-as-new and is new for every replacement run.
  const transcriptKey = `${info.workflowId}-${info.firstExecutionRunId}`;

  let state: AgentState = 'running';
  let published: { state: AgentState; iteration: number } | undefined;
  let stopReason: string | null = null;
  let exitReason: ExitReason | null = null;
  let turnScope: wf.CancellationScope | undefined;
  let phase: 'model turn' | 'tool batch' = 'model turn';
  let finishRequested = false;
  let updatedAt = run.startedAt;

  function publish(next: AgentState): void {
    state = next;
    updatedAt = new Date().toISOString();
    if (published?.state !== state || published.iteration !== run.iteration) {
      wf.upsertSearchAttributes([
        { key: agentStateKey, value: state },
        { key: agentIterationKey, value: run.iteration },
      ]);
      published = { state, iteration: run.iteration };
    }
    wf.setCurrentDetails(
      renderCurrentDetails({
        state,
        iteration: run.iteration,
        maxIterations: input.maxIterations,
        lastSummary: run.records.at(-1)?.summary,
        inputTokens: run.usage.inputTokens,
        outputTokens: run.usage.outputTokens,
        costUsd: run.usage.costUsd,
        lastError: run.lastError,
      }),
    );
  }

  function ignoreSignal(signal: string, reason: string): void {
    run.ignoredSignals += 1;
    wf.log.warn('Signal ignored', { signal, reason });
  }

  wf.setHandler(stopSignal, (payload: unknown) => {
    const parsed = stopPayloadSchema.safeParse(payload ?? {});
    if (!parsed.success) return ignoreSignal('stop', parsed.error.message);
    if (stopReason !== null) return;
    stopReason = parsed.data.reason ?? 'stop requested';
    wf.log.info('Stop requested', { reason: stopReason });
    if (state === 'running') publish('stopping');
    // A stop during a model turn ends the turn now rather than when the model finishes.
    turnScope?.cancel();
  });
  wf.setHandler(permissionSignal, (payload: unknown) => {
    const parsed = permissionPayloadSchema.safeParse(payload);
    if (!parsed.success) return ignoreSignal('permission', parsed.error.message);
    ignoreSignal('permission', `no pending request ${parsed.data.requestId}`);
  });
  wf.setHandler(resumeSignal, (payload: unknown) => {
    const parsed = resumePayloadSchema.safeParse(payload ?? {});
    if (!parsed.success) return ignoreSignal('resume', parsed.error.message);
    ignoreSignal('resume', 'the run is not paused');
  });
  wf.setHandler(statusQuery, (): AgentStatus => ({
    name: input.name,
    template: input.template.name,
    state,
    iteration: run.iteration,
    maxIterations: input.maxIterations ?? null,
    pendingPermissions: [],
    usage: { ...run.usage },
    lastError: run.lastError,
    exitReason,
    stopReason,
    ignoredSignals: run.ignoredSignals,
    startedAt: run.startedAt,
    updatedAt,
  }));
  wf.setHandler(iterationsQuery, (args?: unknown) => {
    const parsed = iterationsQueryArgsSchema.safeParse(args ?? {});
    if (!parsed.success) throw new Error(`invalid iterations query arguments: ${parsed.error.message}`);
    const { from = 1, limit = run.records.length } = parsed.data;
    return run.records.filter((record) => record.iteration >= from).slice(0, limit);
  });

  /**
   * Calls the model with only the messages this turn adds; resends the whole conversation if the
   * worker lacks it.
   */
  async function callModel(append: TranscriptMessage[]): Promise<ModelTurnResult> {
    const { modelTurn } = wf.proxyActivities<AgentActivities>({
      startToCloseTimeout: `${MODEL_START_TO_CLOSE_TIMEOUT_S}s`,
      heartbeatTimeout: `${MODEL_HEARTBEAT_TIMEOUT_S}s`,
      retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 5 },
      summary: `model turn ${run.iteration}`,
    });
    const turn: ModelTurnInput = {
      model: input.model,
      transcriptKey,
      baseLength: run.transcript.length,
      append,
      callIndex: run.modelCalls,
    };
    if (run.transcript.length === 0) turn.full = { systemPrompt, messages: [] };
    let result: ModelTurnResult;
    try {
      result = await modelTurn(turn);
    } catch (error) {
      if (failureType(error) !== TRANSCRIPT_UNAVAILABLE) throw error;
      result = await modelTurn({ ...turn, full: { systemPrompt, messages: run.transcript } });
    } finally {
      // A failed call counts too, so a scripted model moves on to its next turn.
      run.modelCalls += 1;
    }
    run.transcript.push(...append, assistantMessage(result));
    return result;
  }

  /**
   * Runs the tool calls of the model's last answer as one activity and returns the messages that
   * carry their results back. Each call's ID is fixed by the run, the model call and its position,
   * so a retried batch asks the sandbox for the same calls and never runs one twice.
   */
  async function runTools(calls: ModelToolCall[]): Promise<TranscriptMessage[]> {
    const modelCall = run.modelCalls - 1;
    const batch = calls.map((call, index) => ({ callId: `${transcriptKey}:${modelCall}:${index}`, call }));
    const sandboxed = batch.filter(({ call }) => call.tool !== FINISH_TOOL);
    const results = new Map<string, ToolResult>();
    if (sandboxed.length > 0) {
      const { toolBatch } = wf.proxyActivities<AgentActivities>({
        startToCloseTimeout: `${TOOL_BATCH_START_TO_CLOSE_TIMEOUT_S}s`,
        heartbeatTimeout: `${MODEL_HEARTBEAT_TIMEOUT_S}s`,
        retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 10 },
        summary: toolBatchSummary(sandboxed.map(({ call }) => call)),
      });
      run.usedSandbox = true;
      const answered = await toolBatch({
        trajectoryId: transcriptKey,
        policy: { network: input.sandbox.network },
        calls: sandboxed,
      });
      for (const result of answered) results.set(result.callId, result);
    }
    return batch.map(({ callId, call }) =>
      toolResultMessage(
        call,
        call.tool === FINISH_TOOL ? finishResult(callId) : resultOrMissing(results, callId),
      ),
    );
  }

  /**
   * The iteration's conversation: the prompt, then model turns and tool batches until the model
   * answers without tool calls, calls `finish`, or uses up its tool rounds. Returns its text.
   */
  async function converse(usage: RunUsage): Promise<string> {
    const texts: string[] = [];
    let append: TranscriptMessage[] = [
      ...run.pendingMessages,
      { role: 'user', content: buildIterationPrompt(run.transcript.length > 0, input.args) },
    ];
    run.pendingMessages = [];
    for (let round = 1; ; round += 1) {
      phase = 'model turn';
      const answer = await callModel(append);
      texts.push(answer.text);
      usage.inputTokens += answer.usage.inputTokens;
      usage.outputTokens += answer.usage.outputTokens;
      usage.costUsd += answer.costUsd;
      if (answer.toolCalls.length === 0) break;
      phase = 'tool batch';
      append = await runTools(answer.toolCalls);
      if (answer.toolCalls.some((call) => call.tool === FINISH_TOOL)) {
        finishRequested = true;
        break;
      }
      if (round >= MAX_TOOL_ROUNDS_PER_ITERATION) {
        // The model reads these results at the start of the next iteration.
        run.pendingMessages = append;
        texts.push(`[Paused after ${MAX_TOOL_ROUNDS_PER_ITERATION} tool rounds in one iteration]`);
        break;
      }
    }
    return texts.filter((text) => text !== '').join('\n');
  }

  async function runIteration(): Promise<IterationRecord> {
    run.iteration += 1;
    publish('running');
    const startedAtMs = Date.now();
    let text = '';
    let status: IterationRecord['status'] = 'ok';
    let error: string | undefined;
    const usage: RunUsage = { inputTokens: 0, outputTokens: 0, costUsd: 0 };
    turnScope = new wf.CancellationScope();
    try {
      text = await turnScope.run(() => converse(usage));
    } catch (failure) {
      if (wf.isCancellation(failure) && stopReason !== null) {
        text = `[Stopped during the ${phase}: ${stopReason}]`;
      } else if (wf.isCancellation(failure)) {
        throw failure;
      } else {
        status = 'error';
        error = failureMessage(failure);
        text += errorMarker(error);
        run.lastError = shortenError(error);
      }
    } finally {
      turnScope = undefined;
    }
    const record = buildIterationRecord({
      iteration: run.iteration,
      startedAtMs,
      endedAtMs: Date.now(),
      text,
      status,
      tokensIn: usage.inputTokens,
      tokensOut: usage.outputTokens,
      costUsd: usage.costUsd,
      error,
    });
    run.records.push(record);
    run.usage.inputTokens += record.tokensIn;
    run.usage.outputTokens += record.tokensOut;
    run.usage.costUsd += record.costUsd;
    wf.log.info('Iteration recorded', { iteration: record.iteration, status: record.status });
    return record;
  }

  function reachedMaxIterations(): boolean {
    return input.maxIterations !== undefined && run.iteration >= input.maxIterations;
  }

  async function loop(): Promise<ExitReason> {
    for (;;) {
      if (stopReason !== null) return 'stopped';
      if (reachedMaxIterations()) return 'max_iterations';
      if (wf.workflowInfo().continueAsNewSuggested) {
        await wf.condition(wf.allHandlersFinished);
        return wf.continueAsNew<typeof agentRun>(input, run);
      }
      const record = await runIteration();
      // A stop that came during the iteration still lets it be recorded, then ends the run.
      if (stopReason !== null) return 'stopped';
      if (finishRequested) return 'finished';
      if (reachedMaxIterations()) return 'max_iterations';
      const pauseS = record.status === 'error' ? input.guards.errorBackoffS : input.intervalS;
      if (pauseS > 0) {
        publish('sleeping');
        await wf.condition(() => stopReason !== null, pauseS * 1000);
      }
    }
  }

  /**
   * Releases the run's workspace when the run ends (not on continue-as-new, which carries on in
   * it). A failure to release is logged, never the run's failure.
   */
  async function releaseWorkspace(): Promise<void> {
    if (!run.usedSandbox) return;
    const { releaseWorkspace } = wf.proxyActivities<AgentActivities>({
      startToCloseTimeout: '1 minute',
      retry: { maximumAttempts: 5 },
      summary: input.sandbox.resetOnEnd ? 'release and reset the workspace' : 'release the workspace',
    });
    try {
      await wf.CancellationScope.nonCancellable(() =>
        releaseWorkspace({ trajectoryId: transcriptKey, reset: input.sandbox.resetOnEnd }),
      );
    } catch (error) {
      wf.log.warn('Workspace not released', { error: failureMessage(error) });
    }
  }

  publish('running');
  try {
    exitReason = await loop();
  } catch (error) {
    if (wf.isCancellation(error)) {
      publish('stopped');
      await releaseWorkspace();
    }
    throw error;
  }
  await releaseWorkspace();
  publish('stopped');
  await wf.condition(wf.allHandlersFinished);
  return { exitReason, iterations: run.iteration, usage: run.usage };
}

/** The innermost message of a failure: an activity failure wraps the error the activity threw. */
function failureMessage(failure: unknown): string {
  if (failure instanceof wf.ActivityFailure && failure.cause) return failure.cause.message;
  return failure instanceof Error ? failure.message : String(failure);
}

/** The `type` of the ApplicationFailure behind an activity failure, if any. */
function failureType(failure: unknown): string | undefined {
  const cause = failure instanceof wf.ActivityFailure ? failure.cause : failure;
  return cause instanceof wf.ApplicationFailure ? (cause.type ?? undefined) : undefined;
}
