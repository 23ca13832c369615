import type { Client, WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import type { ModelTurnInput } from '../../activities';
import { workflowIdFor } from '../../client/agents-client';
import { auditEntries, type AuditEntry } from '../../client/audit/audit-entries';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/** A scheduled activity as the history shows it: its input and its Web UI summary. */
export interface ScheduledActivity<Input> {
  input: Input;
  summary: string | undefined;
}

/** A scheduled model activity as the history shows it. */
export type ScheduledModelTurn = ScheduledActivity<ModelTurnInput>;

/** Every activity of `activityType` the workflow scheduled, in order, decoded from the history. */
export async function scheduledActivities<Input>(
  handle: WorkflowHandle,
  activityType: string,
): Promise<Array<ScheduledActivity<Input>>> {
  const history = await handle.fetchHistory();
  return (history.events ?? []).flatMap((event: HistoryEvent) => {
    const attributes = event.activityTaskScheduledEventAttributes;
    const payload = attributes?.input?.payloads?.[0];
    if (attributes?.activityType?.name !== activityType || payload === undefined) return [];
    const summaryPayload = event.userMetadata?.summary;
    return [
      {
        input: defaultPayloadConverter.fromPayload<Input>(payload),
        summary:
          summaryPayload === null || summaryPayload === undefined
            ? undefined
            : defaultPayloadConverter.fromPayload<string>(summaryPayload),
      },
    ];
  });
}

/** The inputs of every activity of `activityType` the workflow scheduled, in order. */
export async function scheduledInputs<Input>(handle: WorkflowHandle, activityType: string): Promise<Input[]> {
  return (await scheduledActivities<Input>(handle, activityType)).map((activity) => activity.input);
}

/** Every model activity the workflow scheduled, in order. */
export async function scheduledModelTurns(handle: WorkflowHandle): Promise<ScheduledModelTurn[]> {
  return scheduledActivities<ModelTurnInput>(handle, 'modelTurn');
}

/** The first argument of every signal named `signalName` the workflow received, in order. */
export async function signalInputs<Input>(handle: WorkflowHandle, signalName: string): Promise<Input[]> {
  const history = await handle.fetchHistory();
  return (history.events ?? []).flatMap((event: HistoryEvent) => {
    const attributes = event.workflowExecutionSignaledEventAttributes;
    const payload = attributes?.input?.payloads?.[0];
    if (attributes?.signalName !== signalName || payload === undefined) return [];
    return [defaultPayloadConverter.fromPayload<Input>(payload)];
  });
}

/** Counts the history events of each kind named, e.g. `activityTaskCompletedEventAttributes`. */
export async function countEvents(
  handle: WorkflowHandle,
  attributesField: keyof HistoryEvent,
): Promise<number> {
  const history = await handle.fetchHistory();
  return (history.events ?? []).filter((event) => event[attributesField] != null).length;
}

/** The IDs of the scheduled events of one activity type. */
function scheduledIdsOfType(events: HistoryEvent[], activityType: string): Set<string> {
  return new Set(
    events
      .filter((event) => event.activityTaskScheduledEventAttributes?.activityType?.name === activityType)
      .map((event) => String(event.eventId)),
  );
}

/** The completed activities of one type (e.g. `modelTurn`), matched to their scheduled events. */
export function completedActivitiesOfType(events: HistoryEvent[], activityType: string): HistoryEvent[] {
  const scheduledOfType = scheduledIdsOfType(events, activityType);
  return events.filter((event) => {
    const scheduledEventId = event.activityTaskCompletedEventAttributes?.scheduledEventId;
    return scheduledEventId != null && scheduledOfType.has(String(scheduledEventId));
  });
}

/**
 * The started events of the activities of `activityType`, in order. The server writes one per
 * activity, for its last attempt: its attempt number, identity and the failure of the attempt before.
 */
export async function activityStarts(
  handle: WorkflowHandle,
  activityType: string,
): Promise<temporal.api.history.v1.IActivityTaskStartedEventAttributes[]> {
  const events = (await handle.fetchHistory()).events ?? [];
  const scheduledOfType = scheduledIdsOfType(events, activityType);
  return events.flatMap((event) => {
    const started = event.activityTaskStartedEventAttributes;
    return started != null && scheduledOfType.has(String(started.scheduledEventId)) ? [started] : [];
  });
}

/** The attempt on which each activity of `activityType` ended, in order: 1 when it was not retried. */
export async function finalAttempts(handle: WorkflowHandle, activityType: string): Promise<number[]> {
  return (await activityStarts(handle, activityType)).map((started) => started.attempt ?? 1);
}

/** A tool result as the run's audit (`agents export`) records it. */
export type AuditToolResult = Extract<AuditEntry, { kind: 'tool_result' }>;

/** The tool results of a run's audit, in order. */
export async function auditToolResults(client: Client, name: string): Promise<AuditToolResult[]> {
  const results: AuditToolResult[] = [];
  for await (const entry of auditEntries(client, workflowIdFor(name))) {
    if (entry.kind === 'tool_result') results.push(entry);
  }
  return results;
}
