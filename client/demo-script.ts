import type { ScriptedTurnDraft } from '../common/agent-input';

/**
 * The turns `--model scripted` plays: a model's answers to the `demo` template, with realistic
 * token counts and a short think time so progress is visible.
 */
export const DEMO_SCRIPT: ScriptedTurnDraft[] = [
  {
    text: 'demo.txt did not exist, so I counted from 0 and wrote 1 to it. Next I will raise the count to 2.',
    usage: { inputTokens: 412, outputTokens: 31 },
    costUsd: 0,
    delayMs: 700,
  },
  {
    text: 'demo.txt held 1; I wrote 2. One more iteration brings the count to 3 and ends the program.',
    usage: { inputTokens: 468, outputTokens: 29 },
    costUsd: 0,
    delayMs: 700,
  },
  {
    text: 'demo.txt held 2; I wrote 3, so the count reached three and the program is complete.',
    usage: { inputTokens: 521, outputTokens: 27 },
    costUsd: 0,
    delayMs: 700,
  },
];
