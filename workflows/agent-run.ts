import * as wf from '@temporalio/workflow';
import type {
  AgentActivities,
  ModelTurnInput,
  ModelTurnResult,
  RefusedTurn,
  StoppedTurn,
} from '../activities';
import { describeZodError, type AgentRunInput, type BudgetLimits } from '../common/agent-input';
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
  CIRCUIT_OPEN_FAILURE,
  HISTORY_BYTES_BEFORE_CONTINUE_AS_NEW,
  INVALID_RUN_INPUT_FAILURE,
  MAX_RECORDS_KEPT,
  MAX_TOOL_ROUNDS_PER_ITERATION,
  MODEL_HEARTBEAT_TIMEOUT_S,
  MODEL_START_TO_CLOSE_TIMEOUT_S,
  TEMPORAL_PAYLOADS_TOO_LARGE_FAILURE,
  TOOL_BATCH_START_TO_CLOSE_TIMEOUT_S,
  TRANSCRIPT_UNAVAILABLE,
  WORKSPACE_PREPARATION_FAILURE,
  WORKSPACE_PREPARATION_HEARTBEAT_TIMEOUT_S,
  WORKSPACE_PREPARATION_TIMEOUT_S,
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
import { roundUsd, type Spend } from './budgets';
import { compactTranscript } from './compaction';
import { renderCurrentDetails } from './current-details';
import { modelTurnSummary, pauseTimerSummary, workspaceSummary } from './event-summaries';
import { assessIteration, initialGuardState, nextWaitS, type FailureInfo, type GuardState } from './guards';
import { checkStartArguments } from './input-check';
import { buildIterationRecord, errorMarker, shortenError } from './iteration-record';
import { buildIterationPrompt, buildSystemPrompt } from './prompts';
import { RunApprovals, type PermissionExit } from './run-approvals';
import { RunBudget } from './run-budget';
import { RunNotices } from './run-notices';
import {
  ANSWER_BOUNDS_PATCH,
  CLEAN_CANCELLATION_PATCH,
  DAILY_RESERVATIONS_PATCH,
  NOTICES_IN_ORDER_PATCH,
  RUN_INTEGRITY_PATCH,
  RUNNER_COMMANDS_PATCH,
  TURN_BOOKKEEPING_PATCH,
  runSettings,
} from './run-settings';
import {
  finishResult,
  notTakenMessage,
  payloadLimitMessage,
  refusalMessage,
  resultOrMissing,
  toolBatchSummary,
  toolResultMessage,
} from './tool-results';

/** What a run hands to its next execution on continue-as-new: plain JSON. */
export interface CarriedState {
  iteration: number;
  modelCalls: number;
  /** The latest records (at most MAX_RECORDS_KEPT); every record is in the history and the log. */
  records: IterationRecord[];
  usage: RunUsage;
  /** The conversation, compacted to the run's context budget. */
  transcript: TranscriptMessage[];
  /** Compactions so far: a worker whose stored transcript has another revision gets it resent. */
  transcriptRevision: number;
  /** Tool results the model has not read yet: they open the next iteration's turn. */
  pendingMessages: TranscriptMessage[];
  /** Whether the run has a workspace on a sandbox server, to release when it ends. */
  usedSandbox: boolean;
  lastError: string | null;
  ignoredSignals: number;
  startedAt: string;
  guards: GuardState;
  /** The run's budgets, with every `resume` override applied. */
  budgets: BudgetLimits;
  /** Budget warnings already sent, so each goes out once. */
  warnedBudgets: string[];
  /** Tokens and cost of the last model call: the projection for the next one. */
  lastCallSpend: Spend;
  unchargedSpend: Spend;
  charges: number;
  noticeSequence: number;
}

/**
 * One autonomous agent: iteration after iteration of the task program until it is stopped or a
 * limit ends it. Every model call and tool batch is an activity, every pause a durable timer or an
 * awaited condition, every decision a signal; the history is the run's complete, replayable story.
 */
