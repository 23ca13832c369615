/**
 * Where the time of an agent run goes, read from its history: the critical path between two
 * events, walked back from the later one through the workflow tasks, activities and server steps
 * that led to it, each segment named for what the run waited on.
 */
import type { temporal } from '@temporalio/proto';
import { eventTimeMs, formatTable, percentile } from './report';

/** A history event as the client returns it. */
export type HistoryEvent = temporal.api.history.v1.IHistoryEvent;
type Long = NonNullable<Exclude<HistoryEvent['eventId'], number>>;

/** The activity each iteration starts with. */
const ITERATION_ACTIVITY = 'modelTurn';

interface Event {
  id: number;
  timeMs: number;
  raw: HistoryEvent;
}

/** A named stretch of a critical path. */
export interface Segment {
  label: string;
  ms: number;
}

/** One iteration's critical path and what else happened during it. */
export interface IterationProfile {
  iteration: number;
  totalMs: number;
  segments: Segment[];
  /** Workflow tasks completed in the iteration, on the path or not. */
  workflowTasks: number;
  /** Activities scheduled in the iteration, by type. */
  activities: Record<string, number>;
}

/** An event ID as a number (the proto gives a Long). */
function idOf(value: number | Long | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}

/** The type of the activity scheduled as event `scheduledId`. */
function activityTypeOf(events: Map<number, Event>, scheduledId: number): string {
  return events.get(scheduledId)?.raw.activityTaskScheduledEventAttributes?.activityType?.name ?? 'activity';
}

/**
 * Walks back from the workflow task that completed as event `completedId` to the moment `untilMs`,
 * pushing the segments it crosses (latest first). Stops at an event before `untilMs`, or at one it
 * cannot trace further (a signal, a timer), whose wait it names.
 */
function walkBack(
  events: Map<number, Event>,
  completedId: number,
  untilMs: number,
  segments: Segment[],
): void {
  let current = events.get(completedId);
  while (current !== undefined && current.timeMs > untilMs) {
    const completed = current.raw.workflowTaskCompletedEventAttributes;
    if (completed === null || completed === undefined) {
      segments.push({ label: `other: ${eventKind(current.raw)}`, ms: current.timeMs - untilMs });
      return;
    }
    const started = events.get(idOf(completed.startedEventId));
    const scheduled = events.get(idOf(completed.scheduledEventId));
    if (started === undefined || scheduled === undefined) return;
    // The server writes a workflow task's scheduled event right after the event that caused it.
    const cause = events.get(scheduled.id - 1);
    const task = `workflow task after ${cause === undefined ? 'start' : causeName(events, cause.raw)}`;
    segments.push({ label: `${task}: run on the worker`, ms: current.timeMs - started.timeMs });
    segments.push({ label: `${task}: schedule-to-start`, ms: started.timeMs - scheduled.timeMs });
    if (cause === undefined || cause.timeMs <= untilMs) {
      if (scheduled.timeMs > untilMs) {
        segments.push({ label: 'server: before the workflow task', ms: scheduled.timeMs - untilMs });
      }
      return;
    }
    const activityCompleted =
      cause.raw.activityTaskCompletedEventAttributes ?? cause.raw.activityTaskFailedEventAttributes;
    if (activityCompleted !== null && activityCompleted !== undefined) {
      const type = activityTypeOf(events, idOf(activityCompleted.scheduledEventId));
      const activityStarted = events.get(idOf(activityCompleted.startedEventId));
      const activityScheduled = events.get(idOf(activityCompleted.scheduledEventId));
      segments.push({ label: 'server: completion to workflow task', ms: scheduled.timeMs - cause.timeMs });
      if (activityStarted === undefined || activityScheduled === undefined) return;
      segments.push({ label: `${type}: run`, ms: cause.timeMs - activityStarted.timeMs });
      const scheduleToStartMs = activityStarted.timeMs - Math.max(activityScheduled.timeMs, untilMs);
      segments.push({ label: `${type}: schedule-to-start`, ms: scheduleToStartMs });
      if (activityScheduled.timeMs <= untilMs) return;
      current = events.get(
        idOf(activityScheduled.raw.activityTaskScheduledEventAttributes?.workflowTaskCompletedEventId),
      );
      continue;
    }
    if (
      cause.raw.workflowTaskCompletedEventAttributes !== null &&
      cause.raw.workflowTaskCompletedEventAttributes !== undefined
    ) {
      segments.push({ label: 'server: between workflow tasks', ms: scheduled.timeMs - cause.timeMs });
      current = cause;
      continue;
    }
    segments.push({ label: `waited on: ${eventKind(cause.raw)}`, ms: scheduled.timeMs - untilMs });
    return;
  }
}

