import { type Client, isGrpcServiceError, WorkflowNotFoundError } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { z } from 'zod';
import { agentNameSchema, describeZodError } from '../common/agent-input';
import type { IterationRecord, ModelToolCall, RunUsage } from '../common/agent-run-types';
import { WORKFLOW_ID_PREFIX, WORKFLOW_TYPE } from '../common/constants';
import {
  markdownCode,
  markdownFence,
  markdownText,
  terminalSafeJson,
  visibleJson,
} from '../common/display-text';
import { permissionPayloadSchema, resumePayloadSchema, stopPayloadSchema } from '../common/messages';
import { NOTIFICATION_KINDS, type NotificationKind, type PermissionDecision } from '../common/notification';
import { agentIterationKey, agentStateKey } from '../common/search-attributes';
import { workflowIdFor } from './agents-client';
import { AgentsError } from './errors';

/**
 * The audit of an agent run, rebuilt from its Temporal history alone: every prompt, model output,
 * tool call and result, permission decision, signal (with who sent it) and state change, across the
 * executions that continue-as-new chains together. Nothing here asks a worker: a run is auditable
 * when every worker is gone, and the history is the record nobody can edit.
 */

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;
type Payload = temporal.api.common.v1.IPayload;
type Failure = temporal.api.failure.v1.IFailure;

/** Events asked for per history page: a long run streams page by page instead of loading whole. */
const HISTORY_PAGE_SIZE = 500;

/** gRPC status of a history the server does not have (any more). */
const GRPC_NOT_FOUND = 5;

/** Markdown shows this many characters of a long text; the jsonl export always has all of it. */
export const MARKDOWN_MAX_CHARS = 4000;

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
    | { kind: 'tool_call'; callId: string; tool: string; arguments: unknown }
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

/** The executions of one continue-as-new chain, oldest first. */
export interface RunChain {
  workflowId: string;
  namespace: string;
  runIds: string[];
  /** The run the oldest known execution continues, when the server no longer has it. */
  missingRunId?: string;
}

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
});

const modelToolCallSchema = z.looseObject({ id: z.string(), tool: z.string(), arguments: z.unknown() });

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
});

const carriedSchema = z.looseObject({
  iteration: z.number(),
  modelCalls: z.number(),
  usage: z.looseObject({ inputTokens: z.number(), outputTokens: z.number(), costUsd: z.number() }).optional(),
});

