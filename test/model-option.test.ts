import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEMO_SCRIPT } from '../client/demo-script';
import { AgentsError, type AgentsErrorCode } from '../client/errors';
import {
  loadPriceTable,
  MODEL_OPTION_FORMS,
  parseModelOption,
  pricesFile,
  resolveModelSpec,
  type ModelChoice,
  type ResolvedModel,
} from '../client/model-option';
import { modelSpecSchema, type ModelSpec } from '../common/agent-input';
import {
  DEFAULT_LOCAL_CONTEXT_TOKENS,
  DEFAULT_LOCAL_MAX_OUTPUT_TOKENS,
  DEFAULT_LOCAL_MODEL,
  DEFAULT_MAX_OUTPUT_TOKENS,
  DEFAULT_STALL_TIMEOUT_S,
} from '../common/constants';
import { DEFAULT_PRICES } from '../models/prices';

/** Root of every temporary folder this file creates, removed at the end. */
let scratchRoot: string;

before(async () => {
  scratchRoot = await mkdtemp(path.join(os.tmpdir(), 'agents-model-option-'));
});

after(async () => {
  await rm(scratchRoot, { recursive: true, force: true });
});

/** A new empty `$AGENTS_HOME` of its own for one test. */
function freshHome(): Promise<string> {
  return mkdtemp(path.join(scratchRoot, 'home-'));
}

/** A home whose `prices.json` holds `content`. */
async function homeWithPrices(content: string): Promise<string> {
  const home = await freshHome();
  await writeFile(pricesFile(home), content);
  return home;
}

/** An environment with keys set, so that the tests see no note about a missing key unless they mean to. */
const KEYED: NodeJS.ProcessEnv = { OPENAI_API_KEY: 'sk-test-openai', ANTHROPIC_API_KEY: 'sk-ant-test' };

function resolve(choice: ModelChoice, environment: NodeJS.ProcessEnv, home: string): ResolvedModel {
  const resolved = resolveModelSpec(choice, environment, home);
  // Whatever the CLI builds must be what the workflow input accepts, unchanged.
  assert.deepEqual(modelSpecSchema.parse(resolved.spec), resolved.spec);
  return resolved;
}

