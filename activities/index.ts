import type { ModelProviders } from './model-provider';
import { runModelTurn, type ModelTurnInput, type ModelTurnResult } from './model-turn';
import { runToolBatch, type ToolBatchInput } from './tool-batch';
import type { ToolExecutor } from './tool-executor';
import type { ToolServerClient } from './tool-server-client';
import type { TranscriptStore } from './transcript-store';
import type { ToolResult } from '../sandbox/tool-call';

export type { ModelTurnInput, ModelTurnResult } from './model-turn';
export type { ToolBatchInput } from './tool-batch';

/** What activities need from the outside world; the worker passes real ones, tests their own. */
export interface ActivityDependencies {
  models: ModelProviders;
  transcripts: TranscriptStore;
  /** Sends tool calls to the sandbox servers; none configured means every tool call fails clearly. */
  tools?: ToolExecutor;
  /** The external tool server, for tools the sandbox does not run. */
  externalTools?: ToolServerClient;
}

/** Builds the activities of `agentRun` around their dependencies. */
export function createActivities(dependencies: ActivityDependencies) {
  return {
    /** One model turn of an iteration. */
    async modelTurn(input: ModelTurnInput): Promise<ModelTurnResult> {
      return runModelTurn(input, dependencies);
    },
    /** Releases the run's workspace when the run ends; no sandbox configured, nothing to release. */
    async releaseWorkspace(input: { trajectoryId: string; reset: boolean }): Promise<void> {
      await dependencies.tools?.release(input.trajectoryId, input.reset);
    },
    /** One batch of tool calls, run in the trajectory's sandbox. */
    async toolBatch(input: ToolBatchInput): Promise<ToolResult[]> {
      return runToolBatch(input, dependencies);
    },
  };
}

/** The activity functions as the workflow sees them. */
export type AgentActivities = ReturnType<typeof createActivities>;
