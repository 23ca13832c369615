import type { Client } from '@temporalio/client';
import type { temporal } from '@temporalio/proto';
import { z } from 'zod';
import { describeZodError } from '../../common/agent-input';
import type { IterationRecord, ModelToolCall, RunUsage } from '../../common/agent-run-types';
import { permissionPayloadSchema, resumePayloadSchema, stopPayloadSchema } from '../../common/messages';
import {
  NOTIFICATION_KINDS,
  type NotificationKind,
  type PermissionDecision,
} from '../../common/notification';
import { agentIterationKey, agentStateKey } from '../../common/search-attributes';
import {
  decodePayload,
  describeFailure,
  eventTime,
  historyEvents,
  longToNumber,
  resolveRunChain,
  searchAttributeValue,
  type HistoryEvent,
  type RunChain,
} from './history-reader';

/**
 * The audit of an agent run, rebuilt from its Temporal history alone: every prompt, model output,
 * tool call and result, permission decision, signal (with who sent it) and state change, across the
 * executions that continue-as-new chains together. Nothing here asks a worker: a run is auditable
 * when every worker is gone, and the history is the record nobody can edit.
 */

/** What every audit entry has: when it happened (event time, ISO 8601) and in which execution. */
interface EntryBase {
  at: string;
  /** The execution of the continue-as-new chain whose history holds the event. */
  runId: string;
  /** The run's iteration when it happened; absent before the first and at the chain's edges. */
  iteration?: number;
}

/** The part of a run's input an audit reader needs to recognise the run; the rest is kept as is. */
export interface StartedInput {
  name?: string;
  template?: { name?: string; source?: string };
  args?: string;
  intervalS?: number;
  maxIterations?: number;
  model?: { provider?: string };
  permissions?: { mode?: string };
  [field: string]: unknown;
}

/** How far a continued execution had come when it started. */
export interface CarriedProgress {
  iteration: number;
  modelCalls: number;
  usage?: RunUsage;
}

/** A signal as the history recorded it, kept on the decision it led to. */
export interface SignalRecord {
  at: string;
  /** Who sent it: the client's identity (`agents` CLI, `temporal` CLI, the Web UI). */
  identity: string;
  by?: string;
  note?: string;
}

