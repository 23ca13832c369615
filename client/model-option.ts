import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import {
  anthropicModelSchema,
  describeZodError,
  localModelSchema,
  modelPriceSchema,
  openaiModelSchema,
  scriptedModelSchema,
  scriptedTurnSchema,
  type ModelPrice,
  type ModelSpec,
} from '../common/agent-input';
import { MODEL_OPTION_FORMS } from '../common/constants';
import { DEFAULT_PRICES, lookupPrice } from '../models/prices';
import { DEMO_SCRIPT } from './demo-script';
import { AgentsError } from './errors';

/** What `--model` accepts; defined with the constants so `agents --help` can name it without loading this module. */
export { MODEL_OPTION_FORMS };

/** The model options of `agents start` and `agents demo`, as typed on the command line. */
export interface ModelChoice {
  /** `--model`: one of {@link MODEL_OPTION_FORMS}. */
  model: string;
  /** `--base-url`: an OpenAI-compatible or Anthropic API, for example Ollama's `http://127.0.0.1:11434/v1`. */
  baseUrl?: string;
  /** `--api-key-env`: the NAME of the worker's variable holding the key; the key never enters the run input. */
  apiKeyEnv?: string;
  /** `--max-output-tokens`: tokens the model may write per turn. */
  maxOutputTokens?: string;
  /** `--temperature`: from 0 to 2. */
  temperature?: string;
  /** `--price <input>,<output>`: dollars per million tokens, for example `3,15`. */
  price?: string;
}

/** A run's model spec, and lines for the CLI to print about it (a price nobody knows, a key not set). */
export interface ResolvedModel {
  spec: ModelSpec;
  notes: string[];
}

type ModelOption = Exclude<keyof ModelChoice, 'model'>;
type Provider = ModelSpec['provider'];
type RemoteProvider = 'openai' | 'anthropic';

const OPTION_FLAGS: Record<ModelOption, string> = {
  baseUrl: '--base-url',
  apiKeyEnv: '--api-key-env',
  maxOutputTokens: '--max-output-tokens',
  temperature: '--temperature',
  price: '--price',
};

const OPTIONS_ACCEPTED: Record<Provider, readonly ModelOption[]> = {
  scripted: [],
  local: ['maxOutputTokens', 'temperature'],
  openai: ['baseUrl', 'apiKeyEnv', 'maxOutputTokens', 'temperature', 'price'],
  anthropic: ['baseUrl', 'apiKeyEnv', 'maxOutputTokens', 'temperature', 'price'],
};

/** The variables the official SDKs read, so a shell set up for them works here unchanged. */
const REMOTE_DEFAULTS: Record<
  RemoteProvider,
  { modelVariable: string; baseUrlVariable: string; example: string }
> = {
  openai: { modelVariable: 'OPENAI_MODEL', baseUrlVariable: 'OPENAI_BASE_URL', example: 'gpt-4o-mini' },
  anthropic: {
    modelVariable: 'ANTHROPIC_MODEL',
    baseUrlVariable: 'ANTHROPIC_BASE_URL',
    example: 'claude-sonnet-4-5',
  },
};

const REMOTE_SCHEMAS = { openai: openaiModelSchema, anthropic: anthropicModelSchema };

/** What `--model` names, before the options are applied. */
type ModelForm =
  | { provider: 'scripted'; scriptFile?: string }
  | { provider: 'local'; model?: string }
  | { provider: RemoteProvider; model: string };

const scriptFileSchema = z.union([
  scriptedModelSchema.omit({ provider: true }),
  z.array(scriptedTurnSchema).min(1, 'a script needs at least one turn'),
]);

/**
 * Turns a `--model` value alone into the run's model spec: no other option, no price table. A
 * script file holds either an array of turns or `{ "turns": [...], "whenExhausted": "cycle" |
 * "repeat-last" }`; it is embedded in the run's input, so any worker can play it.
 */
export function parseModelOption(value: string, environment: NodeJS.ProcessEnv = process.env): ModelSpec {
  return buildSpec(parseModelForm(value, environment), { model: value }, environment);
}

/**
 * Turns the model options of the command line into the run's model spec, with the price the run is
 * charged at written into it (from `--price`, else `$AGENTS_HOME/prices.json` over the built-in
 * prices), so the history shows it. Only the name of the API key's variable goes into the spec: the
 * spec is stored in the workflow history.
 */
