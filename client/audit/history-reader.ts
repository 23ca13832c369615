import { type Client, isGrpcServiceError, WorkflowNotFoundError } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { z } from 'zod';
import { WORKFLOW_ID_PREFIX, WORKFLOW_TYPE } from '../../common/constants';
import { AgentsError } from '../errors';

/**
 * A run's Temporal history as the audit reads it: the executions of its continue-as-new chain, their
 * events page by page, and the payloads, times and failures inside them.
 */

/** One event of a workflow history. */
export type HistoryEvent = temporal.api.history.v1.IHistoryEvent;
type Payload = temporal.api.common.v1.IPayload;
type Failure = temporal.api.failure.v1.IFailure;

/** Events asked for per history page: a long run streams page by page instead of loading whole. */
const HISTORY_PAGE_SIZE = 500;

/** gRPC status of a history the server does not have (any more). */
const GRPC_NOT_FOUND = 5;

/** The executions of one continue-as-new chain, oldest first. */
export interface RunChain {
  workflowId: string;
  namespace: string;
  runIds: string[];
  /** The run the oldest known execution continues, when the server no longer has it. */
  missingRunId?: string;
}

/** Temporal's run IDs: UUIDs of any version. */
const runIdSchema = z.guid();

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

/**
 * The events of one execution, page by page, so a long history never sits in memory whole; with
 * `follow`, also every event written afterwards, until the execution closes (as `agents watch` reads).
 */
export async function* historyEvents(
  client: Client,
  workflowId: string,
  runId: string,
  options: { follow?: boolean } = {},
): AsyncGenerator<HistoryEvent> {
  let nextPageToken: Uint8Array | undefined;
  do {
    const response = await client.workflowService.getWorkflowExecutionHistory({
      namespace: client.options.namespace,
      execution: { workflowId, runId },
      maximumPageSize: HISTORY_PAGE_SIZE,
      nextPageToken,
      // With `waitNewEvent` the server answers at once while there are events to read, then holds
      // the call until the next one is written; an empty page only means the hold expired.
      ...(options.follow === true ? { waitNewEvent: true, skipArchival: true } : {}),
    });
    yield* response.history?.events ?? [];
    nextPageToken = response.nextPageToken?.length ? response.nextPageToken : undefined;
  } while (nextPageToken !== undefined);
}

/** The time of an event, ISO 8601; empty when the event has none. */
export function eventTime(event: HistoryEvent): string {
  const time = event.eventTime;
  if (!time) return '';
  return new Date(longToNumber(time.seconds) * 1000 + Math.floor((time.nanos ?? 0) / 1e6)).toISOString();
}

/** A protobuf 64-bit integer (a number or a Long) as a number. */
export function longToNumber(value: number | { toNumber(): number } | null | undefined): number {
  if (value === null || value === undefined) return 0;
  return typeof value === 'number' ? value : value.toNumber();
}

/** A payload's value; one the default converter cannot read is described rather than dropped. */
export function decodePayload(payload: Payload | null | undefined): unknown {
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
export function searchAttributeValue(payload: Payload | null | undefined): unknown {
  const value = decodePayload(payload);
  return Array.isArray(value) ? value[0] : value;
}

/** A failure's message followed by the messages of its causes, on one line. */
export function describeFailure(failure: Failure): string {
  const messages: string[] = [];
  for (let current: Failure | null | undefined = failure; current; current = current.cause) {
    if (current.message) messages.push(current.message);
  }
  return messages.join(': ') || 'failed';
}