/** One step of the run's story. `kind` says which; the fields after it depend on the kind. */
export type AuditEntry = EntryBase &
  (
    | {
        kind: 'run_started';
        workflowId: string;
        /** Who started the execution: the client for the first one, the worker for continued ones. */
        identity: string;
        /** The execution this one continues, absent for the first of the chain. */
        continuedFrom?: string;
        /** The run's input, on the first execution of the chain (later ones carry the same). */
        input?: StartedInput;
        /** How far the run had come, on continued executions. */
        carried?: CarriedProgress;
      }
    | {
        kind: 'earlier_runs_missing';
        /** The execution this chain continues, which the server no longer has (retention). */
        missingRunId: string;
      }
    | { kind: 'system_prompt'; text: string }
    | {
        kind: 'conversation_sent';
        /** The whole conversation given to the model again: after a compaction or a resend. */
        systemPrompt: string;
        messages: unknown[];
        callIndex: number;
      }
    | { kind: 'prompt'; text: string; callIndex: number }
    | {
        kind: 'model_output';
        callIndex: number;
        text: string;
        toolCalls: number;
        usage: { inputTokens: number; outputTokens: number };
        costUsd: number;
        /** The attempt that answered, when earlier ones failed, and the last failure. */
        attempt?: number;
        retriedAfter?: string;
      }
    | {
        kind: 'model_failed';
        callIndex?: number;
        error: string;
        failureType?: string;
        attempt?: number;
      }
    | {
        kind: 'tool_call';
        callId: string;
        tool: string;
        arguments: unknown;
        /** The arguments text the model sent when it was not a JSON object (`arguments` is then `{}`), cut to a bound. */
        rawArguments?: string;
      }
    | {
        kind: 'tool_result';
        /** The model's ID of the call, as on its `tool_call`. */
        callId: string;
        tool: string;
        success: boolean;
        output: string;
        error?: string;
        metadata?: Record<string, unknown>;
        /** `sandbox`: the tool batch's result; `workflow`: a result the run gave the model itself. */
        source: 'sandbox' | 'workflow';
        /** The call's ID on the sandbox server, for its logs. */
        sandboxCallId?: string;
      }
    | { kind: 'tool_failed'; callId: string; tool: string; error: string; sandboxCallId?: string }
    | {
        kind: 'permission_requested';
        requestId: string;
        tool: string;
        input: unknown;
        rationale: string;
        requestedAt: string;
        expiresAt: string;
      }
    | {
        kind: 'permission_decided';
        requestId: string;
        tool: string;
        approved: boolean;
        via: PermissionDecision['via'];
        by?: string;
        note?: string;
        rule?: string;
        /** The `permission` signal that decided, on decisions made by a person. */
        signal?: SignalRecord;
      }
    | {
        kind: 'signal';
        signal: string;
        identity: string;
        payload: unknown;
        /** False when the payload does not parse or the signal is unknown: the run ignored it. */
        valid: boolean;
        problem?: string;
      }
    | { kind: 'cancel_requested'; identity: string; cause: string }
    | { kind: 'state'; state: string }
    | { kind: 'notice'; notice: NotificationKind; text: string; record?: IterationRecord }
    | {
        kind: 'timer';
        timerId: string;
        event: 'started' | 'fired' | 'cancelled';
        /** How long the timer waits, on `started`. */
        seconds?: number;
      }
    | {
        kind: 'activity';
        /** A bookkeeping activity (`dailyUsage`, `releaseWorkspace`, …): what it was given and gave. */
        activity: string;
        summary?: string;
        input: unknown;
        result?: unknown;
        error?: string;
      }
    | { kind: 'continued_as_new'; newRunId: string }
    | {
        kind: 'run_ended';
        outcome: 'completed' | 'failed' | 'terminated' | 'cancelled' | 'timed_out';
        /** `{ exitReason, iterations, usage }` of a completed run. */
        result?: unknown;
        error?: string;
        reason?: string;
        identity?: string;
      }
  );

/** Every kind of audit entry. */
export type AuditEntryKind = AuditEntry['kind'];

// What the history holds, read with zod: a history written by another version of the workflow may
// lack a field, and then its event is kept as a plain `activity` entry rather than misread.

const transcriptMessageSchema = z.looseObject({
  role: z.string(),
  content: z.string().default(''),
  toolCallId: z.string().optional(),
  tool: z.string().optional(),
  success: z.boolean().optional(),
});

const modelTurnInputSchema = z.looseObject({
  baseLength: z.number(),
  callIndex: z.number(),
  append: z.array(transcriptMessageSchema),
  full: z.looseObject({ systemPrompt: z.string(), messages: z.array(z.unknown()) }).optional(),
  /** Notices the turn delivered before calling the model: read like those of `notify`. */
  notices: z.array(z.unknown()).optional(),
});

const modelToolCallSchema = z.looseObject({
  id: z.string(),
  tool: z.string(),
  arguments: z.unknown(),
  rawArguments: z.string().optional(),
});

const modelTurnResultSchema = z.looseObject({
  text: z.string(),
  toolCalls: z.array(modelToolCallSchema).default([]),
  usage: z.looseObject({ inputTokens: z.number(), outputTokens: z.number() }),
  costUsd: z.number().default(0),
});

const toolBatchInputSchema = z.looseObject({
  calls: z.array(z.looseObject({ callId: z.string(), call: modelToolCallSchema })),
});

const toolResultSchema = z.looseObject({
  callId: z.string(),
  success: z.boolean(),
  output: z.string().default(''),
  error: z.string().optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
});