export function resolveModelSpec(
  choice: ModelChoice,
  environment: NodeJS.ProcessEnv,
  home: string,
): ResolvedModel {
  const form = parseModelForm(choice.model, environment);
  const accepted = OPTIONS_ACCEPTED[form.provider];
  for (const option of Object.keys(OPTION_FLAGS) as ModelOption[]) {
    if (choice[option] === undefined || accepted.includes(option)) continue;
    const providers = (Object.keys(OPTIONS_ACCEPTED) as Provider[]).filter((provider) =>
      OPTIONS_ACCEPTED[provider].includes(option),
    );
    const listed = `${providers.slice(0, -1).join(', ')} and ${providers[providers.length - 1]}`;
    throw new AgentsError(
      'invalid_argument',
      `${OPTION_FLAGS[option]} does not apply to the ${form.provider} provider: it is accepted with ${listed}`,
    );
  }
  const spec = buildSpec(form, choice, environment);
  const notes: string[] = [];
  if (spec.provider === 'openai' || spec.provider === 'anthropic') {
    if (spec.price === undefined) {
      const price = lookupPrice(spec.model, loadPriceTable(home));
      if (price === undefined) {
        notes.push(
          `No price known for ${spec.provider} model ${spec.model}: cost budgets cannot count its spend; ` +
            `pass --price <in>,<out> or add it to ${pricesFile(home)}`,
        );
      } else {
        spec.price = price;
      }
    }
    const key = environment[spec.apiKeyEnv];
    if (key === undefined || key === '') {
      notes.push(
        `${spec.apiKeyEnv} is not set here: the worker calling ${spec.baseUrl} needs it, unless that server takes no key`,
      );
    }
  }
  return { spec, notes };
}

/** The user's price table: `$AGENTS_HOME/prices.json`. */
export function pricesFile(home: string): string {
  return path.join(home, 'prices.json');
}

const priceTableSchema = z.record(z.string().regex(/^[^/\s]+$/), modelPriceSchema, {
  error: (issue) =>
    issue.code === 'invalid_key'
      ? 'must be a model name prefix such as "gpt-4o", with no spaces and no vendor part before "/"'
      : undefined,
});

/**
 * The prices models are charged at: the user's `$AGENTS_HOME/prices.json`, mapping a model name
 * prefix to `{ "inputUsdPerMTok": n, "outputUsdPerMTok": n }`, merged over the built-in prices (the
 * longest matching prefix of the merged table wins). No file means the built-in prices alone.
 */
export function loadPriceTable(home: string): Record<string, ModelPrice> {
  const file = pricesFile(home);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { ...DEFAULT_PRICES };
    const reason = (error as Error).message;
    throw new AgentsError('invalid_environment', `Cannot read the price table ${file}: ${reason}`, {
      cause: error,
    });
  }
  const expected =
    'expected {"<model prefix>": {"inputUsdPerMTok": <$ per million>, "outputUsdPerMTok": <$ per million>}}';
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new AgentsError('invalid_environment', `Invalid price table ${file}: not valid JSON; ${expected}`, {
      cause: error,
    });
  }
  const parsed = priceTableSchema.safeParse(json);
  if (!parsed.success) {
    throw new AgentsError(
      'invalid_environment',
      `Invalid price table ${file}: ${describeZodError(parsed.error)}; ${expected}`,
    );
  }
  return { ...DEFAULT_PRICES, ...parsed.data };
}

/** Splits `--model` into its provider and what follows the first ":" (Ollama's names hold colons too). */
function parseModelForm(value: string, environment: NodeJS.ProcessEnv): ModelForm {
  const colon = value.indexOf(':');
  const provider = colon === -1 ? value : value.slice(0, colon);
  const rest = colon === -1 ? undefined : value.slice(colon + 1);
  switch (provider) {
    case 'scripted':
      if (rest !== undefined && rest.trim() === '')
        throw emptyName(value, 'a script file', 'scripted:turns.json');
      return { provider, scriptFile: rest };
    case 'local': {
      if (rest === undefined) return { provider };
      const model = rest.trim();
      if (model === '') throw emptyName(value, 'a model name', 'local:gemma-3-270m-q4_k_m');
      if (model.includes('/') && !path.isAbsolute(model)) {
        throw new AgentsError(
          'unknown_model',
          `Invalid --model '${value}': a local model is a file name under the worker's $AGENTS_HOME/models (".gguf" optional) or an absolute path`,
        );
      }
      return { provider, model };
    }
    case 'openai':
    case 'anthropic': {
      const { modelVariable, example } = REMOTE_DEFAULTS[provider];
      if (rest !== undefined) {
        const model = rest.trim();
        if (model === '') throw emptyName(value, 'a model name', `${provider}:${example}`);
        return { provider, model };
      }
      const model = environment[modelVariable]?.trim() ?? '';
      if (model === '') {
        throw new AgentsError(
          'invalid_environment',
          `--model ${provider} takes its model from ${modelVariable}, which is not set: set it or pass --model ${provider}:<model>, for example ${provider}:${example}`,
        );
      }
      return { provider, model };
    }
    default:
      throw new AgentsError(
        'unknown_model',
        `Unknown model '${value}'. Accepted: ${MODEL_OPTION_FORMS.join(', ')}`,
      );
  }
}

function emptyName(value: string, what: string, example: string): AgentsError {
  return new AgentsError(
    'unknown_model',
    `Invalid --model '${value}': ${what} is required after ':', for example ${example}`,
  );
}

