import { setTimeout as sleep } from 'node:timers/promises';
import {
  type Client,
  isGrpcDeadlineError,
  type QueryDefinition,
  type WorkflowHandle,
  type WorkflowHandleWithFirstExecutionRunId,
  WorkflowNotFoundError,
} from '@temporalio/client';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import {
  agentNameSchema,
  agentRunInputSchema,
  describeZodError,
  type AgentRunInput,
  type AgentRunInputDraft,
  type ModelSpec,
} from '../common/agent-input';
import {
  AGENT_STATES,
  LIVE_AGENT_STATES,
  type AgentStatus,
  type IterationRecord,
  type PendingPermission,
} from '../common/agent-run-types';
import {
  REPLACE_GRACE_S,
  TASK_QUEUE,
  TEMPORAL_PAYLOAD_LIMIT_BYTES,
  WORKFLOW_ID_PREFIX,
  WORKFLOW_TYPE,
} from '../common/constants';
import { markdownCode } from '../common/display-text';
import {
  iterationsQuery,
  permissionPayloadSchema,
  permissionSignal,
  resumePayloadSchema,
  resumeSignal,
  statusQuery,
  stopSignal,
  type IterationsQueryArgs,
  type PermissionPayload,
  type ResumePayload,
} from '../common/messages';
import {
  agentIterationKey,
  agentNameKey,
  agentStateKey,
  agentTemplateKey,
} from '../common/search-attributes';
import { formatBytes } from '../sandbox/byte-size';
import type { agentRun } from '../workflows';
import { AgentsError } from './errors';
import { retryWhileSearchAttributesNotServed } from './search-attributes-served';

/** Workflow ID of the agent called `name`. */
export function workflowIdFor(name: string): string {
  return `${WORKFLOW_ID_PREFIX}${name}`;
}

/** A query waits this long for a worker to answer it. */
const QUERY_DEADLINE_MS = 10_000;

/** One run as the visibility store lists it. */
export interface AgentListing {
  name: string;
  workflowId: string;
  runId: string;
  /** Temporal's status of the execution: RUNNING, COMPLETED, TERMINATED, … */
  executionStatus: string;
  state: string | undefined;
  iteration: number | undefined;
  template: string | undefined;
  startTime: Date;
  closeTime: Date | undefined;
}

/**
 * How a forced stop ended a run: it was not open, it stopped within the grace, or it was
 * terminated with `reason`, which its history keeps.
 */
export type RunEnd = { kind: 'not_open' } | { kind: 'stopped' } | { kind: 'terminated'; reason: string };

/** What each part of a run's input is called in a message about its size. */
const INPUT_PARTS: Partial<Record<keyof AgentRunInput, string>> = {
  template: 'the template',
  args: 'the arguments',
  model: 'the model spec (a script is embedded whole)',
  permissions: 'the permission rules',
};

/**
 * The error for an input over Temporal's payload limit: its size, the limit, and its largest part,
 * which is what to shorten. `cause` is the server's refusal when its limit is lower than the default.
 */
function inputTooLarge(input: AgentRunInput, cause?: unknown): AgentsError {
  const bytes = Buffer.byteLength(JSON.stringify(input));
  const parts = Object.entries(input).map(([key, value]) => ({
    key: key as keyof AgentRunInput,
    bytes: Buffer.byteLength(JSON.stringify(value) ?? ''),
  }));
  const largest = parts.reduce((most, part) => (part.bytes > most.bytes ? part : most));
  const limit =
    cause === undefined
      ? `the limit is ${formatBytes(TEMPORAL_PAYLOAD_LIMIT_BYTES)}`
      : `the server refused it as too large (${(cause as Error).message.replace(/^.*?: /, '')})`;
  return new AgentsError(
    'invalid_argument',
    `The run's input is ${formatBytes(bytes)}; ${limit}, Temporal's limit on one payload: ${INPUT_PARTS[largest.key] ?? largest.key} takes ${formatBytes(largest.bytes)} of it`,
    { cause },
  );
}

/**
 * Validates a run's input the way the client does before start: bad input never reaches Temporal,
 * and neither does an input over Temporal's payload limit, which the server would refuse.
 */
export function validateRunInput(draft: AgentRunInputDraft): AgentRunInput {
  const parsed = agentRunInputSchema.safeParse(draft);
  if (!parsed.success) {
    throw new AgentsError('invalid_argument', `Invalid run input: ${describeZodError(parsed.error)}`);
  }
  if (Buffer.byteLength(JSON.stringify(parsed.data)) > TEMPORAL_PAYLOAD_LIMIT_BYTES) {
    throw inputTooLarge(parsed.data);
  }
  return parsed.data;
}

