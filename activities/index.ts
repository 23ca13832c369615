import { Context, log } from '@temporalio/activity';
import type { AgentNotification } from '../common/notification';
import type { DailyLedgerActivities, DailyUsageInput, DailyUsageResult } from './daily-ledger';
import { CircuitBreakers } from '../models/circuit-breaker';
import type { ModelProviders } from '../models/model-provider';
import { McpHttpSessions } from './mcp-http-sessions';
import { McpTools } from './mcp-tools';
import type { AgentMetrics } from './metrics';
import type { Notifier } from './notifier';
import { runModelTurn, type ModelTurnInput, type ModelTurnResult, type RefusedTurn } from './model-turn';
import { runToolBatch, type ToolBatchInput } from './tool-batch';
import { ToolCatalog } from './tool-catalog';
import type { ToolExecutor } from './tool-executor';
import type { ToolServerClient } from './tool-server-client';
import type { TranscriptStore } from './transcript-store';
import {
  prepareTrajectoryWorkspace,
  type PrepareWorkspaceInput,
  type PreparedWorkspace,
} from './workspace-preparation';
import type { ToolResult } from '../sandbox/tool-call';

export type { ModelTurnInput, ModelTurnResult, RefusedTurn, StoppedTurn } from './model-turn';
export type { ToolBatchInput } from './tool-batch';
export type { PrepareWorkspaceInput, PreparedWorkspace } from './workspace-preparation';

/** What activities need from the outside world; the worker passes real ones, tests their own. */
export interface ActivityDependencies {
  models: ModelProviders;
  transcripts: TranscriptStore;
  /** Sends tool calls to the sandbox servers; none configured means every tool call fails clearly. */
  tools?: ToolExecutor;
  /** The external tool server, for tools the sandbox does not run. */
  externalTools?: ToolServerClient;
  /** Delivers a run's notices to its sinks. */
  notifier: Notifier;
  /** The shared daily budget ledgers; the worker supplies them from its own connection when absent. */
  ledger?: DailyLedgerActivities;
  /** The worker's circuit breakers, one per provider and model; default settings when absent. */
  breakers?: CircuitBreakers;
  /** The agents' metrics (`activities/metrics.ts`); none recorded when absent. */
  metrics?: AgentMetrics;
  /**
   * The worker's MCP servers and its sessions with them; absent: the runs' own servers only, over
   * sessions of these activities.
   */
  mcp?: McpTools;
}

/** Builds the activities of `agentRun` around their dependencies. */
export function createActivities(dependencies: ActivityDependencies) {
  // Notices reach their sinks from `notify` and from model turns: both count them, once per ID.
  const notifier = {
    async deliver(notification: AgentNotification): Promise<void> {
      await dependencies.notifier.deliver(notification);
      dependencies.metrics?.notice(notification);
    },
  };
  const mcp =
    dependencies.mcp ??
    new McpTools({
      workerServers: [],
      http: new McpHttpSessions(),
      sandbox: dependencies.tools,
      warn: (message) => {
        log.warn(message);
      },
    });
  const routes = { ...dependencies, mcp };
  const modelTurn = {
    mcp,
    models: dependencies.models,
    transcripts: dependencies.transcripts,
    tools: new ToolCatalog(dependencies.externalTools),
    breakers: dependencies.breakers ?? new CircuitBreakers(),
    ledger: dependencies.ledger,
    notifier,
    metrics: dependencies.metrics,
  };
  return {
    /** One model turn of an iteration, or its refusal when the daily limits leave no room for it. */
    async modelTurn(input: ModelTurnInput): Promise<ModelTurnResult | RefusedTurn> {
      return runModelTurn(input, modelTurn);
    },
    /**
     * Releases the run's workspace when the run ends (its sandbox server closes the run's stdio MCP
     * servers then), and this worker's sessions with its HTTP MCP servers.
     */
    async releaseWorkspace(input: { trajectoryId: string; reset: boolean }): Promise<void> {
      await mcp.release(input.trajectoryId);
      await dependencies.tools?.release(input.trajectoryId, input.reset);
    },
    /**
     * Unpacks the folder or repository a run starts from into its workspace, copying the upload
     * from another sandbox server when the trajectory's lacks it. Heartbeats every second, so a
     * lost worker's preparation is retried soon, and a stop reaches the transfer.
     */
    async prepareWorkspace(input: PrepareWorkspaceInput): Promise<PreparedWorkspace> {
      const context = Context.current();
      let progress: unknown;
      const heartbeat = setInterval(() => context.heartbeat(progress), 1000);
      try {
        return await prepareTrajectoryWorkspace(input, dependencies.tools, {
          heartbeat: (details) => {
            progress = details;
          },
          signal: context.cancellationSignal,
        });
      } finally {
        clearInterval(heartbeat);
      }
    },
    /** One batch of tool calls, run in the trajectory's sandbox. */
    async toolBatch(input: ToolBatchInput): Promise<ToolResult[]> {
      return runToolBatch(input, routes);
    },
    /** One notice of a run, to its sinks; never fails because a sink did. */
    async notify(notification: AgentNotification): Promise<void> {
      await notifier.deliver(notification);
    },
    /**
     * Reads, and with a charge first adds to, the day's spend of all runs. Heartbeats every second
     * while the ledger answers, so a killed worker's read is retried within the heartbeat timeout.
     */
    async dailyUsage(input: DailyUsageInput): Promise<DailyUsageResult> {
      if (dependencies.ledger === undefined) throw new Error('this worker has no daily budget ledger');
      const context = Context.current();
      const heartbeat = setInterval(() => context.heartbeat(), 1000);
      try {
        return await dependencies.ledger.dailyUsage(input);
      } finally {
        clearInterval(heartbeat);
      }
    },
  };
}

/** The activity functions as the workflow sees them. */
export type AgentActivities = ReturnType<typeof createActivities>;