const pendingPermissionSchema = z.looseObject({
  requestId: z.string(),
  tool: z.string(),
  input: z.unknown(),
  rationale: z.string().default(''),
  requestedAt: z.string(),
  expiresAt: z.string(),
});

const decisionSchema = z.looseObject({
  requestId: z.string(),
  tool: z.string(),
  approved: z.boolean(),
  via: z.enum(['signal', 'rule', 'auto-approve', 'timeout']),
  by: z.string().optional(),
  note: z.string().optional(),
  rule: z.string().optional(),
});

const notificationSchema = z.looseObject({
  kind: z.enum(NOTIFICATION_KINDS),
  text: z.string().default(''),
  iteration: z.number().optional(),
  record: z.looseObject({ iteration: z.number() }).optional(),
  request: pendingPermissionSchema.optional(),
  decision: decisionSchema.optional(),
  /** The policy's decisions on a whole batch, on runs that send one notice per batch. */
  decisions: z.array(decisionSchema).optional(),
});

const carriedSchema = z.looseObject({
  iteration: z.number(),
  modelCalls: z.number(),
  usage: z.looseObject({ inputTokens: z.number(), outputTokens: z.number(), costUsd: z.number() }).optional(),
});

/** Signals the run acts on, with the schema the workflow checks their payload against. */
const SIGNAL_SCHEMAS = new Map<string, z.ZodType>([
  ['permission', permissionPayloadSchema],
  ['resume', resumePayloadSchema],
  ['stop', stopPayloadSchema],
]);

/** Payload-less signals the run treats as `{}`. */
const EMPTY_PAYLOAD_ALLOWED = new Set(['resume', 'stop']);

interface ScheduledActivity {
  type: string;
  input: unknown;
  summary: string | undefined;
  iteration: number;
  attempt?: number;
  lastFailure?: string;
}

/**
 * Turns the events of a chain's histories, fed in order, into audit entries. It remembers what the
 * story needs across events (scheduled activities, the tool results already shown, the permission
 * signals a later decision points to, the last state shown), and nothing else, so a history of any
 * length streams through it.
 */
export class AuditReader {
  private iteration = 0;
  private state: string | undefined;
  private lastCallIndex: number | undefined;
  private readonly scheduled = new Map<string, ScheduledActivity>();
  /** Results shown from a tool batch, so the same results read back by the model are not shown twice. */
  private readonly shownResults = new Set<string>();
  private readonly permissionSignals = new Map<string, SignalRecord>();

  constructor(private readonly workflowId: string) {}