/** What caused a workflow task: an activity's type, or the kind of the event. */
function causeName(events: Map<number, Event>, cause: HistoryEvent): string {
  const closed = cause.activityTaskCompletedEventAttributes ?? cause.activityTaskFailedEventAttributes;
  return closed === null || closed === undefined
    ? eventKind(cause)
    : activityTypeOf(events, idOf(closed.scheduledEventId));
}

/** The name of an event's kind, from its attributes field: `activityTaskCompleted`. */
function eventKind(event: HistoryEvent): string {
  const field = Object.keys(event).find(
    (key) => key.endsWith('EventAttributes') && event[key as keyof HistoryEvent] != null,
  );
  return field?.replace(/EventAttributes$/, '') ?? 'event';
}

/** Every full iteration of a history: from one `modelTurn` scheduled to the next. */
export function profileIterations(history: HistoryEvent[]): IterationProfile[] {
  const ordered = history.map((raw) => ({ id: idOf(raw.eventId), timeMs: eventTimeMs(raw), raw }));
  const events = new Map(ordered.map((event) => [event.id, event]));
  const starts = ordered.filter(
    (event) => event.raw.activityTaskScheduledEventAttributes?.activityType?.name === ITERATION_ACTIVITY,
  );
  return starts.slice(1).map((next, index) => {
    const previous = starts[index] as Event;
    const segments: Segment[] = [];
    const completedId = idOf(next.raw.activityTaskScheduledEventAttributes?.workflowTaskCompletedEventId);
    walkBack(events, completedId, previous.timeMs, segments);
    const within = ordered.filter((event) => event.timeMs >= previous.timeMs && event.timeMs < next.timeMs);
    const activities: Record<string, number> = {};
    for (const event of within) {
      const type = event.raw.activityTaskScheduledEventAttributes?.activityType?.name;
      if (typeof type === 'string') activities[type] = (activities[type] ?? 0) + 1;
    }
    return {
      iteration: index + 1,
      totalMs: next.timeMs - previous.timeMs,
      segments: segments.reverse(),
      workflowTasks: within.filter((event) => event.raw.workflowTaskCompletedEventAttributes != null).length,
      activities,
    };
  });
}

/** Every activity of the history: its type, wait for a worker and run time, in ms. */
function activityTimes(
  history: HistoryEvent[],
): Array<{ type: string; scheduleToStartMs: number; runMs: number }> {
  const events = new Map(
    history.map((raw) => [idOf(raw.eventId), { id: idOf(raw.eventId), timeMs: eventTimeMs(raw), raw }]),
  );
  return history.flatMap((raw) => {
    const closed = raw.activityTaskCompletedEventAttributes ?? raw.activityTaskFailedEventAttributes;
    if (closed === null || closed === undefined) return [];
    const scheduled = events.get(idOf(closed.scheduledEventId));
    const started = events.get(idOf(closed.startedEventId));
    if (scheduled === undefined || started === undefined) return [];
    return [
      {
        type: activityTypeOf(events, scheduled.id),
        scheduleToStartMs: started.timeMs - scheduled.timeMs,
        runMs: eventTimeMs(raw) - started.timeMs,
      },
    ];
  });
}

const mean = (values: number[]) => values.reduce((sum, value) => sum + value, 0) / Math.max(1, values.length);

