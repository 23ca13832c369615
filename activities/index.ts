import type { ModelProviders } from './model-provider';
import { runModelTurn, type ModelTurnInput, type ModelTurnResult } from './model-turn';
import type { TranscriptStore } from './transcript-store';

export type { ModelTurnInput, ModelTurnResult } from './model-turn';

/** What activities need from the outside world; the worker passes real ones, tests their own. */
export interface ActivityDependencies {
  models: ModelProviders;
  transcripts: TranscriptStore;
}

/** Builds the activities of `agentRun` around their dependencies. */
export function createActivities(dependencies: ActivityDependencies) {
  return {
    /** One model turn of an iteration. */
    async modelTurn(input: ModelTurnInput): Promise<ModelTurnResult> {
      return runModelTurn(input, dependencies);
    },
  };
}

/** The activity functions as the workflow sees them. */
export type AgentActivities = ReturnType<typeof createActivities>;
