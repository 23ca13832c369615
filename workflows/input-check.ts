import { agentRunInputSchema, describeZodError, type AgentRunInput } from '../common/agent-input';

/** What the workflow makes of the arguments it was started with. */
export type StartArguments = { input: AgentRunInput } | { problem: string };

/**
 * Checks the arguments of an `agentRun` execution the way the client checks them before start,
 * because a run can be started around the client (`temporal workflow start`, the Web UI) with
 * anything. A first execution gets its input parsed, the schema's defaults applied, so it runs
 * exactly as the same input given to `agents start` would. An execution continued as new gets the
 * input its chain already ran with, unchanged: it was checked when the chain began, and a chain
 * begun by an earlier version keeps the settings it began with (see `runSettings`). A second
 * argument is the state continue-as-new carries, so only a continued execution may have one.
 */
export function checkStartArguments(
  startInput: unknown,
  carried: unknown,
  continued: boolean,
): StartArguments {
  if (carried !== undefined) {
    if (!continued) {
      return {
        problem: 'agentRun takes one argument, the run input; a second is only carried by continue-as-new',
      };
    }
    return { input: startInput as AgentRunInput };
  }
  if (typeof startInput !== 'object' || startInput === null || Array.isArray(startInput)) {
    return {
      problem: `expected one JSON object with at least "name", "template" and "model", got ${describeValue(startInput)}`,
    };
  }
  const parsed = agentRunInputSchema.safeParse(startInput);
  if (!parsed.success) return { problem: describeZodError(parsed.error) };
  return { input: parsed.data };
}

/** A value's kind as JSON names it, for a message about a value that is not an object. */
function describeValue(value: unknown): string {
  if (value === undefined) return 'no input';
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return `a ${typeof value}`;
}