/** The printed profile of one run's history. */
export function renderProfile(workflowId: string, history: HistoryEvent[]): string {
  const iterations = profileIterations(history);
  if (iterations.length === 0)
    return `workflow ${workflowId}: fewer than two ${ITERATION_ACTIVITY} activities, nothing to profile`;
  const totals = iterations.map((iteration) => iteration.totalMs);
  const labels: string[] = [];
  for (const iteration of iterations) {
    for (const segment of iteration.segments) if (!labels.includes(segment.label)) labels.push(segment.label);
  }
  const perLabel = (label: string) =>
    iterations.map((iteration) =>
      iteration.segments
        .filter((segment) => segment.label === label)
        .reduce((sum, segment) => sum + segment.ms, 0),
    );
  const meanTotal = mean(totals);
  const pathRows = labels.map((label) => {
    const values = perLabel(label);
    const appears = iterations.filter((iteration) =>
      iteration.segments.some((segment) => segment.label === label),
    ).length;
    return [
      label,
      (appears / iterations.length).toFixed(2),
      mean(values).toFixed(1),
      percentile(values, 0.5).toFixed(1),
      `${((mean(values) / meanTotal) * 100).toFixed(0)} %`,
    ];
  });
  const attributed = iterations.map(
    (iteration) => iteration.totalMs - iteration.segments.reduce((sum, segment) => sum + segment.ms, 0),
  );
  pathRows.push([
    '(not traced)',
    '',
    mean(attributed).toFixed(1),
    percentile(attributed, 0.5).toFixed(1),
    `${((mean(attributed) / meanTotal) * 100).toFixed(0)} %`,
  ]);
  pathRows.push(['iteration', '', meanTotal.toFixed(1), percentile(totals, 0.5).toFixed(1), '100 %']);

  const activityRows = [...new Set(activityTimes(history).map((activity) => activity.type))].map((type) => {
    const ofType = activityTimes(history).filter((activity) => activity.type === type);
    const perIteration = mean(iterations.map((iteration) => iteration.activities[type] ?? 0));
    return [
      type,
      String(ofType.length),
      perIteration.toFixed(2),
      percentile(
        ofType.map((activity) => activity.scheduleToStartMs),
        0.5,
      ).toFixed(1),
      percentile(
        ofType.map((activity) => activity.runMs),
        0.5,
      ).toFixed(1),
      percentile(
        ofType.map((activity) => activity.runMs),
        0.99,
      ).toFixed(1),
    ];
  });
  return [
    `iteration profile · workflow ${workflowId} · ${iterations.length} iterations (modelTurn to modelTurn)`,
    `per iteration: p50 ${percentile(totals, 0.5).toFixed(1)} ms · mean ${meanTotal.toFixed(1)} ms · p99 ${percentile(totals, 0.99).toFixed(1)} ms · ${mean(iterations.map((iteration) => iteration.workflowTasks)).toFixed(2)} workflow tasks`,
    '',
    'critical path (segments per iteration, ms):',
    formatTable(['segment', 'per it.', 'mean', 'p50', 'share'], pathRows),
    '',
    'activities (all of the run, ms):',
    formatTable(['activity', 'count', 'per it.', 's2s p50', 'run p50', 'run p99'], activityRows),
  ].join('\n');
}

/**
 * The critical path of a run from its first signal (an approval) to its completion: walked back
 * from the workflow task that completed the run. Empty when the run has no signal or did not
 * complete.
 */
export function pathAfterSignal(history: HistoryEvent[]): { totalMs: number; segments: Segment[] } {
  const ordered = history.map((raw) => ({ id: idOf(raw.eventId), timeMs: eventTimeMs(raw), raw }));
  const events = new Map(ordered.map((event) => [event.id, event]));
  const signal = ordered.find((event) => event.raw.workflowExecutionSignaledEventAttributes != null);
  const end = ordered.find((event) => event.raw.workflowExecutionCompletedEventAttributes != null);
  if (signal === undefined || end === undefined) return { totalMs: 0, segments: [] };
  const segments: Segment[] = [];
  const completedId = idOf(end.raw.workflowExecutionCompletedEventAttributes?.workflowTaskCompletedEventId);
  walkBack(events, completedId, signal.timeMs, segments);
  return { totalMs: end.timeMs - signal.timeMs, segments: segments.reverse() };
}

/** Segments of many paths, summed per label in the order they first appear, as mean ms per path. */
export function meanSegments(paths: Segment[][]): Segment[] {
  const totals = new Map<string, number>();
  for (const path of paths) {
    for (const segment of path) totals.set(segment.label, (totals.get(segment.label) ?? 0) + segment.ms);
  }
  return [...totals].map(([label, ms]) => ({ label, ms: ms / Math.max(1, paths.length) }));
}