  /** The entries one event adds to the story (often none). */
  read(runId: string, event: HistoryEvent): AuditEntry[] {
    const at = eventTime(event);
    const base = { at, runId };
    const eventId = String(event.eventId ?? '');

    const started = event.workflowExecutionStartedEventAttributes;
    if (started) return [this.runStarted(base, started)];

    const scheduled = event.activityTaskScheduledEventAttributes;
    if (scheduled) {
      const activity: ScheduledActivity = {
        type: scheduled.activityType?.name ?? 'unknown',
        input: decodePayload(scheduled.input?.payloads?.[0]),
        summary: event.userMetadata?.summary
          ? asString(decodePayload(event.userMetadata.summary))
          : undefined,
        iteration: this.iteration,
      };
      // `model turn 3.2` names the second call of iteration 3; histories recorded earlier say `model turn 3`.
      const summaryIteration = /^model turn (\d+)(?:\.\d+)?$/.exec(activity.summary ?? '')?.[1];
      if (summaryIteration !== undefined) this.iteration = Number(summaryIteration);
      activity.iteration = this.iteration;
      this.scheduled.set(`${runId}:${eventId}`, activity);
      return this.activityScheduled(base, activity);
    }

    const activityStarted = event.activityTaskStartedEventAttributes;
    if (activityStarted) {
      const activity = this.scheduled.get(`${runId}:${String(activityStarted.scheduledEventId)}`);
      if (activity !== undefined) {
        activity.attempt = activityStarted.attempt ?? undefined;
        if (activityStarted.lastFailure) activity.lastFailure = describeFailure(activityStarted.lastFailure);
      }
      return [];
    }

    const completed = event.activityTaskCompletedEventAttributes;
    if (completed) {
      const activity = this.takeScheduled(runId, completed.scheduledEventId);
      if (activity === undefined) return [];
      return this.activityCompleted(base, activity, decodePayload(completed.result?.payloads?.[0]));
    }
    const failed =
      event.activityTaskFailedEventAttributes ??
      event.activityTaskTimedOutEventAttributes ??
      event.activityTaskCanceledEventAttributes;
    if (failed) {
      const activity = this.takeScheduled(runId, failed.scheduledEventId);
      if (activity === undefined) return [];
      const failure = 'failure' in failed ? failed.failure : undefined;
      return this.activityFailed(
        base,
        activity,
        failure ? describeFailure(failure) : 'cancelled',
        failure?.applicationFailureInfo?.type ?? (failure ? undefined : 'cancelled'),
      );
    }

    const signaled = event.workflowExecutionSignaledEventAttributes;
    if (signaled) return [this.signal(base, signaled)];

    const upsert = event.upsertWorkflowSearchAttributesEventAttributes;
    if (upsert) {
      const fields = upsert.searchAttributes?.indexedFields ?? {};
      const iteration = searchAttributeValue(fields[agentIterationKey.name]);
      if (typeof iteration === 'number') this.iteration = iteration;
      const state = searchAttributeValue(fields[agentStateKey.name]);
      if (typeof state !== 'string' || state === this.state) return [];
      this.state = state;
      return [{ ...base, iteration: this.iteration, kind: 'state', state }];
    }

    const timerStarted = event.timerStartedEventAttributes;
    if (timerStarted) {
      const timeout = timerStarted.startToFireTimeout;
      return [
        {
          ...base,
          iteration: this.iteration,
          kind: 'timer',
          timerId: timerStarted.timerId ?? '',
          event: 'started',
          seconds: timeout ? longToNumber(timeout.seconds) + (timeout.nanos ?? 0) / 1e9 : undefined,
        },
      ];
    }
    const timerFired = event.timerFiredEventAttributes;
    if (timerFired) {
      return [
        {
          ...base,
          iteration: this.iteration,
          kind: 'timer',
          timerId: timerFired.timerId ?? '',
          event: 'fired',
        },
      ];
    }
    const timerCanceled = event.timerCanceledEventAttributes;
    if (timerCanceled) {
      const timerId = timerCanceled.timerId ?? '';
      return [{ ...base, iteration: this.iteration, kind: 'timer', timerId, event: 'cancelled' }];
    }

    const cancelRequested = event.workflowExecutionCancelRequestedEventAttributes;
    if (cancelRequested) {
      return [
        {
          ...base,
          iteration: this.iteration,
          kind: 'cancel_requested',
          identity: cancelRequested.identity ?? '',
          cause: cancelRequested.cause ?? '',
        },
      ];
    }

    const continued = event.workflowExecutionContinuedAsNewEventAttributes;
    if (continued)
      return [{ ...base, kind: 'continued_as_new', newRunId: continued.newExecutionRunId ?? '' }];
    return this.runEnded(base, event);
  }

  private runStarted(
    base: { at: string; runId: string },
    started: temporal.api.history.v1.IWorkflowExecutionStartedEventAttributes,
  ): AuditEntry {
    const [input, carried] = (started.input?.payloads ?? []).map(decodePayload);
    const continuedFrom = started.continuedExecutionRunId || undefined;
    const entry: AuditEntry = {
      ...base,
      kind: 'run_started',
      workflowId: this.workflowId,
      identity: started.identity ?? '',
    };
    if (continuedFrom === undefined) {
      entry.input = isRecord(input) ? input : { value: input };
      this.iteration = 0;
      return entry;
    }
    entry.continuedFrom = continuedFrom;
    const progress = carriedSchema.safeParse(carried);
    if (progress.success) {
      const { iteration, modelCalls, usage } = progress.data;
      entry.carried = { iteration, modelCalls, ...(usage ? { usage } : {}) };
      this.iteration = iteration;
    }
    entry.iteration = this.iteration;
    return entry;
  }

