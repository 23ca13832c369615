/**
 * The words the agent is given: pure functions, shared by the workflow and the in-process baseline
 * of the benchmark, and tested directly.
 */

/** Wraps the task program so the model runs it and closes each iteration with a short summary. */
export function buildSystemPrompt(templateContent: string): string {
  return [
    'You are an autonomous agent carrying out the task program below, one iteration at a time.',
    'Follow it faithfully and on your own. At the end of every iteration, write a 1-2 sentence',
    'summary of what you did and what you will do next.',
    '',
    '=== TASK PROGRAM ===',
    templateContent,
    '=== END PROGRAM ===',
  ].join('\n');
}

/**
 * The user message that opens an iteration. The program begins, with its args, until the model has
 * answered once: an iteration whose model call failed leaves no trace in the conversation, so the
 * next one begins again rather than continuing a conversation the model never saw.
 */
export function buildIterationPrompt(conversationStarted: boolean, args: string): string {
  if (conversationStarted) return 'Continue to the next iteration of the program.';
  return args.trim() === '' ? 'Begin the program.' : `Begin the program. Args: ${args}`;
}
