import { readFileSync } from 'node:fs';
import { z } from 'zod';
import {
  describeZodError,
  scriptedModelSchema,
  scriptedTurnSchema,
  type ModelSpec,
} from '../common/agent-input';
import { DEMO_SCRIPT } from './demo-script';
import { AgentsError } from './errors';

/** What `--model` accepts, for help and error messages. */
export const MODEL_OPTION_FORMS = ['scripted', 'scripted:<script.json>'];

const scriptFileSchema = z.union([
  scriptedModelSchema.omit({ provider: true }),
  z.array(scriptedTurnSchema).min(1, 'a script needs at least one turn'),
]);

/**
 * Turns a `--model` value into the run's model spec. A script file holds either an array of turns
 * or `{ "turns": [...], "whenExhausted": "cycle" | "repeat-last" }`; it is embedded in the run's
 * input, so any worker can play it.
 */
export function parseModelOption(value: string): ModelSpec {
  if (value === 'scripted') return scriptedModelSchema.parse({ provider: 'scripted', turns: DEMO_SCRIPT });
  if (value.startsWith('scripted:')) {
    const file = value.slice('scripted:'.length);
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(file, 'utf8'));
    } catch (error) {
      // JSON.parse quotes the file, newlines included: keep the message to one line.
      const reason = error instanceof SyntaxError ? 'not valid JSON' : (error as Error).message;
      throw new AgentsError('unknown_model', `Cannot read the model script '${file}': ${reason}`);
    }
    const parsed = scriptFileSchema.safeParse(json);
    if (!parsed.success) {
      throw new AgentsError(
        'unknown_model',
        `Invalid model script '${file}': ${describeZodError(parsed.error)}`,
      );
    }
    const script = Array.isArray(parsed.data) ? { turns: parsed.data } : parsed.data;
    return scriptedModelSchema.parse({ provider: 'scripted', ...script });
  }
  throw new AgentsError(
    'unknown_model',
    `Unknown model '${value}'. Accepted: ${MODEL_OPTION_FORMS.join(', ')}`,
  );
}