/** The spec of a form with the options applied, every default filled in by the provider's schema. */
function buildSpec(form: ModelForm, choice: ModelChoice, environment: NodeJS.ProcessEnv): ModelSpec {
  switch (form.provider) {
    case 'scripted':
      return form.scriptFile === undefined
        ? scriptedModelSchema.parse({ provider: 'scripted', turns: DEMO_SCRIPT })
        : readScript(form.scriptFile);
    case 'local': {
      const shape = localModelSchema.shape;
      return checked(choice.model, localModelSchema, {
        provider: 'local',
        model: form.model,
        maxOutputTokens: numberOption(choice, 'maxOutputTokens', shape.maxOutputTokens.unwrap()),
        temperature: numberOption(choice, 'temperature', shape.temperature.unwrap()),
      });
    }
    case 'openai':
    case 'anthropic': {
      const schema = REMOTE_SCHEMAS[form.provider];
      return checked(choice.model, schema, {
        provider: form.provider,
        model: form.model,
        baseUrl: baseUrlOption(choice, REMOTE_DEFAULTS[form.provider].baseUrlVariable, environment),
        apiKeyEnv: apiKeyEnvOption(choice),
        maxOutputTokens: numberOption(choice, 'maxOutputTokens', schema.shape.maxOutputTokens.unwrap()),
        temperature: numberOption(choice, 'temperature', schema.shape.temperature.unwrap()),
        price: priceOption(choice),
      });
    }
  }
}

/** Parses a draft whose options were each checked already; what is left is the model name's length. */
function checked(value: string, schema: z.ZodType<ModelSpec>, draft: object): ModelSpec {
  const defined = Object.fromEntries(Object.entries(draft).filter(([, field]) => field !== undefined));
  const parsed = schema.safeParse(defined);
  if (!parsed.success) {
    throw new AgentsError('unknown_model', `Invalid --model '${value}': ${describeZodError(parsed.error)}`);
  }
  return parsed.data;
}

function readScript(file: string): ModelSpec {
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

function numberOption(choice: ModelChoice, option: ModelOption, schema: z.ZodNumber): number | undefined {
  const raw = choice[option];
  if (raw === undefined) return undefined;
  const value = raw.trim() === '' ? Number.NaN : Number(raw);
  if (schema.safeParse(value).success) return value;
  const kind = schema.isInt ? 'a whole number' : 'a number';
  throw new AgentsError(
    'invalid_argument',
    `Invalid ${OPTION_FLAGS[option]} '${raw}': must be ${kind} from ${schema.minValue} to ${schema.maxValue}`,
  );
}

function priceOption(choice: ModelChoice): ModelPrice | undefined {
  if (choice.price === undefined) return undefined;
  const [input, output, ...extra] = choice.price
    .split(',')
    .map((part) => (part.trim() === '' ? NaN : Number(part)));
  const parsed = modelPriceSchema.safeParse({ inputUsdPerMTok: input, outputUsdPerMTok: output });
  if (parsed.success && extra.length === 0) return parsed.data;
  const limit = modelPriceSchema.shape.inputUsdPerMTok.maxValue;
  throw new AgentsError(
    'invalid_argument',
    `Invalid --price '${choice.price}': must be <input>,<output> in dollars per million tokens, each from 0 to ${limit}, for example 3,15`,
  );
}

/** `--base-url`, else the variable the provider's own SDK reads, else the schema's official URL. */
function baseUrlOption(
  choice: ModelChoice,
  variable: string,
  environment: NodeJS.ProcessEnv,
): string | undefined {
  const fromEnvironment = environment[variable] === '' ? undefined : environment[variable];
  const [source, value] =
    choice.baseUrl !== undefined ? [OPTION_FLAGS.baseUrl, choice.baseUrl] : [variable, fromEnvironment];
  if (value === undefined) return undefined;
  // The schema's credential check needs a parsable URL: test that first.
  const parsed = URL.canParse(value)
    ? openaiModelSchema.shape.baseUrl.unwrap().safeParse(value)
    : { success: false as const, error: undefined };
  if (parsed.success) return value;
  const reason = parsed.error === undefined ? 'must be an http(s) URL' : describeZodError(parsed.error);
  throw new AgentsError(
    source === variable ? 'invalid_environment' : 'invalid_argument',
    `Invalid ${source} '${withoutCredentials(value)}': ${reason}`,
  );
}

/** Shows a URL with its credentials hidden, so an error message never repeats a secret. */
function withoutCredentials(value: string): string {
  if (!URL.canParse(value)) return value;
  const url = new URL(value);
  if (url.username === '' && url.password === '') return value;
  url.username = '***';
  if (url.password !== '') url.password = '***';
  return url.toString();
}

function apiKeyEnvOption(choice: ModelChoice): string | undefined {
  const name = choice.apiKeyEnv;
  if (name === undefined) return undefined;
  // A long lower-case name with digits is far likelier a pasted key ("gsk_…") than a variable name.
  const looksLikeKey = name.length >= 24 && /[a-z]/.test(name) && /\d/.test(name);
  if (openaiModelSchema.shape.apiKeyEnv.unwrap().safeParse(name).success && !looksLikeKey) return name;
  // The value is not repeated: it may be the key itself.
  throw new AgentsError(
    'invalid_argument',
    'Invalid --api-key-env: must be the NAME of the environment variable holding the key on the worker, such as OPENAI_API_KEY, never the key itself',
  );
}
