import { randomBytes } from 'node:crypto';
import type { AgentRunInputDraft, ScriptedTurn } from '../../common/agent-input';

/** A unique agent name per test, so runs never collide across tests or reruns. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

/** The task program the tests run: short, and recognisable inside the system prompt. */
export const TEST_TEMPLATE = '# Test program\n\n1. Do one small step.\n2. Summarise it.';

/**
 * A run input with a scripted model playing `turns`; anything else can be overridden. Tool calls
 * run without asking unless a test sets its own permission policy, and since a script repeats
 * itself, the stagnation guard is off unless a test sets its window.
 */
export function scriptedRun(
  name: string,
  turns: Array<Partial<ScriptedTurn>>,
  overrides: Partial<AgentRunInputDraft> = {},
): AgentRunInputDraft {
  return {
    name,
    template: { name: 'test-program', source: 'file', content: TEST_TEMPLATE },
    args: '',
    intervalS: 0,
    model: { provider: 'scripted', turns },
    permissions: { mode: 'auto-approve' },
    ...overrides,
    guards: { stagnationWindow: 0, ...overrides.guards },
  };
}