  private takeScheduled(runId: string, scheduledEventId: unknown): ScheduledActivity | undefined {
    const key = `${runId}:${String(scheduledEventId)}`;
    const activity = this.scheduled.get(key);
    this.scheduled.delete(key);
    return activity;
  }

  private activityScheduled(base: { at: string; runId: string }, activity: ScheduledActivity): AuditEntry[] {
    const iterationBase = { ...base, iteration: activity.iteration };
    if (activity.type === 'modelTurn') {
      const parsed = modelTurnInputSchema.safeParse(activity.input);
      if (!parsed.success) return [];
      const { callIndex, append, full, notices = [] } = parsed.data;
      // A resend after the worker lacked the conversation repeats the call: its prompt is shown once.
      if (callIndex === this.lastCallIndex) return [];
      this.lastCallIndex = callIndex;
      const entries: AuditEntry[] = notices.flatMap((notice) =>
        this.notification(base, { ...activity, type: 'notify', input: notice }),
      );
      if (full !== undefined && full.messages.length === 0) {
        entries.push({ ...iterationBase, kind: 'system_prompt', text: full.systemPrompt });
      } else if (full !== undefined) {
        entries.push({
          ...iterationBase,
          kind: 'conversation_sent',
          systemPrompt: full.systemPrompt,
          messages: full.messages,
          callIndex,
        });
      }
      for (const message of append) {
        if (message.role === 'user') {
          entries.push({ ...iterationBase, kind: 'prompt', text: message.content, callIndex });
        } else if (message.role === 'tool' && message.toolCallId !== undefined) {
          const callId = message.toolCallId;
          // A result the tool batch did not give (finish, a refusal, a missing answer): the run's own.
          if (!this.shownResults.delete(callId)) {
            entries.push({
              ...iterationBase,
              kind: 'tool_result',
              callId,
              tool: message.tool ?? 'unknown',
              success: message.success ?? false,
              output: message.content,
              source: 'workflow',
            });
          }
        }
      }
      return entries;
    }
    if (activity.type === 'notify') return this.notification(base, activity);
    return [];
  }

  private notification(base: { at: string; runId: string }, activity: ScheduledActivity): AuditEntry[] {
    const parsed = notificationSchema.safeParse(activity.input);
    if (!parsed.success) {
      return [
        {
          ...base,
          iteration: activity.iteration,
          kind: 'activity',
          activity: 'notify',
          input: activity.input,
        },
      ];
    }
    const notice = parsed.data;
    const iterationBase = { ...base, iteration: notice.iteration ?? activity.iteration };
    if (notice.kind === 'approval_needed' && notice.request !== undefined) {
      const { requestId, tool, input, rationale, requestedAt, expiresAt } = notice.request;
      return [
        {
          ...iterationBase,
          kind: 'permission_requested',
          requestId,
          tool,
          input,
          rationale,
          requestedAt,
          expiresAt,
        },
      ];
    }
    const decisions = notice.decisions ?? (notice.decision === undefined ? [] : [notice.decision]);
    if ((notice.kind === 'decided' || notice.kind === 'auto_approved') && decisions.length > 0) {
      return decisions.map(({ requestId, tool, approved, via, by, note, rule }): AuditEntry => {
        const signal = via === 'signal' ? this.permissionSignals.get(requestId) : undefined;
        this.permissionSignals.delete(requestId);
        return {
          ...iterationBase,
          kind: 'permission_decided',
          requestId,
          tool,
          approved,
          via,
          ...definedFields({ by, note, rule, signal }),
        };
      });
    }
    const record = notice.record as IterationRecord | undefined;
    return [
      {
        ...iterationBase,
        kind: 'notice',
        notice: notice.kind,
        text: notice.text,
        ...definedFields({ record }),
      },
    ];
  }

