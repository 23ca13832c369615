import type { WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import type { ModelTurnInput } from '../../activities';

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/** A scheduled model activity as the history shows it: its input and its Web UI summary. */
export interface ScheduledModelTurn {
  input: ModelTurnInput;
  summary: string | undefined;
}

/** Every model activity the workflow scheduled, in order, decoded from the history. */
export async function scheduledModelTurns(handle: WorkflowHandle): Promise<ScheduledModelTurn[]> {
  const history = await handle.fetchHistory();
  return (history.events ?? []).flatMap((event: HistoryEvent) => {
    const attributes = event.activityTaskScheduledEventAttributes;
    if (attributes?.activityType?.name !== 'modelTurn') return [];
    const payload = attributes.input?.payloads?.[0];
    if (payload === undefined) return [];
    const summaryPayload = event.userMetadata?.summary;
    return [
      {
        input: defaultPayloadConverter.fromPayload<ModelTurnInput>(payload),
        summary:
          summaryPayload === null || summaryPayload === undefined
            ? undefined
            : defaultPayloadConverter.fromPayload<string>(summaryPayload),
      },
    ];
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

/** The completed activities of one type (e.g. `modelTurn`), matched to their scheduled events. */
export function completedActivitiesOfType(events: HistoryEvent[], activityType: string): HistoryEvent[] {
  const scheduledOfType = new Set(
    events
      .filter((event) => event.activityTaskScheduledEventAttributes?.activityType?.name === activityType)
      .map((event) => String(event.eventId)),
  );
  return events.filter((event) => {
    const scheduledEventId = event.activityTaskCompletedEventAttributes?.scheduledEventId;
    return scheduledEventId != null && scheduledOfType.has(String(scheduledEventId));
  });
}