/** Temporal's run IDs: UUIDs of any version. */
const runIdSchema = z.guid();

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
      const summaryIteration = /^model turn (\d+)$/.exec(activity.summary ?? '')?.[1];
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
      const { callIndex, append, full } = parsed.data;
      // A resend after the worker lacked the conversation repeats the call: its prompt is shown once.
      if (callIndex === this.lastCallIndex) return [];
      this.lastCallIndex = callIndex;
      const entries: AuditEntry[] = [];
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
    if ((notice.kind === 'decided' || notice.kind === 'auto_approved') && notice.decision !== undefined) {
      const { requestId, tool, approved, via, by, note, rule } = notice.decision;
      const signal = via === 'signal' ? this.permissionSignals.get(requestId) : undefined;
      this.permissionSignals.delete(requestId);
      return [
        {
          ...iterationBase,
          kind: 'permission_decided',
          requestId,
          tool,
          approved,
          via,
          ...definedFields({ by, note, rule, signal }),
        },
      ];
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

/**
 * The chain a run belongs to, oldest execution first: from the latest execution of the workflow
 * (or the one `runId` names) back through `continuedExecutionRunId`. A run started again with
 * `--replace` begins a new chain, so only the latest run's executions are told.
 */
export async function resolveRunChain(
  client: Client,
  workflowId: string,
  options: { runId?: string } = {},
): Promise<RunChain> {
  const namespace = client.options.namespace;
  const name = workflowId.startsWith(WORKFLOW_ID_PREFIX)
    ? workflowId.slice(WORKFLOW_ID_PREFIX.length)
    : workflowId;
  if (options.runId !== undefined && !runIdSchema.safeParse(options.runId).success) {
    throw new AgentsError(
      'invalid_argument',
      `Invalid run ID '${options.runId}': must be a UUID, as \`agents list\` and the Web UI show`,
    );
  }
  const which = options.runId === undefined ? '' : ` with run ID ${options.runId}`;
  let description;
  try {
    description = await client.workflow.getHandle(workflowId, options.runId).describe();
  } catch (error) {
    if (
      error instanceof WorkflowNotFoundError ||
      (isGrpcServiceError(error) && Number(error.code) === GRPC_NOT_FOUND)
    ) {
      throw new AgentsError(
        'not_found',
        `No agent run '${name}'${which} (workflow ${workflowId}) in namespace ${namespace}`,
        { cause: error },
      );
    }
    throw error;
  }
  if (description.type !== WORKFLOW_TYPE) {
    throw new AgentsError(
      'not_found',
      `Workflow ${workflowId} in namespace ${namespace} is a '${description.type}', not an agent run`,
    );
  }
  const runIds = [description.runId];
  const seen = new Set(runIds);
  for (;;) {
    const oldest = runIds[0]!;
    const [first] = await firstEvents(client, workflowId, oldest);
    const previous = first?.workflowExecutionStartedEventAttributes?.continuedExecutionRunId;
    if (!previous || seen.has(previous)) return { workflowId, namespace, runIds };
    try {
      await firstEvents(client, workflowId, previous);
    } catch (error) {
      if (isGrpcServiceError(error) && Number(error.code) === GRPC_NOT_FOUND) {
        return { workflowId, namespace, runIds, missingRunId: previous };
      }
      throw error;
    }
    seen.add(previous);
    runIds.unshift(previous);
  }
}

async function firstEvents(client: Client, workflowId: string, runId: string): Promise<HistoryEvent[]> {
  const response = await client.workflowService.getWorkflowExecutionHistory({
    namespace: client.options.namespace,
    execution: { workflowId, runId },
    maximumPageSize: 1,
  });
  return response.history?.events ?? [];
}

/** The events of one execution, page by page, so a long history never sits in memory whole. */
async function* historyEvents(
  client: Client,
  workflowId: string,
  runId: string,
): AsyncGenerator<HistoryEvent> {
  let nextPageToken: Uint8Array | undefined;
  do {
    const response = await client.workflowService.getWorkflowExecutionHistory({
      namespace: client.options.namespace,
      execution: { workflowId, runId },
      maximumPageSize: HISTORY_PAGE_SIZE,
      nextPageToken,
    });
    yield* response.history?.events ?? [];
    nextPageToken = response.nextPageToken?.length ? response.nextPageToken : undefined;
  } while (nextPageToken !== undefined);
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

/** Export formats: one JSON object per line for tools, or Markdown for people. */
export type ExportFormat = 'jsonl' | 'md';

/**
 * The export of agent `name` as text chunks in `format`, for `agents export`. The run is found
 * before this resolves, so a missing run fails before anything is written.
 */
export async function exportRun(
  client: Client,
  name: string,
  options: { format: ExportFormat; runId?: string },
): Promise<AsyncGenerator<string>> {
  const parsed = agentNameSchema.safeParse(name);
  if (!parsed.success) {
    throw new AgentsError(
      'invalid_argument',
      `Invalid agent name '${name}': ${describeZodError(parsed.error)}`,
    );
  }
  const chain = await resolveRunChain(client, workflowIdFor(name), options);
  const entries = chainEntries(client, chain);
  return options.format === 'md' ? formatMarkdown(entries) : jsonlLines(entries);
}

async function* jsonlLines(entries: AsyncIterable<AuditEntry>): AsyncGenerator<string> {
  for await (const entry of entries) yield formatJsonl(entry);
}

/**
 * One entry as a line of JSON Lines, newline included, every field in full: characters a terminal
 * would obey or hide are JSON `\u` escapes, the same data to a parser.
 */
export function formatJsonl(entry: AuditEntry): string {
  return `${terminalSafeJson(entry)}\n`;
}

/**
 * The story as Markdown, chunk by chunk: the run's input, then each iteration under its own heading
 * with its prompt, model output, tool calls and results, decisions, signals and state changes, and
 * the end. Texts longer than {@link MARKDOWN_MAX_CHARS} are cut, saying how much the jsonl adds.
 */
export async function* formatMarkdown(
  entries: AsyncIterable<AuditEntry> | Iterable<AuditEntry>,
): AsyncGenerator<string> {
  let heading = 0;
  let titled = false;
  for await (const entry of entries) {
    if (!titled && entry.kind === 'run_started') {
      titled = true;
      const name = entry.input?.name ?? entry.workflowId;
      yield `# Audit of agent run ${code(name)}\n\nWorkflow ${code(entry.workflowId)}, told from its Temporal history.\n\n`;
    }
    if (entry.iteration !== undefined && entry.iteration > heading && entry.kind !== 'run_started') {
      heading = entry.iteration;
      yield `## Iteration ${heading}\n\n`;
    }
    yield markdownOf(entry);
  }
}

/** One entry as Markdown: a paragraph ending in a blank line. */
function markdownOf(entry: AuditEntry): string {
  const at = `at ${entry.at}`;
  switch (entry.kind) {
    case 'run_started': {
      if (entry.continuedFrom !== undefined) {
        const carried =
          entry.carried === undefined ? '' : `, carrying on after iteration ${entry.carried.iteration}`;
        return `_Execution ${code(entry.runId)} started ${at}${carried}._\n\n`;
      }
      const input = entry.input ?? {};
      const lines = [
        `## Run started`,
        '',
        `- Run ${code(entry.runId)} started ${at} by ${code(entry.identity)}`,
        `- Template: ${code(input.template?.name ?? '?')} (${oneLine(input.template?.source ?? '?')})`,
        `- Args: ${input.args ? code(input.args) : '(none)'}`,
        `- Model: ${oneLine(input.model?.provider ?? '?')}`,
        `- Interval: ${oneLine(String(input.intervalS ?? '?'))} s · max iterations: ${oneLine(String(input.maxIterations ?? 'none'))} · permissions: ${oneLine(input.permissions?.mode ?? '?')}`,
      ];
      return `${lines.join('\n')}\n\n`;
    }
    case 'earlier_runs_missing':
      return `_Earlier executions (the last of them ${code(entry.missingRunId)}) are no longer on the server: the story starts here._\n\n`;
    case 'system_prompt':
      return `**System prompt** ${at}\n\n${fenced(entry.text)}`;
    case 'conversation_sent':
      return `**Conversation compacted or resent** ${at}: the model was given the whole conversation again (${entry.messages.length} messages, in full in the jsonl export).\n\n`;
    case 'prompt':
      return `**Prompt** ${at}\n\n${fenced(entry.text)}`;
    case 'model_output': {
      const usage = `${entry.usage.inputTokens} → ${entry.usage.outputTokens} tokens, ${dollars(entry.costUsd)}`;
      const retried =
        entry.attempt === undefined
          ? ''
          : ` (attempt ${entry.attempt}${entry.retriedAfter ? `, after: ${oneLine(entry.retriedAfter)}` : ''})`;
      const text = entry.text === '' ? '_(no text)_\n\n' : fenced(entry.text);
      return `**Model output** ${at} · ${usage}${retried}\n\n${text}`;
    }
    case 'model_failed':
      return `**Model call failed** ${at}${entry.failureType ? ` (${oneLine(entry.failureType)})` : ''}: ${oneLine(entry.error)}\n\n`;
    case 'tool_call':
      return `**Tool call** ${code(entry.tool)} (${code(entry.callId)})\n\n${fenced(visibleJson(entry.arguments ?? null, 2), 'json')}`;
    case 'tool_result': {
      const outcome = entry.success ? 'succeeded' : 'failed';
      const source = entry.source === 'workflow' ? ', given by the run' : '';
      const error = entry.error ? `Error: ${oneLine(entry.error)}\n\n` : '';
      const output = entry.output === '' ? '_(no output)_\n\n' : fenced(entry.output);
      return `**Tool result** ${code(entry.tool)} (${code(entry.callId)}) ${outcome}${source} ${at}\n\n${error}${output}`;
    }
    case 'tool_failed':
      return `**Tool call failed** ${code(entry.tool)} (${code(entry.callId)}) ${at}: ${oneLine(entry.error)}\n\n`;
    case 'permission_requested':
      return (
        `**Permission requested** ${code(entry.requestId)} for ${code(entry.tool)} ${at}, until ${oneLine(entry.expiresAt)}` +
        `${entry.rationale ? `: ${oneLine(entry.rationale)}` : ''}\n\n${fenced(visibleJson(entry.input ?? null, 2), 'json')}`
      );
    case 'permission_decided': {
      // Calls decided without asking are named by their call ID, which the tool result shows already.
      const request = entry.requestId.startsWith('pr_') ? `${code(entry.requestId)} ` : '';
      return `**${entry.approved ? 'Approved' : 'Denied'}** ${request}(${code(entry.tool)}) ${decisionText(entry)}\n\n`;
    }
    case 'signal': {
      const payload = entry.payload === undefined ? 'no payload' : code(JSON.stringify(entry.payload));
      const ignored = entry.valid ? '' : ` — ignored: ${oneLine(entry.problem ?? 'invalid')}`;
      return `- Signal ${code(entry.signal)} from ${code(entry.identity)} ${at}: ${payload}${ignored}\n\n`;
    }
    case 'cancel_requested':
      return `- Cancellation requested by ${code(entry.identity)} ${at}${entry.cause ? `: ${oneLine(entry.cause)}` : ''}\n\n`;
    case 'state':
      return `- State → ${code(entry.state)} ${at}\n\n`;
    case 'notice':
      return `- Notice (${oneLine(entry.notice)}) ${at}: ${oneLine(entry.text)}\n\n`;
    case 'timer':
      if (entry.event === 'started')
        return `- Timer ${entry.timerId} started ${at}: ${entry.seconds ?? '?'} s\n\n`;
      return `- Timer ${entry.timerId} ${entry.event === 'fired' ? 'fired' : 'cancelled (woken early)'} ${at}\n\n`;
    case 'activity':
      // The daily ledger's bookkeeping is in the jsonl export; only its failures matter to a reader.
      if (entry.activity === 'dailyUsage' && entry.error === undefined) return '';
      return `- ${code(entry.activity)}${entry.summary ? ` (${oneLine(entry.summary)})` : ''} ${entry.error ? `failed: ${oneLine(entry.error)}` : 'done'} ${at}\n\n`;
    case 'continued_as_new':
      return `---\n\n_Execution ${code(entry.runId)} continued as new ${at}._\n\n`;
    case 'run_ended':
      return `## End\n\n${endText(entry)}\n`;
  }
}

function decisionText(entry: Extract<AuditEntry, { kind: 'permission_decided' }>): string {
  const note = entry.note ? ` — "${oneLine(entry.note)}"` : '';
  switch (entry.via) {
    case 'signal': {
      const who = entry.by ?? entry.signal?.by ?? 'someone';
      const identity = entry.signal ? ` (identity ${oneLine(entry.signal.identity)})` : '';
      return `by ${oneLine(who)}${identity} at ${entry.signal?.at ?? entry.at}${note}`;
    }
    case 'rule':
      return `by rule ${entry.rule ? code(entry.rule) : '(unnamed)'} at ${entry.at}${note}`;
    case 'auto-approve':
      return `automatically (mode auto-approve) at ${entry.at}${note}`;
    case 'timeout':
      return `on timeout at ${entry.at}: nobody decided in time${note}`;
  }
}

function endText(entry: Extract<AuditEntry, { kind: 'run_ended' }>): string {
  const at = `at ${entry.at}`;
  switch (entry.outcome) {
    case 'completed': {
      const result = z
        .looseObject({
          exitReason: z.string(),
          iterations: z.number(),
          usage: z.looseObject({ inputTokens: z.number(), outputTokens: z.number(), costUsd: z.number() }),
        })
        .safeParse(entry.result);
      if (!result.success) return `The run completed ${at}.\n`;
      const { exitReason, iterations, usage } = result.data;
      return (
        `The run completed ${at}: exit reason ${code(exitReason)} after ${iterations} iterations, ` +
        `${usage.inputTokens} → ${usage.outputTokens} tokens, ${dollars(usage.costUsd)}.\n`
      );
    }
    case 'failed':
      return `The run failed ${at}: ${oneLine(entry.error ?? '')}\n`;
    case 'terminated':
      return `The run was terminated ${at} by ${code(entry.identity ?? '')}: ${oneLine(entry.reason ?? '')}\n`;
    case 'cancelled':
      return `The run was cancelled ${at}.\n`;
    case 'timed_out':
      return `The run timed out ${at}.\n`;
  }
}

/**
 * A fenced block that no backtick run inside `text` can close early, with controls and invisible
 * characters shown as escapes; long texts cut with a note.
 */
function fenced(text: string, language = 'text'): string {
  const cut = text.length > MARKDOWN_MAX_CHARS ? text.slice(0, MARKDOWN_MAX_CHARS) : text;
  const rest = text.length - cut.length;
  const note = rest > 0 ? `(${rest} more characters in the jsonl export)\n\n` : '';
  return `${markdownFence(cut, language)}\n\n${note}`;
}

/** A name, ID or short text as an inline code span, on one line and neutralized. */
function code(text: string): string {
  return markdownCode(cutLine(text.replace(/[ \t\r\n]+/g, ' ').trim()));
}

/** History text as Markdown prose: one line, neutralized, with Markdown and HTML escaped. */
function oneLine(text: string): string {
  return markdownText(cutLine(text));
}

function cutLine(text: string): string {
  return text.length > 500 ? `${text.slice(0, 499)}…` : text;
}

function dollars(amount: number): string {
  return `$${amount.toFixed(4)}`;
}

function eventTime(event: HistoryEvent): string {
  const time = event.eventTime;
  if (!time) return '';
  return new Date(longToNumber(time.seconds) * 1000 + Math.floor((time.nanos ?? 0) / 1e6)).toISOString();
}

function longToNumber(value: number | { toNumber(): number } | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}

/** A payload's value; one the default converter cannot read is described rather than dropped. */
function decodePayload(payload: Payload | null | undefined): unknown {
  if (payload === null || payload === undefined) return undefined;
  try {
    return defaultPayloadConverter.fromPayload(payload);
  } catch {
    const encoding = payload.metadata?.encoding
      ? Buffer.from(payload.metadata.encoding).toString()
      : 'unknown';
    return { undecodable: `a payload with encoding '${encoding}'` };
  }
}

/** A search attribute's value: one value, or the first of the list older SDKs wrote. */
function searchAttributeValue(payload: Payload | null | undefined): unknown {
  const value = decodePayload(payload);
  return Array.isArray(value) ? value[0] : value;
}

function describeFailure(failure: Failure): string {
  const messages: string[] = [];
  for (let current: Failure | null | undefined = failure; current; current = current.cause) {
    if (current.message) messages.push(current.message);
  }
  return messages.join(': ') || 'failed';
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