/**
 * The model of a run as the Web UI's static details name it: the provider, the model, and for a
 * remote API the host of its base URL, so a reader sees which endpoint the run's calls go to
 * (`openai` · `gpt-4o-mini` at `api.openai.com`). Never the key: only its variable is in the input.
 */
function modelDetails(model: ModelSpec): string {
  switch (model.provider) {
    case 'scripted':
      return `scripted (${model.turns.length} turns)`;
    case 'local':
      return `local · ${markdownCode(model.model)}`;
    default:
      return `${model.provider} · ${markdownCode(model.model)} at ${markdownCode(new URL(model.baseUrl).host)}`;
  }
}

/**
 * The typed client of agent runs, used by the CLI and tests. Every method speaks the public
 * contract (workflow IDs, signals, queries, search attributes), so the same can be done with the
 * `temporal` CLI or the Web UI.
 */
export class AgentsClient {
  /** `client`: the Temporal client it speaks through, which readers of a run's history use too. */
  constructor(readonly client: Client) {}

  /**
   * Starts a run. A run already going under the same name is an error, unless `replace` is set:
   * then it is stopped (terminated when it does not end within the grace period) and the new run
   * starts under the same workflow ID, the old history kept.
   */
  async start(
    draft: AgentRunInputDraft,
    options: { replace?: boolean; onWait?: (line: string) => void } = {},
  ): Promise<WorkflowHandleWithFirstExecutionRunId<typeof agentRun>> {
    const input = validateRunInput(draft);
    const workflowId = workflowIdFor(input.name);
    if (options.replace === true) await this.endOpenRun(workflowId, 'replaced by a new run', REPLACE_GRACE_S);
    const start = () =>
      this.client.workflow.start<typeof agentRun>(WORKFLOW_TYPE, {
        workflowId,
        taskQueue: TASK_QUEUE,
        args: [input],
        workflowIdConflictPolicy: 'FAIL',
        workflowIdReusePolicy: 'ALLOW_DUPLICATE',
        typedSearchAttributes: [
          { key: agentNameKey, value: input.name },
          { key: agentTemplateKey, value: input.template.name },
          { key: agentStateKey, value: 'running' },
          { key: agentIterationKey, value: 0 },
        ],
        staticSummary: `agent ${input.name} · template ${input.template.name}`,
        staticDetails: [
          `**Template:** ${input.template.name} (${input.template.source})`,
          `**Args:** ${input.args === '' ? '(none)' : input.args}`,
          `**Model:** ${modelDetails(input.model)}`,
          `**Interval:** ${input.intervalS}s · **Max iterations:** ${input.maxIterations ?? 'none'}`,
        ].join('\n'),
      });
    try {
      // Right after `agents setup` on SQL visibility, the namespace may not serve the attributes yet.
      return await retryWhileSearchAttributesNotServed(
        this.client.options.namespace,
        start,
        options.onWait ?? (() => {}),
      );
    } catch (error) {
      if (error instanceof WorkflowExecutionAlreadyStartedError) {
        throw new AgentsError(
          'already_running',
          `Agent '${input.name}' is already running (workflow ${workflowId}): stop it with \`agents stop ${input.name}\` or start with --replace`,
          { cause: error },
        );
      }
      // A server whose limits are lower than Temporal's defaults.
      if (/Blob data size exceeds limit|larger than max/i.test((error as Error).message)) {
        throw inputTooLarge(input, error);
      }
      throw error;
    }
  }

  /**
   * Ends the open run of `workflowId` for sure: sends `stop` with `reason`, waits up to `graceS`
   * for the run to close, then terminates it with the reason in its history. That also ends a run
   * whose workflow tasks fail (a bug in deployed workflow code), which never acts on a signal. A
   * grace of 0 terminates at once.
   */
  private async endOpenRun(workflowId: string, reason: string, graceS: number): Promise<RunEnd> {
    const handle = this.client.workflow.getHandle(workflowId);
    if (!(await this.isOpen(handle))) return { kind: 'not_open' };
    if (graceS > 0) {
      await handle.signal(stopSignal, { reason });
      const deadline = Date.now() + graceS * 1000;
      while (Date.now() < deadline) {
        if (!(await this.isOpen(handle))) return { kind: 'stopped' };
        await sleep(200);
      }
    }
    const terminated = `${reason} (${graceS > 0 ? `did not stop within ${graceS} s` : 'forced with no grace'})`;
    try {
      await handle.terminate(terminated);
    } catch (error) {
      // It closed between the last look and the terminate.
      if (error instanceof WorkflowNotFoundError) return { kind: 'stopped' };
      throw error;
    }
    return { kind: 'terminated', reason: terminated };
  }