  private activityCompleted(
    base: { at: string; runId: string },
    activity: ScheduledActivity,
    result: unknown,
  ): AuditEntry[] {
    const iterationBase = { ...base, iteration: activity.iteration };
    if (activity.type === 'modelTurn') {
      const input = modelTurnInputSchema.safeParse(activity.input);
      const answer = modelTurnResultSchema.safeParse(result);
      if (input.success && answer.success) {
        const { text, toolCalls, usage, costUsd } = answer.data;
        const retried = activity.attempt !== undefined && activity.attempt > 1;
        const entries: AuditEntry[] = [
          {
            ...iterationBase,
            kind: 'model_output',
            callIndex: input.data.callIndex,
            text,
            toolCalls: toolCalls.length,
            usage: { inputTokens: usage.inputTokens, outputTokens: usage.outputTokens },
            costUsd,
            ...(retried
              ? definedFields({ attempt: activity.attempt, retriedAfter: activity.lastFailure })
              : {}),
          },
        ];
        for (const call of toolCalls) {
          entries.push({
            ...iterationBase,
            kind: 'tool_call',
            callId: call.id,
            tool: call.tool,
            arguments: call.arguments,
            ...definedFields({ rawArguments: call.rawArguments }),
          });
        }
        return entries;
      }
    }
    if (activity.type === 'toolBatch') {
      const input = toolBatchInputSchema.safeParse(activity.input);
      const results = z.array(toolResultSchema).safeParse(result);
      if (input.success && results.success) {
        const calls = new Map<string, ModelToolCall>(
          input.data.calls.map(({ callId, call }) => [callId, call as ModelToolCall]),
        );
        return results.data.map((toolResult): AuditEntry => {
          const call = calls.get(toolResult.callId);
          const callId = call?.id ?? toolResult.callId;
          this.shownResults.add(callId);
          return {
            ...iterationBase,
            kind: 'tool_result',
            callId,
            tool: call?.tool ?? 'unknown',
            success: toolResult.success,
            output: toolResult.output,
            ...definedFields({ error: toolResult.error, metadata: toolResult.metadata }),
            source: 'sandbox',
            sandboxCallId: toolResult.callId,
          };
        });
      }
    }
    if (activity.type === 'notify') return [];
    return [
      {
        ...iterationBase,
        kind: 'activity',
        activity: activity.type,
        input: activity.input,
        result,
        ...definedFields({ summary: activity.summary }),
      },
    ];
  }

  private activityFailed(
    base: { at: string; runId: string },
    activity: ScheduledActivity,
    error: string,
    failureType: string | undefined,
  ): AuditEntry[] {
    const iterationBase = { ...base, iteration: activity.iteration };
    if (activity.type === 'modelTurn') {
      const input = modelTurnInputSchema.safeParse(activity.input);
      return [
        {
          ...iterationBase,
          kind: 'model_failed',
          error,
          ...definedFields({
            callIndex: input.success ? input.data.callIndex : undefined,
            failureType,
            attempt: activity.attempt,
          }),
        },
      ];
    }
    if (activity.type === 'toolBatch') {
      const input = toolBatchInputSchema.safeParse(activity.input);
      if (input.success) {
        return input.data.calls.map(({ callId, call }): AuditEntry => {
          this.shownResults.add(call.id);
          return {
            ...iterationBase,
            kind: 'tool_failed',
            callId: call.id,
            tool: call.tool,
            error,
            sandboxCallId: callId,
          };
        });
      }
    }
    return [
      {
        ...iterationBase,
        kind: 'activity',
        activity: activity.type,
        input: activity.input,
        error,
        ...definedFields({ summary: activity.summary }),
      },
    ];
  }