export async function agentRun(startInput: AgentRunInput, carried?: CarriedState): Promise<AgentRunResult> {
  const info = wf.workflowInfo();
  // First, before anything reads the input: a run started around the client may carry anything.
  const keepsStateTrue = wf.patched(RUN_INTEGRITY_PATCH);
  let checkedInput = startInput;
  if (keepsStateTrue) {
    const checked = checkStartArguments(startInput, carried, info.continuedFromExecutionRunId !== undefined);
    if ('problem' in checked) {
      wf.upsertSearchAttributes([{ key: agentStateKey, value: 'failed' }]);
      // Failing the execution, not the workflow task, which would be retried forever.
      throw wf.ApplicationFailure.create({
        type: INVALID_RUN_INPUT_FAILURE,
        message: `Invalid run input: ${checked.problem}`,
        nonRetryable: true,
      });
    }
    checkedInput = checked.input;
  }
  const input = runSettings(checkedInput);
  const runnerCommands = wf.patched(RUNNER_COMMANDS_PATCH);
  const cancelsLikeStop = wf.patched(CLEAN_CANCELLATION_PATCH);
  const boundsAnswers = wf.patched(ANSWER_BOUNDS_PATCH);
  // Another attempt would return the same oversized result, at the model's full price again.
  const payloadFailuresNotRetried = boundsAnswers
    ? { nonRetryableErrorTypes: [TEMPORAL_PAYLOADS_TOO_LARGE_FAILURE] }
    : {};
  const run: CarriedState = {
    iteration: 0,
    modelCalls: 0,
    records: [],
    usage: { inputTokens: 0, outputTokens: 0, costUsd: 0 },
    transcript: [],
    transcriptRevision: 0,
    pendingMessages: [],
    usedSandbox: false,
    lastError: null,
    ignoredSignals: 0,
    startedAt: new Date().toISOString(),
    guards: initialGuardState(),
    budgets: input.budgets,
    warnedBudgets: [],
    lastCallSpend: { tokens: 0, costUsd: 0 },
    unchargedSpend: { tokens: 0, costUsd: 0 },
    charges: 0,
    noticeSequence: 0,
    // State carried from before a field existed keeps that field's default.
    ...carried,
  };
  const systemPrompt = buildSystemPrompt(input.template.content);
  // The conversation's key outlives continue-as-new and is new for every replacement run.
  const transcriptKey = `${info.workflowId}-${info.firstExecutionRunId}`;
  const turnsKeepBooks = runnerCommands && wf.patched(TURN_BOOKKEEPING_PATCH);
  const notices = new RunNotices({
    agent: input.name,
    runKey: transcriptKey,
    sinks: input.notifications,
    sequence: run.noticeSequence,
    enabled: runnerCommands,
    inOrder: runnerCommands && wf.patched(NOTICES_IN_ORDER_PATCH),
    turnsDeliver: turnsKeepBooks,
  });
  type Phase = 'model turn' | 'tool batch' | 'approval' | 'budget pause';
  let phase: Phase = 'model turn';
  let phaseBeforePause: Phase = phase;
  const budget = new RunBudget(run, {
    runKey: transcriptKey,
    ledgerEnabled: runnerCommands,
    turnsCharge: turnsKeepBooks,
    turnsAskForRoom: turnsKeepBooks && wf.patched(DAILY_RESERVATIONS_PATCH),
    notices,
    iteration: () => run.iteration,
    isStopped: () => stopReason !== null,
    onPause: () => {
      phaseBeforePause = phase;
      phase = 'budget pause';
      publish('paused_budget');
    },
    onResume: () => {
      phase = phaseBeforePause;
      publish('running');
    },
  });

  let state: AgentState = 'running';
  let published: { state: AgentState; iteration: number } | undefined;
  let stopReason: string | null = null;
  /** Set when a workflow cancellation, not a `stop`, was the first to end the run. */
  let cancelled = false;
  let exitReason: ExitReason | null = null;
  let turnScope: wf.CancellationScope | undefined;
  let finishRequested = false;
  let permissionExit: PermissionExit | undefined;
  let askedThisIteration = false;
  /** Tool calls the model made in the current iteration: an iteration with some is not empty. */
  let toolCallsThisIteration = 0;
  let updatedAt = run.startedAt;
  const approvals = new RunApprovals(input.permissions, {
    notices,
    iteration: () => run.iteration,
    onWait: () => {
      askedThisIteration = true;
      phase = 'approval';
      publish('awaiting_approval');
    },
    onDecided: () => {
      phase = 'tool batch';
      publish('running');
    },
    onHeldDecisionTaken: (count) => {
      run.ignoredSignals -= count;
    },
    batchNotices: boundsAnswers,
  });

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
        pendingPermissions: approvals.pending,
        pauseReason: budget.pauseReason,
      }),
    );
  }

  function ignoreSignal(signal: string, reason: string): void {
    run.ignoredSignals += 1;
    wf.log.warn('Signal ignored', { signal, reason });
  }

  /** Ends the run at its next step; a second request changes nothing. */
  function requestStop(reason: string): void {
    if (stopReason !== null) return;
    stopReason = reason;
    wf.log.info('Stop requested', { reason: stopReason });
    if (state === 'running' || state === 'awaiting_approval' || state === 'paused_budget')
      publish('stopping');
    // A stop during a model turn, an approval wait or a budget pause ends it now.
    turnScope?.cancel();
  }

  wf.setHandler(stopSignal, (payload: unknown) => {
    const parsed = stopPayloadSchema.safeParse(payload ?? {});
    if (!parsed.success) return ignoreSignal('stop', describeZodError(parsed.error));
    requestStop(parsed.data.reason ?? 'stop requested');
  });
  if (cancelsLikeStop) {
    // The run's own work runs shielded from the cancellation (see the end of this function), which
    // becomes a stop instead: the run closes its requests, says why it ended, and completes.
    void wf.CancellationScope.current().cancelRequested.catch(() => {
      if (stopReason === null) cancelled = true;
      requestStop(CANCELLATION_STOP_REASON);
    });
  }
  wf.setHandler(permissionSignal, (payload: unknown) => {
    const parsed = permissionPayloadSchema.safeParse(payload);
    if (!parsed.success) return ignoreSignal('permission', describeZodError(parsed.error));
    const receipt = approvals.receive(parsed.data);
    if (receipt === 'ignored') return ignoreSignal('permission', `no open request ${parsed.data.requestId}`);
    // Counted as ignored unless a request with this ID opens later and takes it.
    if (receipt === 'held') return ignoreSignal('permission', `no request ${parsed.data.requestId} yet`);
    publish(state);
  });
  wf.setHandler(resumeSignal, (payload: unknown) => {
    const parsed = resumePayloadSchema.safeParse(payload ?? {});
    if (!parsed.success) return ignoreSignal('resume', describeZodError(parsed.error));
    if (!budget.resume(parsed.data.budgets)) ignoreSignal('resume', 'the run is not paused');
  });
  // Without a default handler Temporal would buffer a misspelt signal silently, forever.
  wf.setDefaultSignalHandler((signalName: string) => {
    ignoreSignal(
      signalName.slice(0, SIGNAL_NAME_LOGGED_MAX_CHARS),
      `no signal of this name; accepted: ${[stopSignal.name, permissionSignal.name, resumeSignal.name].join(', ')}`,
    );
  });
  wf.setHandler(statusQuery, (): AgentStatus => ({
    name: input.name,
    template: input.template.name,
    state,
    iteration: run.iteration,
    maxIterations: input.maxIterations ?? null,
    pendingPermissions: approvals.pending,
    usage: { ...run.usage, costUsd: roundUsd(run.usage.costUsd) },
    budgets: run.budgets,
    dailyUsage: roundedDailyUsage(budget.dailyUsage),
    pauseReason: budget.pauseReason,
    lastError: run.lastError,
    exitReason,
    stopReason,
    ignoredSignals: run.ignoredSignals,
    startedAt: run.startedAt,
    updatedAt,
  }));
  wf.setHandler(iterationsQuery, (args?: unknown) => {
    const parsed = iterationsQueryArgsSchema.safeParse(args ?? {});
    if (!parsed.success)
      throw new Error(`invalid iterations query arguments: ${describeZodError(parsed.error)}`);
    const { from = 1, limit = run.records.length } = parsed.data;
    return run.records.filter((record) => record.iteration >= from).slice(0, limit);
  });

  /**
   * Calls the model with only the messages this turn adds; sends the whole conversation when it was
   * just compacted or the worker lacks it. `round` is the call's place in the iteration, for its summary.
   */
  async function callModel(
    append: TranscriptMessage[],
    round: number,
  ): Promise<ModelTurnResult | RefusedTurn> {
    const { modelTurn } = wf.proxyActivities<AgentActivities>({
      startToCloseTimeout: `${MODEL_START_TO_CLOSE_TIMEOUT_S}s`,
      // A remote model's stream may pause up to its stall timeout; any other provider heartbeats steadily.
      heartbeatTimeout: `${'stallTimeoutS' in input.model ? input.model.stallTimeoutS : MODEL_HEARTBEAT_TIMEOUT_S}s`,
      retry: {
        initialInterval: '1s',
        backoffCoefficient: 2,
        maximumInterval: '30s',
        maximumAttempts: 5,
        ...payloadFailuresNotRetried,
      },
      summary: modelTurnSummary(run.iteration, round),
      // A stop waits for the provider to hang up and report the tokens it used until then.
      ...(boundsAnswers ? { cancellationType: wf.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED } : {}),
    });
    const compaction = compactTranscript(run.transcript, append, input.contextBudgetTokens, systemPrompt);
    if (compaction !== undefined) {
      run.transcript = compaction.messages;
      run.transcriptRevision += 1;
      wf.log.info('Conversation compacted', {
        replaced: compaction.replaced,
        kept: compaction.messages.length,
      });
    }
    const turn: ModelTurnInput = {
      model: input.model,
      transcriptKey,
      revision: run.transcriptRevision,
      baseLength: run.transcript.length,
      append,
      callIndex: run.modelCalls,
      maxToolCalls: input.guards.maxToolCallsPerAnswer,
      sandboxPolicy: { network: input.sandbox.network },
    };
    if (input.mcpServers !== undefined) turn.mcpServers = input.mcpServers;
    const charge = budget.turnCharge(run.modelCalls);
    if (charge !== undefined) turn.charge = charge;
    const held = notices.takeHeld();
    if (held.length > 0) turn.notices = held;
    if (run.transcript.length === 0 || compaction !== undefined) {
      turn.full = { systemPrompt, messages: run.transcript };
    }
    let result: ModelTurnResult | RefusedTurn | undefined;
    try {
      result = await modelTurn(turn).catch((error: unknown) => {
        if (failureInfo(error).type !== TRANSCRIPT_UNAVAILABLE) throw error;
        return modelTurn({ ...turn, full: { systemPrompt, messages: run.transcript } });
      });
    } catch (error) {
      throw endedTurn(error);
    } finally {
      // A failed call counts too, so a scripted model moves on to its next turn; a refused one
      // never reached the model, and its next attempt is the same call.
      if (result === undefined || !('refused' in result)) run.modelCalls += 1;
    }
    if ('refused' in result) return result;
    run.transcript.push(...append, assistantMessage(result));
    return result;
  }

  /**
   * The model's answer once the budgets let the call happen: a turn the daily ledger refused
   * pauses the run on its daily budget, and asks again once resumed. Undefined when the run was
   * stopped while paused.
   */
  async function answeredTurn(
    append: TranscriptMessage[],
    round: number,
  ): Promise<ModelTurnResult | undefined> {
    for (;;) {
      if (!(await budget.check(run.lastCallSpend, false))) return undefined;
      const outcome = await callModel(append, round);
      if (!('refused' in outcome)) return outcome;
      budget.refused(outcome.refused);
    }
  }

  /**
   * What a model turn that did not answer leaves: the tokens a turn stopped mid-answer reported are
   * charged to the run (a paid API bills them), and a turn that ended otherwise after a stop (its
   * worker gone, so it timed out) ends as the stop's cancellation, not as a failure of the run.
   */
  function endedTurn(error: unknown): unknown {
    const stopped = stoppedTurnOf(error);
    if (stopped !== undefined) budget.record(stopped.usage, stopped.costUsd);
    if (boundsAnswers && stopReason !== null && !wf.isCancellation(error)) {
      return new wf.CancelledFailure(`the model turn ended after a stop: ${failureMessage(error)}`);
    }
    return error;
  }

  /**
   * Runs the tool calls of the model's last answer: the permission policy first, then one activity
   * for the calls allowed. Each call's ID is fixed by the run, the model call and its position, so
   * a retried batch asks the sandbox for the same calls and never runs one twice.
   */
  async function runTools(calls: ModelToolCall[]): Promise<TranscriptMessage[]> {
    const modelCall = run.modelCalls - 1;
    const batch = calls.map((call, index) => ({ callId: `${transcriptKey}:${modelCall}:${index}`, call }));
    // A call with invalid arguments is answered with why; nobody is asked and nothing runs.
    const { refused, exit } = await approvals.gate(batch.filter(({ call }) => call.invalid === undefined));
    permissionExit = exit;
    const toRun = batch.filter(
      ({ callId, call }) => call.tool !== FINISH_TOOL && call.invalid === undefined && !refused.has(callId),
    );
    const results = new Map<string, ToolResult>();
    if (toRun.length > 0) {
      const { toolBatch } = wf.proxyActivities<AgentActivities>({
        startToCloseTimeout: `${TOOL_BATCH_START_TO_CLOSE_TIMEOUT_S}s`,
        heartbeatTimeout: `${MODEL_HEARTBEAT_TIMEOUT_S}s`,
        retry: {
          initialInterval: '1s',
          backoffCoefficient: 2,
          maximumInterval: '30s',
          maximumAttempts: 10,
          ...payloadFailuresNotRetried,
        },
        summary: toolBatchSummary(toRun.map(({ call }) => call)),
      });
      run.usedSandbox = true;
      const answered = await toolBatch({
        trajectoryId: transcriptKey,
        policy: { network: input.sandbox.network },
        calls: toRun.map(({ callId, call }) => ({ callId, call })),
        ...(input.mcpServers === undefined ? {} : { mcpServers: input.mcpServers }),
      });
      for (const result of answered) results.set(result.callId, result);
    }
    return batch.map(({ callId, call }) => {
      const refusal = call.invalid ?? refused.get(callId);
      if (call.tool === FINISH_TOOL && call.invalid === undefined) {
        return toolResultMessage(call, finishResult(callId));
      }
      if (refusal !== undefined) return refusalMessage(call, refusal);
      return toolResultMessage(call, resultOrMissing(results, callId));
    });
  }

  /**
   * The iteration's conversation: the prompt, then model turns and tool batches until the model
   * answers without tool calls, calls `finish`, uses up its tool rounds, or a denial ends the run.
   * Returns its text.
   */
  async function converse(): Promise<string> {
    const texts: string[] = [];
    let append: TranscriptMessage[] = [
      ...run.pendingMessages,
      { role: 'user', content: buildIterationPrompt(run.transcript.length > 0, input.args) },
    ];
    run.pendingMessages = [];
    for (let round = 1; ; round += 1) {
      phase = 'model turn';
      if (boundsAnswers) await notices.makeRoom();
      const answer = await answeredTurn(append, round);
      if (answer === undefined) break;
      texts.push(answer.text);
      toolCallsThisIteration += answer.toolCalls.length;
      if (answer.daily === undefined) budget.record(answer.usage, answer.costUsd);
      else budget.recordCharged(answer.usage, answer.costUsd, answer.daily);
      const notTaken = notTakenMessage(answer.toolCallsNotTaken, input.guards.maxToolCallsPerAnswer);
      if (answer.toolCalls.length === 0 && notTaken === undefined) break;
      phase = 'tool batch';
      append = await runTools(answer.toolCalls);
      if (notTaken !== undefined) append.push(notTaken);
      if (permissionExit !== undefined) break;
      if (answer.toolCalls.some((call) => call.tool === FINISH_TOOL && call.invalid === undefined)) {
        finishRequested = true;
        break;
      }
      // Rounds of large answers could outgrow the history before the iteration ends; the loop
      // continues as new before the next one.
      const historyDue = historyTooLong();
      if (round >= MAX_TOOL_ROUNDS_PER_ITERATION || historyDue) {
        // The model reads these results at the start of the next iteration.
        run.pendingMessages = append;
        texts.push(
          historyDue
            ? `[Paused after ${round} tool rounds: the run goes on in a new execution, its history being long]`
            : `[Paused after ${MAX_TOOL_ROUNDS_PER_ITERATION} tool rounds in one iteration]`,
        );
        break;
      }
    }
    return texts.filter((text) => text !== '').join('\n');
  }

  /** Runs one iteration and records it, whatever happened in it. */
  async function runIteration(): Promise<{ record: IterationRecord; text: string; failure?: FailureInfo }> {
    run.iteration += 1;
    askedThisIteration = false;
    toolCallsThisIteration = 0;
    publish('running');
    const startedAtMs = Date.now();
    const usageBefore = { ...run.usage };
    let text = '';
    let failure: FailureInfo | undefined;
    turnScope = new wf.CancellationScope();
    try {
      text = await turnScope.run(() => converse());
    } catch (error) {
      if (wf.isCancellation(error) && stopReason !== null) {
        text = `[Stopped during the ${phase}: ${stopReason}]`;
      } else if (wf.isCancellation(error)) {
        throw error;
      } else {
        failure = failureInfo(error);
        text += errorMarker(failure.message);
        run.lastError = shortenError(failure.message);
      }
    } finally {
      turnScope = undefined;
    }
    // Requests a stop left undecided are closed with the iteration.
    approvals.closeAll();
    const record = buildIterationRecord({
      iteration: run.iteration,
      startedAtMs,
      endedAtMs: Date.now(),
      text,
      status: failure !== undefined ? 'error' : askedThisIteration ? 'permission' : 'ok',
      tokensIn: run.usage.inputTokens - usageBefore.inputTokens,
      tokensOut: run.usage.outputTokens - usageBefore.outputTokens,
      costUsd: run.usage.costUsd - usageBefore.costUsd,
      error: failure?.message,
    });
    run.records.push(record);
    if (run.records.length > MAX_RECORDS_KEPT) run.records.splice(0, run.records.length - MAX_RECORDS_KEPT);
    notices.sendWithNextTurn(
      record.status === 'error' ? 'error' : 'iteration',
      record.status === 'error'
        ? `Iteration ${record.iteration} failed: ${record.error ?? ''}`
        : `Iteration ${record.iteration} done (${record.durationS}s): ${record.summary}`,
      record.iteration,
      { record },
    );
    wf.log.info('Iteration recorded', { iteration: record.iteration, status: record.status });
    return { record, text, ...(failure === undefined ? {} : { failure }) };
  }

  function reachedMaxIterations(): boolean {
    return input.maxIterations !== undefined && run.iteration >= input.maxIterations;
  }

  /**
   * Hands the run over to a new execution. This one closes as `continued_as_new` in visibility and
   * the next starts in the run's live state, so `AgentState="running"` never finds a closed execution.
   */
  function continueAsNew(): Promise<never> {
    if (!keepsStateTrue) return wf.continueAsNew<typeof agentRun>(startInput, run);
    const nextAttributes = wf
      .workflowInfo()
      .typedSearchAttributes.updateCopy([{ key: agentStateKey, value: state }]);
    publish('continued_as_new');
    // The checked input, defaults applied, so the next execution runs with exactly the same settings.
    const continueInLiveState = wf.makeContinueAsNewFunc<typeof agentRun>({
      typedSearchAttributes: nextAttributes,
    });
    return continueInLiveState(checkedInput, run);
  }

  /** Whether the history has grown so large that the run must continue as new now. */
  function historyTooLong(): boolean {
    return boundsAnswers && wf.workflowInfo().historySize >= HISTORY_BYTES_BEFORE_CONTINUE_AS_NEW;
  }

  /**
   * Unpacks the folder or repository the run starts from into its workspace, before the first
   * iteration of the first execution (a continued one works on in the workspace as it is). Only a
   * run whose input names a workspace issues this command, so histories without one replay as they
   * were. Returns false when a stop ended the preparation.
   */
  async function prepareWorkspace(): Promise<boolean> {
    const { workspace } = input;
    if (carried !== undefined || workspace === undefined) return true;
    const { prepareWorkspace } = wf.proxyActivities<AgentActivities>({
      startToCloseTimeout: `${WORKSPACE_PREPARATION_TIMEOUT_S}s`,
      heartbeatTimeout: `${WORKSPACE_PREPARATION_HEARTBEAT_TIMEOUT_S}s`,
      retry: {
        initialInterval: '1s',
        backoffCoefficient: 2,
        maximumInterval: '30s',
        maximumAttempts: 10,
        nonRetryableErrorTypes: [WORKSPACE_PREPARATION_FAILURE],
      },
      summary: workspaceSummary(workspace),
    });
    run.usedSandbox = true;
    turnScope = new wf.CancellationScope();
    try {
      await turnScope.run(() =>
        prepareWorkspace({
          trajectoryId: transcriptKey,
          digest: workspace.digest,
          ...(workspace.kind === 'repository' ? { commit: workspace.commit } : {}),
        }),
      );
      return true;
    } catch (error) {
      if (wf.isCancellation(error) && stopReason !== null) return false;
      if (wf.isCancellation(error)) throw error;
      run.lastError = shortenError(failureMessage(error));
      // The run cannot do its task without its files: it ends failed, saying why.
      throw wf.ApplicationFailure.create({
        type: WORKSPACE_PREPARATION_FAILURE,
        message: `The workspace could not be prepared: ${failureMessage(error)}`,
        nonRetryable: true,
        cause: error instanceof Error ? error : undefined,
      });
    } finally {
      turnScope = undefined;
    }
  }

  async function loop(): Promise<ExitReason> {
    if (!(await prepareWorkspace())) return 'stopped';
    for (;;) {
      if (stopReason !== null) return 'stopped';
      if (reachedMaxIterations()) return 'max_iterations';
      if (wf.workflowInfo().continueAsNewSuggested || historyTooLong()) {
        run.noticeSequence = notices.sequence;
        await notices.settle();
        await wf.condition(wf.allHandlersFinished);
        // A stop or cancellation that came meanwhile would be lost in the next execution.
        if (cancelsLikeStop && stopReason !== null) return 'stopped';
        return continueAsNew();
      }
      if (!(await budget.check({ tokens: 0, costUsd: 0 }, true))) return 'stopped';
      const { record, text, failure } = await runIteration();
      // A stop that came during the iteration still lets it be recorded, then ends the run.
      if (stopReason !== null) return 'stopped';
      if (permissionExit !== undefined) return permissionExit;
      if (finishRequested) return 'finished';
      const guarded = {
        status: record.status,
        text,
        summary: record.summary,
        toolCalls: toolCallsThisIteration,
        ...(failure === undefined ? {} : { failure }),
      };
      const assessment = assessIteration(run.guards, guarded, input.guards);
      run.guards = assessment.state;
      if (assessment.stop !== undefined) {
        stopReason = assessment.stop.message;
        return assessment.stop.exitReason;
      }
      if (reachedMaxIterations()) return 'max_iterations';
      const pauseS = nextWaitS(guarded, {
        intervalS: input.intervalS,
        errorBackoffS: input.guards.errorBackoffS,
      });
      if (pauseS > 0) {
        notices.release();
        publish('sleeping');
        await wf.condition(() => stopReason !== null, pauseS * 1000, { summary: pauseTimerSummary(guarded) });
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

  if (carried === undefined) {
    notices.send(
      'started',
      `Started ${input.template.name}${input.args === '' ? '' : ` with args: ${input.args}`}`,
      0,
    );
  }
  publish('running');
  try {
    exitReason = cancelsLikeStop ? await wf.CancellationScope.nonCancellable(() => loop()) : await loop();
  } catch (error) {
    if (wf.isCancellation(error)) {
      publish('stopped');
      await releaseWorkspace();
      await wf.CancellationScope.nonCancellable(() => budget.flush());
      await notices.settle();
    }
    notices.release();
    // A failure closes the execution: visibility must not go on showing it live.
    if (keepsStateTrue && error instanceof wf.TemporalFailure && !wf.isCancellation(error)) publish('failed');
    throw error;
  }
  if (cancelled && exitReason === 'stopped') exitReason = 'cancelled';
  await releaseWorkspace();
  // Shielded, like every step from here: after a cancellation the run's own scope is cancelled.
  await wf.CancellationScope.nonCancellable(() => budget.flush());
  // Set by a signal handler or a guard while the loop ran: wider than the narrowed type here.
  const reason = stopReason as string | null;
  const why = reason === null ? '' : `: ${reason}`;
  notices.send('stopped', `Stopped after ${run.iteration} iterations (${exitReason})${why}`, run.iteration);
  publish('stopped');
  await notices.settle();
  await wf.CancellationScope.nonCancellable(() => wf.condition(wf.allHandlersFinished));
  return {
    exitReason,
    iterations: run.iteration,
    usage: { ...run.usage, costUsd: roundUsd(run.usage.costUsd) },
  };
}

/** Today's spend as `status` shows it: the cost rounded like the run's own. */
function roundedDailyUsage(daily: AgentStatus['dailyUsage']): AgentStatus['dailyUsage'] {
  return daily === null ? null : { ...daily, costUsd: roundUsd(daily.costUsd) };
}

/** The stop reason of a run cancelled from outside, as `status` and the end notice give it. */
const CANCELLATION_STOP_REASON = 'the workflow was cancelled (Web UI or temporal workflow cancel)';

/** A signal name from outside is cut to this length in the log. */
const SIGNAL_NAME_LOGGED_MAX_CHARS = 100;

/**
 * The innermost message of a failure: an activity failure wraps the error the activity threw. The
 * worker's own payload-size failure (`[TMPRL1103]`) is told in words, with the limit.
 */
function failureMessage(failure: unknown): string {
  if (failure instanceof wf.ActivityFailure && failure.cause) {
    const { cause } = failure;
    if (cause instanceof wf.ApplicationFailure && cause.type === TEMPORAL_PAYLOADS_TOO_LARGE_FAILURE) {
      return payloadLimitMessage(failure.activityType, cause.message);
    }
    return cause.message;
  }
  return failure instanceof Error ? failure.message : String(failure);
}

/** The tokens a model turn stopped mid-answer reported with its cancellation, when it did. */
function stoppedTurnOf(failure: unknown): StoppedTurn | undefined {
  const cause = failure instanceof wf.ActivityFailure ? failure.cause : undefined;
  if (!(cause instanceof wf.CancelledFailure)) return undefined;
  const details = cause.details[0] as { usage?: Record<string, unknown>; costUsd?: unknown } | undefined;
  const { inputTokens, outputTokens, estimated } = details?.usage ?? {};
  const costUsd = details?.costUsd;
  const isCount = (value: unknown): value is number =>
    typeof value === 'number' && Number.isFinite(value) && value >= 0;
  if (!isCount(inputTokens) || !isCount(outputTokens) || !isCount(costUsd)) return undefined;
  return {
    usage: { inputTokens, outputTokens, ...(estimated === true ? { estimated: true as const } : {}) },
    costUsd,
  };
}

/**
 * What the guards learn from a failure: its message, the `type` of the ApplicationFailure behind it,
 * and the cooldown an open circuit breaker reported in its details.
 */
function failureInfo(failure: unknown): FailureInfo {
  const cause = failure instanceof wf.ActivityFailure ? failure.cause : failure;
  const info: FailureInfo = { message: failureMessage(failure) };
  if (cause instanceof wf.ApplicationFailure) {
    if (cause.type) info.type = cause.type;
    const details = cause.details?.[0] as { cooldownS?: unknown } | undefined;
    if (cause.type === CIRCUIT_OPEN_FAILURE && typeof details?.cooldownS === 'number') {
      info.cooldownS = details.cooldownS;
    }
  }
  return info;
}