  /**
   * Stops the running agent `name` for sure (`agents stop --force`): `stop`, then after `graceS`
   * seconds without the run closing, a terminate whose reason the history keeps.
   */
  async forceStop(name: string, reason: string, graceS: number): Promise<RunEnd> {
    const handle = await this.runningHandle(name);
    return this.endOpenRun(handle.workflowId, reason, graceS);
  }

  /**
   * The handle of the open run of `name`. A closed run takes no signal, so this fails with one line
   * saying how it ended, read from the server alone: no worker is needed to tell.
   */
  async runningHandle(name: string): Promise<WorkflowHandle<typeof agentRun>> {
    const handle = await this.handleFor(name);
    const { status } = await handle.describe();
    if (status.name === 'RUNNING') return handle;
    throw new AgentsError(
      'not_running',
      `Agent ${name} is not running: ${await howItEnded(handle, status.name)}`,
    );
  }

  private async isOpen(handle: WorkflowHandle): Promise<boolean> {
    try {
      return (await handle.describe()).status.name === 'RUNNING';
    } catch (error) {
      if (error instanceof WorkflowNotFoundError) return false;
      throw error;
    }
  }

  /** The handle of the latest run of `name`, failing with a clear error when there is none. */
  async handleFor(name: string): Promise<WorkflowHandle<typeof agentRun>> {
    const parsed = agentNameSchema.safeParse(name);
    if (!parsed.success) {
      throw new AgentsError(
        'invalid_argument',
        `Invalid agent name '${name}': ${describeZodError(parsed.error)}`,
      );
    }
    const handle = this.client.workflow.getHandle<typeof agentRun>(workflowIdFor(name));
    try {
      await handle.describe();
    } catch (error) {
      if (error instanceof WorkflowNotFoundError) {
        throw new AgentsError('not_found', `No agent named '${name}' (see \`agents list\`)`, {
          cause: error,
        });
      }
      throw error;
    }
    return handle;
  }

  /** Asks a running agent to stop; false when it was not running. */
  async stop(name: string, reason = 'stopped from the CLI'): Promise<boolean> {
    const handle = await this.handleFor(name);
    if (!(await this.isOpen(handle))) return false;
    await handle.signal(stopSignal, { reason });
    return true;
  }

  /** Asks every running agent to stop; returns their names. */
  async stopAll(reason = 'stopped from the CLI'): Promise<string[]> {
    const running = await this.list({ runningOnly: true });
    await Promise.all(
      running.map((run) => this.client.workflow.getHandle(run.workflowId).signal(stopSignal, { reason })),
    );
    return running.map((run) => run.name);
  }

  /**
   * Sends a `permission` signal: a decision, or with `extendS` more time. A signal rather than an
   * update, so it reaches the run with no worker up; the run ignores (and counts) an unknown ID.
   */
  async decide(name: string, payload: PermissionPayload): Promise<void> {
    const parsed = permissionPayloadSchema.safeParse(payload);
    if (!parsed.success) {
      throw new AgentsError(
        'invalid_argument',
        `Invalid permission decision: ${describeZodError(parsed.error)}`,
      );
    }
    await (await this.runningHandle(name)).signal(permissionSignal, parsed.data);
  }

  /** Sends `resume` to a run paused on its budgets, with new budgets for it if given. */
  async resume(name: string, payload: ResumePayload = {}): Promise<void> {
    const parsed = resumePayloadSchema.safeParse(payload);
    if (!parsed.success) {
      throw new AgentsError('invalid_argument', `Invalid resume: ${describeZodError(parsed.error)}`);
    }
    await (await this.runningHandle(name)).signal(resumeSignal, parsed.data);
  }

  /**
   * The permission requests waiting for a decision: of one run, or of every run the visibility
   * store shows awaiting approval.
   */
  async pending(name?: string): Promise<Array<{ name: string; request: PendingPermission }>> {
    const names =
      name === undefined
        ? (await this.list({ state: 'awaiting_approval', runningOnly: true })).map((run) => run.name)
        : [name];
    const answers = await Promise.all(
      names.map(async (agent) => ({ agent, status: await this.status(agent) })),
    );
    return answers.flatMap(({ agent, status }) =>
      status.pendingPermissions.map((request) => ({ name: agent, request })),
    );
  }