  private signal(
    base: { at: string; runId: string },
    signaled: temporal.api.history.v1.IWorkflowExecutionSignaledEventAttributes,
  ): AuditEntry {
    const signal = signaled.signalName ?? '';
    const payloads = signaled.input?.payloads ?? [];
    const payload = payloads.length > 0 ? decodePayload(payloads[0]) : undefined;
    const identity = signaled.identity ?? '';
    const schema = SIGNAL_SCHEMAS.get(signal);
    let problem: string | undefined;
    if (schema === undefined) {
      problem = `unknown signal '${signal}': the run ignores it (it acts on ${[...SIGNAL_SCHEMAS.keys()].join(', ')})`;
    } else {
      const parsed = schema.safeParse(
        payload === undefined && EMPTY_PAYLOAD_ALLOWED.has(signal) ? {} : payload,
      );
      if (!parsed.success) problem = `invalid payload: ${describeZodError(parsed.error)}`;
      else if (signal === 'permission') {
        const decision = parsed.data as z.infer<typeof permissionPayloadSchema>;
        // The first decision a request receives is the one that counts; later ones are ignored.
        if (decision.approve !== undefined && !this.permissionSignals.has(decision.requestId)) {
          this.permissionSignals.set(decision.requestId, {
            at: base.at,
            identity,
            ...definedFields({ by: decision.by, note: decision.note }),
          });
        }
      }
    }
    return {
      ...base,
      iteration: this.iteration,
      kind: 'signal',
      signal,
      identity,
      payload,
      valid: problem === undefined,
      ...definedFields({ problem }),
    };
  }

  private runEnded(base: { at: string; runId: string }, event: HistoryEvent): AuditEntry[] {
    const ended = { ...base, iteration: this.iteration, kind: 'run_ended' as const };
    const completed = event.workflowExecutionCompletedEventAttributes;
    if (completed)
      return [{ ...ended, outcome: 'completed', result: decodePayload(completed.result?.payloads?.[0]) }];
    const failed = event.workflowExecutionFailedEventAttributes;
    if (failed) {
      return [
        { ...ended, outcome: 'failed', error: failed.failure ? describeFailure(failed.failure) : 'failed' },
      ];
    }
    const terminated = event.workflowExecutionTerminatedEventAttributes;
    if (terminated) {
      return [
        {
          ...ended,
          outcome: 'terminated',
          reason: terminated.reason ?? '',
          identity: terminated.identity ?? '',
        },
      ];
    }
    if (event.workflowExecutionCanceledEventAttributes) return [{ ...ended, outcome: 'cancelled' }];
    if (event.workflowExecutionTimedOutEventAttributes) return [{ ...ended, outcome: 'timed_out' }];
    return [];
  }
}

/** The audit entries of a resolved chain, execution after execution. */
export async function* chainEntries(client: Client, chain: RunChain): AsyncGenerator<AuditEntry> {
  const reader = new AuditReader(chain.workflowId);
  let first = true;
  for (const runId of chain.runIds) {
    for await (const event of historyEvents(client, chain.workflowId, runId)) {
      for (const entry of reader.read(runId, event)) {
        yield entry;
        if (first && entry.kind === 'run_started' && chain.missingRunId !== undefined) {
          yield { at: entry.at, runId, kind: 'earlier_runs_missing', missingRunId: chain.missingRunId };
        }
        first = false;
      }
    }
  }
}

/**
 * The story of the latest run of `workflowId` (or of the chain that ends in `runId`) across its
 * continue-as-new chain, streamed from the history page by page. Fails with an `AgentsError`
 * (`not_found`) when there is no such run.
 */
export async function* auditEntries(
  client: Client,
  workflowId: string,
  options: { runId?: string } = {},
): AsyncGenerator<AuditEntry> {
  yield* chainEntries(client, await resolveRunChain(client, workflowId, options));
}

function asString(value: unknown): string | undefined {
  return typeof value === 'string' ? value : undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The fields whose value is defined, so absent ones stay out of the JSON. */
function definedFields<T extends Record<string, unknown>>(fields: T): Partial<T> {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined)) as Partial<T>;
}
