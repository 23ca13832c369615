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
} from '../common/agent-input';
import {
  AGENT_STATES,
  type AgentRunResult,
  type AgentState,
  type AgentStatus,
  type IterationRecord,
  type PendingPermission,
} from '../common/agent-run-types';
import { REPLACE_GRACE_S, TASK_QUEUE, WORKFLOW_ID_PREFIX, WORKFLOW_TYPE } from '../common/constants';
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
import type { agentRun } from '../workflows';
import { AgentsError } from './errors';

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

/** Validates a run's input the way the client does before start: bad input never reaches Temporal. */
export function validateRunInput(draft: AgentRunInputDraft): AgentRunInput {
  const parsed = agentRunInputSchema.safeParse(draft);
  if (!parsed.success) {
    throw new AgentsError('invalid_argument', `Invalid run input: ${describeZodError(parsed.error)}`);
  }
  return parsed.data;
}

/**
 * The typed client of agent runs, used by the CLI and tests. Every method speaks the public
 * contract (workflow IDs, signals, queries, search attributes), so the same can be done with the
 * `temporal` CLI or the Web UI.
 */
export class AgentsClient {
  constructor(private readonly client: Client) {}

  /**
   * Starts a run. A run already going under the same name is an error, unless `replace` is set:
   * then it is stopped (terminated when it does not end within the grace period) and the new run
   * starts under the same workflow ID, the old history kept.
   */
  async start(
    draft: AgentRunInputDraft,
    options: { replace?: boolean } = {},
  ): Promise<WorkflowHandleWithFirstExecutionRunId<typeof agentRun>> {
    const input = validateRunInput(draft);
    const workflowId = workflowIdFor(input.name);
    if (options.replace === true) await this.endOpenRun(workflowId);
    try {
      return await this.client.workflow.start<typeof agentRun>(WORKFLOW_TYPE, {
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
          `**Model:** ${input.model.provider} · **Interval:** ${input.intervalS}s · **Max iterations:** ${input.maxIterations ?? 'none'}`,
        ].join('\n'),
      });
    } catch (error) {
      if (error instanceof WorkflowExecutionAlreadyStartedError) {
        throw new AgentsError(
          'already_running',
          `Agent '${input.name}' is already running (workflow ${workflowId}): stop it with \`agents stop ${input.name}\` or start with --replace`,
          { cause: error },
        );
      }
      throw error;
    }
  }

  private async endOpenRun(workflowId: string): Promise<void> {
    const handle = this.client.workflow.getHandle(workflowId);
    if (!(await this.isOpen(handle))) return;
    await handle.signal(stopSignal, { reason: 'replaced by a new run' });
    const deadline = Date.now() + REPLACE_GRACE_S * 1000;
    while (Date.now() < deadline) {
      if (!(await this.isOpen(handle))) return;
      await sleep(200);
    }
    await handle.terminate('replaced by a new run (did not stop within the grace period)');
  }

  /** The handle of the running run of `name`, failing with a clear error when it has ended. */
  private async runningHandleFor(name: string): Promise<WorkflowHandle<typeof agentRun>> {
    const handle = await this.handleFor(name);
    if (!(await this.isOpen(handle))) throw new AgentsError('not_found', `Agent ${name} is not running`);
    return handle;
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
    await (await this.runningHandleFor(name)).signal(permissionSignal, parsed.data);
  }

  /** Sends `resume` to a run paused on its budgets, with new budgets for it if given. */
  async resume(name: string, payload: ResumePayload = {}): Promise<void> {
    const parsed = resumePayloadSchema.safeParse(payload);
    if (!parsed.success) {
      throw new AgentsError('invalid_argument', `Invalid resume: ${describeZodError(parsed.error)}`);
    }
    await (await this.runningHandleFor(name)).signal(resumeSignal, parsed.data);
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

  /** Lists runs from the visibility store, newest first, optionally by `AgentState`. */
  async list(options: { state?: string; runningOnly?: boolean } = {}): Promise<AgentListing[]> {
    const clauses = [`WorkflowType = '${WORKFLOW_TYPE}'`];
    if (options.state !== undefined) {
      if (!(AGENT_STATES as readonly string[]).includes(options.state)) {
        throw new AgentsError(
          'invalid_argument',
          `Unknown state '${options.state}'. Accepted: ${AGENT_STATES.join(', ')}`,
        );
      }
      clauses.push(`${agentStateKey.name} = '${options.state}'`);
    }
    if (options.runningOnly === true) clauses.push(`ExecutionStatus = 'Running'`);
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

  /**
   * Follows a run until it ends: each new iteration record and each change of state is reported
   * as it happens, then the result is returned.
   */
  async watch(
    name: string,
    listener: { onRecord?: (record: IterationRecord) => void; onState?: (state: AgentState) => void },
    pollMs = 300,
  ): Promise<AgentRunResult> {
    const handle = await this.handleFor(name);
    const resultPromise = handle.result();
    let finished = false;
    resultPromise.then(
      () => (finished = true),
      () => (finished = true),
    );
    let nextIteration = 1;
    let lastState: AgentState | undefined;
    const report = (status: AgentStatus, records: IterationRecord[]) => {
      for (const record of records) listener.onRecord?.(record);
      const last = records.at(-1);
      if (last !== undefined) nextIteration = last.iteration + 1;
      if (status.state !== lastState) listener.onState?.(status.state);
      lastState = status.state;
    };
    while (!finished) {
      try {
        report(
          await this.query(handle, statusQuery),
          await this.query(handle, iterationsQuery, { from: nextIteration }),
        );
      } catch (error) {
        // A poll that overlapped the end of the run: the reads after the loop take over.
        if (!finished) throw error;
        break;
      }
      await Promise.race([sleep(pollMs), resultPromise.catch(() => undefined)]);
    }
    // The last record is written by the workflow task that completes the run, so it can only be read
    // after the result: from a closed run, which a worker answers by replaying its history. A query
    // that reaches the worker while it evicts the finished run can be lost, hence a few attempts.
    for (let attempt = 1; ; attempt += 1) {
      try {
        report(
          await this.query(handle, statusQuery),
          await this.query(handle, iterationsQuery, { from: nextIteration }),
        );
        break;
      } catch (error) {
        if (attempt === 3) throw error;
        await sleep(pollMs);
      }
    }
    return resultPromise;
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