  /**
   * Lists runs from the visibility store, newest first, optionally by `AgentState`. A live state
   * lists open executions only: one terminated from outside still shows the state it had.
   */
  async list(options: { state?: string; runningOnly?: boolean } = {}): Promise<AgentListing[]> {
    const clauses = [`WorkflowType = '${WORKFLOW_TYPE}'`];
    let runningOnly = options.runningOnly === true;
    if (options.state !== undefined) {
      if (!(AGENT_STATES as readonly string[]).includes(options.state)) {
        throw new AgentsError(
          'invalid_argument',
          `Unknown state '${options.state}'. Accepted: ${AGENT_STATES.join(', ')}`,
        );
      }
      clauses.push(`${agentStateKey.name} = '${options.state}'`);
      if ((LIVE_AGENT_STATES as readonly string[]).includes(options.state)) runningOnly = true;
    }
    if (runningOnly) clauses.push(`ExecutionStatus = 'Running'`);
    const listings: AgentListing[] = [];
    for await (const execution of this.client.workflow.list({ query: clauses.join(' AND ') })) {
      const attributes = execution.typedSearchAttributes;
      listings.push({
        name: attributes.get(agentNameKey) ?? execution.workflowId.slice(WORKFLOW_ID_PREFIX.length),
        workflowId: execution.workflowId,
        runId: execution.runId,
        executionStatus: execution.status.name,
        state: attributes.get(agentStateKey),
        iteration: attributes.get(agentIterationKey),
        template: attributes.get(agentTemplateKey),
        startTime: execution.startTime,
        closeTime: execution.closeTime,
      });
    }
    return listings;
  }

  /** The `status` query of the latest run of `name`. */
  async status(name: string): Promise<AgentStatus> {
    return this.query(await this.handleFor(name), statusQuery);
  }

  /** The `iterations` query of the latest run of `name`. */
  async iterations(name: string, args: IterationsQueryArgs = {}): Promise<IterationRecord[]> {
    return this.query(await this.handleFor(name), iterationsQuery, args);
  }

  /**
   * Queries a run with a deadline. A worker answers queries, of closed runs too (it replays the
   * history): with none running the server would hold the call, so after the deadline the user is
   * told to start one.
   */
  private async query<Result, Args extends unknown[]>(
    handle: WorkflowHandle,
    definition: QueryDefinition<Result, Args>,
    ...args: Args
  ): Promise<Result> {
    const began = Date.now();
    try {
      return await this.client.connection.withDeadline(began + QUERY_DEADLINE_MS, () =>
        handle.query(definition, ...args),
      );
    } catch (error) {
      // The server may give up on the query a little before the client's deadline does, with an
      // error of its own: a failure that took most of the deadline is the same "no answer".
      const timedOut = isGrpcDeadlineError(error) || Date.now() - began >= QUERY_DEADLINE_MS / 2;
      if (!timedOut) throw error;
      throw new AgentsError(
        'no_worker',
        `No answer from ${handle.workflowId} within ${QUERY_DEADLINE_MS / 1000} s: queries need a running worker (\`agents worker\` or \`agents dev\`)`,
        { cause: error },
      );
    }
  }

  /** True when at least one worker polls the `agents` task queue for workflow tasks. */
  async hasWorker(): Promise<boolean> {
    const response = await this.client.workflowService.describeTaskQueue({
      namespace: this.client.options.namespace,
      taskQueue: { name: TASK_QUEUE, kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
      taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    });
    return (response.pollers ?? []).length > 0;
  }
}

/** How a closed run ended, for a message about a signal it can no longer take: "it ended with stagnation". */
async function howItEnded(handle: WorkflowHandle<typeof agentRun>, status: string): Promise<string> {
  switch (status) {
    case 'COMPLETED':
      // The close event is already written, so the result comes at once.
      return `it ended with ${(await handle.result()).exitReason}`;
    case 'TERMINATED':
      return 'it was terminated';
    case 'CANCELLED':
      return 'it was cancelled';
    case 'TIMED_OUT':
      return 'it timed out';
    case 'FAILED':
      return 'its workflow failed';
    default:
      return `its workflow is ${status.toLowerCase()}`;
  }
}