/** Runs `action`, asserts that it throws a one-line AgentsError with `code` naming every mention. */
function assertAgentsError(action: () => unknown, code: AgentsErrorCode, ...mentions: string[]): AgentsError {
  let caught: unknown;
  try {
    action();
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof AgentsError, `expected an AgentsError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  assert.ok(!caught.message.includes('\n'), `not one line: ${JSON.stringify(caught.message)}`);
  for (const mention of mentions) assert.ok(caught.message.includes(mention), caught.message);
  return caught;
}

describe('--model forms', () => {
  it('plays the demo script for "scripted", with no notes', async () => {
    const { spec, notes } = resolve({ model: 'scripted' }, KEYED, await freshHome());
    assert.equal(spec.provider, 'scripted');
    assert.equal(spec.provider === 'scripted' && spec.turns.length, DEMO_SCRIPT.length);
    assert.deepEqual(notes, []);
  });

  it('embeds the turns of "scripted:<script.json>"', async () => {
    const home = await freshHome();
    const file = path.join(home, 'script.json');
    await writeFile(file, JSON.stringify([{ text: 'hello' }]));
    const { spec } = resolve({ model: `scripted:${file}` }, KEYED, home);
    assert.ok(spec.provider === 'scripted');
    assert.deepEqual(
      spec.turns.map((turn) => turn.text),
      ['hello'],
    );
  });

  it('picks the default local model for "local", every default filled in', async () => {
    const { spec, notes } = resolve({ model: 'local' }, KEYED, await freshHome());
    assert.deepEqual(spec, {
      provider: 'local',
      model: DEFAULT_LOCAL_MODEL,
      maxOutputTokens: DEFAULT_LOCAL_MAX_OUTPUT_TOKENS,
      temperature: 0,
      contextTokens: DEFAULT_LOCAL_CONTEXT_TOKENS,
    });
    assert.deepEqual(notes, []);
  });

  it('names a local model by file name or by absolute path', async () => {
    const home = await freshHome();
    for (const model of ['qwen2.5-0.5b-instruct-q4_k_m', 'tiny.gguf', '/opt/models/tiny.gguf']) {
      const { spec } = resolve({ model: `local:${model}` }, KEYED, home);
      assert.ok(spec.provider === 'local');
      assert.equal(spec.model, model);
    }
  });

  it('applies --temperature and --max-output-tokens to a local model', async () => {
    const { spec } = resolve(
      { model: 'local', temperature: '0.7', maxOutputTokens: '256' },
      KEYED,
      await freshHome(),
    );
    assert.ok(spec.provider === 'local');
    assert.equal(spec.temperature, 0.7);
    assert.equal(spec.maxOutputTokens, 256);
  });

  it('refuses a relative local path, which the worker would look for under its models folder', async () => {
    const home = await freshHome();
    assertAgentsError(
      () => resolve({ model: 'local:./models/tiny.gguf' }, KEYED, home),
      'unknown_model',
      "'local:./models/tiny.gguf'",
      'absolute path',
    );
  });

  it('builds an OpenAI spec with the official URL, the default key variable and defaults', async () => {
    const { spec } = resolve({ model: 'openai:gpt-4o-mini' }, KEYED, await freshHome());
    assert.deepEqual(spec, {
      provider: 'openai',
      model: 'gpt-4o-mini',
      baseUrl: 'https://api.openai.com/v1',
      apiKeyEnv: 'OPENAI_API_KEY',
      maxOutputTokens: DEFAULT_MAX_OUTPUT_TOKENS,
      stallTimeoutS: DEFAULT_STALL_TIMEOUT_S,
      price: DEFAULT_PRICES['gpt-4o-mini'],
    });
  });

  it('builds an Anthropic spec with the official URL and the default key variable', async () => {
    const { spec } = resolve({ model: 'anthropic:claude-sonnet-4-5' }, KEYED, await freshHome());
    assert.ok(spec.provider === 'anthropic');
    assert.equal(spec.model, 'claude-sonnet-4-5');
    assert.equal(spec.baseUrl, 'https://api.anthropic.com');
    assert.equal(spec.apiKeyEnv, 'ANTHROPIC_API_KEY');
  });

  it('keeps the colons of a model name, as Ollama writes them', async () => {
    const { spec } = resolve(
      { model: 'openai:llama3.1:8b', baseUrl: 'http://127.0.0.1:11434/v1' },
      KEYED,
      await freshHome(),
    );
    assert.ok(spec.provider === 'openai');
    assert.equal(spec.model, 'llama3.1:8b');
    assert.equal(spec.baseUrl, 'http://127.0.0.1:11434/v1');
  });

  it('applies every remote option given', async () => {
    const { spec } = resolve(
      {
        model: 'openai:my-model',
        baseUrl: 'http://localhost:8000/v1',
        apiKeyEnv: 'VLLM_KEY',
        maxOutputTokens: '1000',
        temperature: '1.5',
        price: '0.5, 2',
      },
      { VLLM_KEY: 'secret' },
      await freshHome(),
    );
    assert.deepEqual(spec, {
      provider: 'openai',
      model: 'my-model',
      baseUrl: 'http://localhost:8000/v1',
      apiKeyEnv: 'VLLM_KEY',
      maxOutputTokens: 1000,
      temperature: 1.5,
      price: { inputUsdPerMTok: 0.5, outputUsdPerMTok: 2 },
      stallTimeoutS: DEFAULT_STALL_TIMEOUT_S,
    });
  });

  it('takes the model of "openai" and "anthropic" alone from OPENAI_MODEL and ANTHROPIC_MODEL', async () => {
    const home = await freshHome();
    const environment = { ...KEYED, OPENAI_MODEL: 'gpt-4.1', ANTHROPIC_MODEL: 'claude-haiku-4-5' };
    const openai = resolve({ model: 'openai' }, environment, home).spec;
    const anthropic = resolve({ model: 'anthropic' }, environment, home).spec;
    assert.ok(openai.provider === 'openai' && anthropic.provider === 'anthropic');
    assert.equal(openai.model, 'gpt-4.1');
    assert.equal(anthropic.model, 'claude-haiku-4-5');
  });

  it('refuses "openai" alone when OPENAI_MODEL is unset or empty, naming the variable', async () => {
    const home = await freshHome();
    for (const environment of [KEYED, { ...KEYED, OPENAI_MODEL: '' }]) {
      assertAgentsError(
        () => resolve({ model: 'openai' }, environment, home),
        'invalid_environment',
        'OPENAI_MODEL',
        'openai:<model>',
      );
    }
    assertAgentsError(
      () => resolve({ model: 'anthropic' }, KEYED, home),
      'invalid_environment',
      'ANTHROPIC_MODEL',
    );
  });

  it('refuses an unknown form, listing every accepted form', async () => {
    const home = await freshHome();
    for (const value of ['gpt-4o', 'gemini:pro', 'OpenAI:gpt-4o', '']) {
      const error = assertAgentsError(
        () => resolve({ model: value }, KEYED, home),
        'unknown_model',
        `'${value}'`,
      );
      for (const form of MODEL_OPTION_FORMS) assert.ok(error.message.includes(form), error.message);
    }
  });

  it('refuses an empty name after the colon, with an example', async () => {
    const home = await freshHome();
    for (const value of ['openai:', 'anthropic: ', 'local:', 'scripted:']) {
      assertAgentsError(
        () => resolve({ model: value }, KEYED, home),
        'unknown_model',
        `'${value}'`,
        'for example',
      );
    }
  });

  it('refuses a model name longer than the schema allows', () => {
    assertAgentsError(
      () => resolve({ model: `openai:${'x'.repeat(201)}` }, KEYED, '/nonexistent'),
      'unknown_model',
      'model',
    );
  });

  it('keeps parseModelOption for a --model value alone, with no price filled in', () => {
    const spec = parseModelOption('anthropic:claude-sonnet-4', {});
    assert.ok(spec.provider === 'anthropic');
    assert.equal(spec.price, undefined);
    assert.equal(parseModelOption('local:tiny', {}).provider, 'local');
  });
});

describe('--model options', () => {
  it('refuses a temperature that is not a number from 0 to 2', async () => {
    const home = await freshHome();
    for (const temperature of ['hot', '', '2.5', '-1']) {
      assertAgentsError(
        () => resolve({ model: 'openai:gpt-4o', temperature }, KEYED, home),
        'invalid_argument',
        `Invalid --temperature '${temperature}': must be a number from 0 to 2`,
      );
    }
  });

  it('refuses output tokens that are not a whole number in the provider range', async () => {
    const home = await freshHome();
    assertAgentsError(
      () => resolve({ model: 'openai:gpt-4o', maxOutputTokens: '1.5' }, KEYED, home),
      'invalid_argument',
      "Invalid --max-output-tokens '1.5': must be a whole number from 1 to 1000000",
    );
    assertAgentsError(
      () => resolve({ model: 'local', maxOutputTokens: '100000' }, KEYED, home),
      'invalid_argument',
      'from 1 to 32768',
    );
  });

  it('refuses a price that is not two amounts in dollars per million tokens', async () => {
    const home = await freshHome();
    for (const price of ['3', '3,15,1', 'three,15', '3,', '-1,2', '3;15', '20000,1']) {
      assertAgentsError(
        () => resolve({ model: 'openai:gpt-4o', price }, KEYED, home),
        'invalid_argument',
        `Invalid --price '${price}'`,
        '<input>,<output>',
        '3,15',
      );
    }
  });

  it('refuses an option the provider does not take, naming the providers that do', async () => {
    const home = await freshHome();
    const cases: Array<[ModelChoice, string, string]> = [
      [{ model: 'scripted', baseUrl: 'http://localhost:1/v1' }, '--base-url', 'openai and anthropic'],
      [{ model: 'local', baseUrl: 'http://localhost:1/v1' }, '--base-url', 'openai and anthropic'],
      [{ model: 'local', apiKeyEnv: 'MY_KEY' }, '--api-key-env', 'openai and anthropic'],
      [{ model: 'local:tiny', price: '1,2' }, '--price', 'openai and anthropic'],
      [{ model: 'scripted', temperature: '1' }, '--temperature', 'local, openai and anthropic'],
      [{ model: 'scripted', maxOutputTokens: '10' }, '--max-output-tokens', 'local, openai and anthropic'],
    ];
    for (const [choice, flag, accepted] of cases) {
      const provider = choice.model.split(':')[0];
      assertAgentsError(
        () => resolve(choice, KEYED, home),
        'invalid_argument',
        `${flag} does not apply to the ${provider} provider`,
        accepted,
      );
    }
  });

  it('refuses a base URL that is not http(s)', async () => {
    const home = await freshHome();
    for (const baseUrl of ['localhost:11434', 'ftp://models.example.com', 'not a url']) {
      assertAgentsError(
        () => resolve({ model: 'openai:gpt-4o', baseUrl }, KEYED, home),
        'invalid_argument',
        `Invalid --base-url '${baseUrl}'`,
        'http(s)',
      );
    }
  });

  it('refuses a base URL with credentials without repeating them', async () => {
    const home = await freshHome();
    const error = assertAgentsError(
      () =>
        resolve({ model: 'openai:gpt-4o', baseUrl: 'https://me:hunter2@llm.example.com/v1' }, KEYED, home),
      'invalid_argument',
      'must not contain credentials',
      'llm.example.com',
    );
    assert.ok(!error.message.includes('hunter2'), error.message);
  });

  it('takes the base URL from OPENAI_BASE_URL and ANTHROPIC_BASE_URL when --base-url is not given', async () => {
    const home = await freshHome();
    const environment = {
      ...KEYED,
      OPENAI_BASE_URL: 'http://127.0.0.1:11434/v1',
      ANTHROPIC_BASE_URL: 'https://anthropic.proxy.example.com',
    };
    const openai = resolve({ model: 'openai:gpt-4o' }, environment, home).spec;
    const anthropic = resolve({ model: 'anthropic:claude-sonnet-4' }, environment, home).spec;
    assert.ok(openai.provider === 'openai' && anthropic.provider === 'anthropic');
    assert.equal(openai.baseUrl, 'http://127.0.0.1:11434/v1');
    assert.equal(anthropic.baseUrl, 'https://anthropic.proxy.example.com');
  });

  it('prefers --base-url to the environment, and ignores an empty variable', async () => {
    const home = await freshHome();
    const overridden = resolve(
      { model: 'openai:gpt-4o', baseUrl: 'http://localhost:1234/v1' },
      { ...KEYED, OPENAI_BASE_URL: 'http://127.0.0.1:11434/v1' },
      home,
    ).spec;
    assert.ok(overridden.provider === 'openai');
    assert.equal(overridden.baseUrl, 'http://localhost:1234/v1');
    const empty = resolve({ model: 'openai:gpt-4o' }, { ...KEYED, OPENAI_BASE_URL: '' }, home).spec;
    assert.ok(empty.provider === 'openai');
    assert.equal(empty.baseUrl, 'https://api.openai.com/v1');
  });

  it('refuses a bad OPENAI_BASE_URL as an environment error naming the variable', async () => {
    const home = await freshHome();
    const error = assertAgentsError(
      () =>
        resolve(
          { model: 'openai:gpt-4o' },
          { ...KEYED, OPENAI_BASE_URL: 'https://u:p4ss@x.example.com' },
          home,
        ),
      'invalid_environment',
      'OPENAI_BASE_URL',
      'credentials',
    );
    assert.ok(!error.message.includes('p4ss'), error.message);
  });
});

describe('API keys', () => {
  const OPENAI_KEY = 'sk-proj-0123456789abcdefSECRET';
  const OTHER_KEY = 'gsk_0123456789abcdefghijSECRET';

  it('puts only the name of the key variable in the spec, never its value', async () => {
    const home = await freshHome();
    const environment = { OPENAI_API_KEY: OPENAI_KEY, GROQ_API_KEY: OTHER_KEY };
    const specs: ModelSpec[] = [
      resolve({ model: 'openai:gpt-4o' }, environment, home).spec,
      resolve(
        {
          model: 'openai:llama-3.3-70b',
          apiKeyEnv: 'GROQ_API_KEY',
          baseUrl: 'https://api.groq.com/openai/v1',
        },
        environment,
        home,
      ).spec,
    ];
    assert.deepEqual(
      specs.map((spec) => spec.provider === 'openai' && spec.apiKeyEnv),
      ['OPENAI_API_KEY', 'GROQ_API_KEY'],
    );
    for (const spec of specs) {
      const json = JSON.stringify(spec);
      assert.ok(!json.includes('SECRET'), json);
    }
  });

  it('refuses a key passed as --api-key-env without repeating it', async () => {
    const home = await freshHome();
    for (const apiKeyEnv of [OPENAI_KEY, OTHER_KEY, '']) {
      const error = assertAgentsError(
        () => resolve({ model: 'openai:gpt-4o', apiKeyEnv }, {}, home),
        'invalid_argument',
        'Invalid --api-key-env',
        'NAME',
      );
      assert.ok(!error.message.includes('SECRET'), error.message);
    }
  });

  it('notes a key variable that is not set here, since the worker will need it', async () => {
    const { notes } = resolve(
      { model: 'anthropic:claude-sonnet-4', apiKeyEnv: 'TEAM_ANTHROPIC_KEY' },
      {},
      await freshHome(),
    );
    assert.equal(notes.length, 1);
    assert.ok(notes[0]?.includes('TEAM_ANTHROPIC_KEY is not set'), notes[0]);
  });
});

describe('prices', () => {
  it('writes the built-in price into the spec when the home has no price table', async () => {
    const { spec, notes } = resolve(
      { model: 'anthropic:claude-sonnet-4-20250514' },
      KEYED,
      await freshHome(),
    );
    assert.ok(spec.provider === 'anthropic');
    assert.deepEqual(spec.price, DEFAULT_PRICES['claude-sonnet-4']);
    assert.deepEqual(notes, []);
  });

  it('finds a router model by its name without the vendor part', async () => {
    const { spec } = resolve(
      { model: 'openai:anthropic/claude-3-5-haiku', baseUrl: 'https://openrouter.ai/api/v1' },
      KEYED,
      await freshHome(),
    );
    assert.ok(spec.provider === 'openai');
    assert.deepEqual(spec.price, DEFAULT_PRICES['claude-3-5-haiku']);
  });

  it('prefers --price to every table', async () => {
    const home = await homeWithPrices(
      JSON.stringify({ 'gpt-4o': { inputUsdPerMTok: 9, outputUsdPerMTok: 9 } }),
    );
    const { spec } = resolve({ model: 'openai:gpt-4o', price: '3,15' }, KEYED, home);
    assert.ok(spec.provider === 'openai');
    assert.deepEqual(spec.price, { inputUsdPerMTok: 3, outputUsdPerMTok: 15 });
  });

  it('reads prices.json over the built-in prices: its entries win, the others stay', async () => {
    const home = await homeWithPrices(
      JSON.stringify({
        'gpt-4o': { inputUsdPerMTok: 2, outputUsdPerMTok: 8 },
        'my-model': { inputUsdPerMTok: 0.1, outputUsdPerMTok: 0.2 },
      }),
    );
    const table = loadPriceTable(home);
    assert.deepEqual(table['gpt-4o'], { inputUsdPerMTok: 2, outputUsdPerMTok: 8 });
    assert.deepEqual(table['gpt-4o-mini'], DEFAULT_PRICES['gpt-4o-mini']);
    const priceOf = (model: string) => {
      const { spec } = resolve({ model: `openai:${model}` }, KEYED, home);
      return spec.provider === 'openai' ? spec.price : undefined;
    };
    assert.deepEqual(priceOf('gpt-4o-2024-08-06'), { inputUsdPerMTok: 2, outputUsdPerMTok: 8 });
    assert.deepEqual(priceOf('gpt-4o-mini'), DEFAULT_PRICES['gpt-4o-mini']);
    assert.deepEqual(priceOf('my-model-v2'), { inputUsdPerMTok: 0.1, outputUsdPerMTok: 0.2 });
  });

  it('gives no price to a model no table knows, and says how to give one', async () => {
    const home = await freshHome();
    const { spec, notes } = resolve({ model: 'openai:my-model' }, KEYED, home);
    assert.ok(spec.provider === 'openai');
    assert.equal(spec.price, undefined);
    assert.deepEqual(notes, [
      `No price known for openai model my-model: cost budgets cannot count its spend; pass --price <in>,<out> or add it to ${path.join(home, 'prices.json')}`,
    ]);
  });

  it('does not read the price table for scripted and local models', async () => {
    const home = await homeWithPrices('not json');
    assert.deepEqual(resolve({ model: 'local' }, KEYED, home).notes, []);
    assert.deepEqual(resolve({ model: 'scripted' }, KEYED, home).notes, []);
  });

  it('refuses a price table that is not JSON, naming the file, on one line', async () => {
    const home = await homeWithPrices('{\n  "gpt-4o": {\n');
    assertAgentsError(
      () => resolve({ model: 'openai:gpt-4o' }, KEYED, home),
      'invalid_environment',
      pricesFile(home),
      'not valid JSON',
      'inputUsdPerMTok',
    );
  });

  it('refuses a price table with a bad entry, naming the file and the field', async () => {
    const cases: Array<[unknown, string]> = [
      [{ 'gpt-4o': { inputUsdPerMTok: '2.5', outputUsdPerMTok: 10 } }, 'gpt-4o.inputUsdPerMTok'],
      [{ 'gpt-4o': { inputUsdPerMTok: 2.5 } }, 'gpt-4o.outputUsdPerMTok'],
      [{ 'gpt-4o': { inputUsdPerMTok: -1, outputUsdPerMTok: 10 } }, 'gpt-4o.inputUsdPerMTok'],
      [{ 'gpt-4o': { inputUsdPerMTok: 1, outputUsdPerMTok: 1, cached: 1 } }, 'cached'],
      [
        { 'openai/gpt-4o': { inputUsdPerMTok: 1, outputUsdPerMTok: 1 } },
        'openai/gpt-4o: must be a model name prefix',
      ],
      [[{ inputUsdPerMTok: 1, outputUsdPerMTok: 1 }], 'expected record'],
    ];
    for (const [content, field] of cases) {
      const home = await homeWithPrices(JSON.stringify(content));
      assertAgentsError(() => loadPriceTable(home), 'invalid_environment', pricesFile(home), field);
    }
  });

  it('refuses a price table it cannot read, naming the file', async () => {
    const home = await freshHome();
    await mkdir(pricesFile(home));
    assertAgentsError(() => loadPriceTable(home), 'invalid_environment', pricesFile(home));
  });

  it('uses the built-in prices alone when the home has no price table', async () => {
    assert.deepEqual(loadPriceTable(await freshHome()), DEFAULT_PRICES);
  });
});
