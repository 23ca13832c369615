import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { after, afterEach, beforeEach, describe, it } from 'node:test';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { MockAgent } from 'undici';
import {
  anthropicModelSchema,
  openaiModelSchema,
  type AnthropicModelSpec,
  type OpenAIModelSpec,
} from '../common/agent-input';
import type { TranscriptMessage } from '../common/agent-run-types';
import { MODEL_REQUEST_REJECTED_FAILURE, MODEL_UNAVAILABLE_FAILURE } from '../common/constants';
import { AnthropicModel } from '../models/anthropic-model';
import { createModelDispatcher, type RemoteModelSpec } from '../models/http';
import {
  ModelTurnStopped,
  type ModelProvider,
  type ModelRequest,
  type ModelResponse,
  type ToolDefinition,
} from '../models/model-provider';
import { OpenAIModel } from '../models/openai-model';
import { parseServerSentEvents, type ServerSentEvent } from '../models/sse';
import {
  anthropicStream,
  eventStreamText,
  ModelApiServer,
  openaiStream,
  type ReplyStep,
  type ScriptedAnswer,
} from './helpers/model-api-server';
import { waitFor } from './helpers/wait';

const OPENAI_KEY = 'sk-test-openai-0123456789abcdef';
const ANTHROPIC_KEY = 'sk-ant-test-0123456789abcdef';
const ENVIRONMENT = { TEST_OPENAI_KEY: OPENAI_KEY, TEST_ANTHROPIC_KEY: ANTHROPIC_KEY };

const dispatcher = createModelDispatcher();
after(() => dispatcher.close());

const TOOLS: ToolDefinition[] = [
  {
    name: 'read_file',
    description: 'Reads a file of the workspace.',
    parameters: { type: 'object', properties: { path: { type: 'string' } }, required: ['path'] },
  },
  {
    name: 'bash',
    description: 'Runs a shell command.',
    parameters: { type: 'object', properties: { command: { type: 'string' } }, required: ['command'] },
  },
];

/** A conversation with one finished tool round: a call, its result, then the next user message. */
const CONVERSATION: TranscriptMessage[] = [
  { role: 'user', content: 'Fix the build.' },
  {
    role: 'assistant',
    content: 'Looking at the files.',
    toolCalls: [
      { id: 'call_a', tool: 'read_file', arguments: { path: 'package.json' } },
      { id: 'call_b', tool: 'bash', arguments: { command: 'npm test' } },
    ],
  },
  { role: 'tool', toolCallId: 'call_a', tool: 'read_file', content: '{"name":"x"}', success: true },
  { role: 'tool', toolCallId: 'call_b', tool: 'bash', content: 'exit 1', success: false },
  { role: 'user', content: 'Iteration 2: go on.' },
];

/** A call under test: the request, its cancellation, and how often it reported progress. */
interface Call<Spec extends RemoteModelSpec> {
  request: ModelRequest<Spec>;
  controller: AbortController;
  progress: () => number;
}

function callOf<Spec extends RemoteModelSpec>(
  spec: Spec,
  overrides: Partial<ModelRequest<Spec>> = {},
): Call<Spec> {
  const controller = new AbortController();
  let progress = 0;
  const request: ModelRequest<Spec> = {
    spec,
    systemPrompt: 'You are a careful engineer.',
    messages: [{ role: 'user', content: 'Say hello.' }],
    tools: TOOLS,
    callIndex: 0,
    attempt: 1,
    signal: controller.signal,
    onProgress: () => {
      progress += 1;
    },
    ...overrides,
  };
  return { request, controller, progress: () => progress };
}

/** Awaits a call expected to fail and returns its failure for further checks. */
async function failureOf(promise: Promise<unknown>): Promise<ApplicationFailure> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ApplicationFailure, `expected an ApplicationFailure, got ${String(error)}`);
    return error;
  }
  assert.fail('expected the model call to fail');
}

function assertUnavailable(failure: ApplicationFailure, ...fragments: string[]): void {
  assert.equal(failure.type, MODEL_UNAVAILABLE_FAILURE, failure.message);
  assert.equal(failure.nonRetryable, false);
  for (const fragment of fragments) assert.ok(failure.message.includes(fragment), failure.message);
}

function assertRejected(failure: ApplicationFailure, ...fragments: string[]): void {
  assert.equal(failure.type, MODEL_REQUEST_REJECTED_FAILURE, failure.message);
  assert.equal(failure.nonRetryable, true);
  for (const fragment of fragments) assert.ok(failure.message.includes(fragment), failure.message);
}

/** What the provider-independent tests need to know of a provider. */
interface ProviderCase<Spec extends RemoteModelSpec> {
  name: string;
  key: string;
  create: (environment: NodeJS.ProcessEnv) => ModelProvider<Spec>;
  spec: (server: ModelApiServer, overrides?: Record<string, unknown>) => Spec;
  stream: (answer: ScriptedAnswer) => ReplyStep[];
  /** An error body in the API's format. */
  errorBody: (message: string) => unknown;
}

const openaiCase: ProviderCase<OpenAIModelSpec> = {
  name: 'openai',
  key: OPENAI_KEY,
  create: (environment) => new OpenAIModel({ dispatcher, env: environment }),
  spec: (server, overrides = {}) =>
    openaiModelSchema.parse({
      provider: 'openai',
      model: 'gpt-4o',
      baseUrl: `${server.url}/v1`,
      apiKeyEnv: 'TEST_OPENAI_KEY',
      ...overrides,
    }),
  stream: openaiStream,
  errorBody: (message) => ({ error: { message, type: 'invalid_request_error', param: null, code: null } }),
};

const anthropicCase: ProviderCase<AnthropicModelSpec> = {
  name: 'anthropic',
  key: ANTHROPIC_KEY,
  create: (environment) => new AnthropicModel({ dispatcher, env: environment }),
  spec: (server, overrides = {}) =>
    anthropicModelSchema.parse({
      provider: 'anthropic',
      model: 'claude-sonnet-4-5',
      baseUrl: server.url,
      apiKeyEnv: 'TEST_ANTHROPIC_KEY',
      ...overrides,
    }),
  stream: anthropicStream,
  errorBody: (message) => ({ type: 'error', error: { type: 'invalid_request_error', message } }),
};

/** Replays parser input as the given chunks. */
async function eventsOf(...chunks: Array<string | Uint8Array>): Promise<ServerSentEvent[]> {
  const source = Readable.from(
    chunks.map((chunk) => (typeof chunk === 'string' ? Buffer.from(chunk) : chunk)),
  );
  const events: ServerSentEvent[] = [];
  for await (const event of parseServerSentEvents(source)) events.push(event);
  return events;
}

describe('server-sent events parser', () => {
  it('parses events split anywhere across chunks, whatever the line endings', async () => {
    const stream = 'event: first\r\ndata: one\r\n\r\ndata: {"a":\rdata: 1}\r\r: a comment\n\ndata:two\n\n';
    const expected = [
      { event: 'first', data: 'one' },
      { event: 'message', data: '{"a":\n1}' },
      { event: 'message', data: 'two' },
    ];
    assert.deepEqual(await eventsOf(stream), expected);
    for (let cut = 1; cut < stream.length; cut++) {
      assert.deepEqual(await eventsOf(stream.slice(0, cut), stream.slice(cut)), expected, `cut at ${cut}`);
    }
    assert.deepEqual(await eventsOf(...stream.split('')), expected);
  });

  it('reassembles a UTF-8 character split between chunks', async () => {
    const bytes = Buffer.from('data: héllo ✓\n\n');
    const events = await eventsOf(bytes.subarray(0, 8), bytes.subarray(8, 15), bytes.subarray(15));
    assert.deepEqual(events, [{ event: 'message', data: 'héllo ✓' }]);
  });

  it('reports comments, skips events without data, and keeps a last event that lacks its blank line', async () => {
    const comments: string[] = [];
    const source = Readable.from([
      Buffer.from(': OPENROUTER PROCESSING\n\nevent: ping\n\nid: 7\ndata: [DONE]\n'),
    ]);
    const events: ServerSentEvent[] = [];
    for await (const event of parseServerSentEvents(source, { onComment: (text) => comments.push(text) })) {
      events.push(event);
    }
    assert.deepEqual(events, [{ event: 'message', data: '[DONE]' }]);
    assert.deepEqual(comments, ['OPENROUTER PROCESSING']);
  });

  it('drops a line cut off when the stream ends', async () => {
    assert.deepEqual(await eventsOf('data: whole\n\ndata: {"cut'), [{ event: 'message', data: 'whole' }]);
  });
});

describe('OpenAI Chat Completions provider', () => {
  let server: ModelApiServer;
  beforeEach(async () => {
    server = await ModelApiServer.start();
  });
  afterEach(() => server.close());

  const model = () => new OpenAIModel({ dispatcher, env: ENVIRONMENT });

  it('streams a text answer, reports progress once per event, and prices the usage sent at the end', async () => {
    const events = openaiStream({
      textPieces: ['Hel', 'lo', '!'],
      usage: { inputTokens: 1200, outputTokens: 300 },
    });
    server.reply({ events });
    const call = callOf(openaiCase.spec(server));
    const answer = await model().generate(call.request);
    assert.deepEqual(answer, {
      text: 'Hello!',
      toolCalls: [],
      usage: { inputTokens: 1200, outputTokens: 300 },
      // gpt-4o lists at $2.50 in and $10 out per million tokens.
      costUsd: (1200 * 2.5 + 300 * 10) / 1_000_000,
    });
    assert.equal(call.progress(), events.length);
  });

  it('assembles two parallel tool calls whose arguments arrive cut mid-string across chunks', async () => {
    server.reply({
      events: openaiStream({
        textPieces: ['Checking.'],
        toolCalls: [
          { id: 'call_1', name: 'read_file', argumentPieces: ['{"pa', 'th": "src/ma', 'in.ts"', '}'] },
          {
            id: 'call_2',
            name: 'bash',
            argumentPieces: ['{"command"', ': "npm run b', 'uild && echo \\"ok\\""}'],
          },
        ],
        usage: { inputTokens: 10, outputTokens: 20 },
      }),
    });
    const answer = await model().generate(callOf(openaiCase.spec(server)).request);
    assert.equal(answer.text, 'Checking.');
    assert.deepEqual(answer.toolCalls, [
      { id: 'call_1', tool: 'read_file', arguments: { path: 'src/main.ts' } },
      { id: 'call_2', tool: 'bash', arguments: { command: 'npm run build && echo "ok"' } },
    ]);
  });

  it('returns a tool call whose arguments are not JSON as invalid instead of failing', async () => {
    server.reply({
      events: openaiStream({
        toolCalls: [{ id: 'call_1', name: 'bash', argumentPieces: ['{"command": "ls'] }],
      }),
    });
    const answer = await model().generate(callOf(openaiCase.spec(server)).request);
    assert.equal(answer.toolCalls.length, 1);
    assert.equal(answer.toolCalls[0]?.id, 'call_1');
    assert.match(answer.toolCalls[0]?.invalid ?? '', /Invalid arguments for tool bash: not valid JSON/);
  });

  it('sends the system prompt, the transcript with its tool round, the tools and the bearer key', async () => {
    server.reply({ events: openaiStream({ textPieces: ['ok'] }) });
    const spec = openaiCase.spec(server, { temperature: 0.2, maxOutputTokens: 512 });
    await model().generate(callOf(spec, { messages: CONVERSATION }).request);
    const [sent] = server.requests;
    assert.equal(sent?.method, 'POST');
    assert.equal(sent?.path, '/v1/chat/completions');
    assert.equal(sent?.headers.authorization, `Bearer ${OPENAI_KEY}`);
    assert.equal(sent?.headers['content-type'], 'application/json');
    assert.deepEqual(sent?.body, {
      model: 'gpt-4o',
      messages: [
        { role: 'system', content: 'You are a careful engineer.' },
        { role: 'user', content: 'Fix the build.' },
        {
          role: 'assistant',
          content: 'Looking at the files.',
          tool_calls: [
            {
              id: 'call_a',
              type: 'function',
              function: { name: 'read_file', arguments: '{"path":"package.json"}' },
            },
            {
              id: 'call_b',
              type: 'function',
              function: { name: 'bash', arguments: '{"command":"npm test"}' },
            },
          ],
        },
        { role: 'tool', tool_call_id: 'call_a', content: '{"name":"x"}' },
        { role: 'tool', tool_call_id: 'call_b', content: 'exit 1' },
        { role: 'user', content: 'Iteration 2: go on.' },
      ],
      tools: TOOLS.map((tool) => ({
        type: 'function',
        function: { name: tool.name, description: tool.description, parameters: tool.parameters },
      })),
      stream: true,
      stream_options: { include_usage: true },
      // A compatible server (vLLM, Ollama) knows the limit by its old name.
      max_tokens: 512,
      temperature: 0.2,
    });
  });

  it('leaves out the tools and the auth header when there are none, for a local server without a key', async () => {
    server.reply({ events: openaiStream({ textPieces: ['ok'] }) });
    await new OpenAIModel({ dispatcher, env: {} }).generate(
      callOf(openaiCase.spec(server), { tools: [] }).request,
    );
    const [sent] = server.requests;
    assert.equal(sent?.headers.authorization, undefined);
    assert.equal((sent?.body as Record<string, unknown>).tools, undefined);
  });

  it('names the output limit max_completion_tokens for api.openai.com', async () => {
    const mock = new MockAgent();
    mock.disableNetConnect();
    let sentBody: unknown;
    let sentAuthorization: unknown;
    const stream = eventStreamText(
      openaiStream({ textPieces: ['ok'], usage: { inputTokens: 1, outputTokens: 1 } }),
    );
    mock
      .get('https://api.openai.com')
      .intercept({ path: '/v1/chat/completions', method: 'POST' })
      .reply(
        200,
        (options) => {
          sentBody = JSON.parse(typeof options.body === 'string' ? options.body : '');
          sentAuthorization = (options.headers as Record<string, string>).authorization;
          return stream;
        },
        { headers: { 'content-type': 'text/event-stream' } },
      );
    const spec = openaiModelSchema.parse({
      provider: 'openai',
      model: 'gpt-4o',
      apiKeyEnv: 'TEST_OPENAI_KEY',
    });
    const answer = await new OpenAIModel({ dispatcher: mock, env: ENVIRONMENT }).generate(
      callOf(spec).request,
    );
    await mock.close();
    assert.equal(answer.text, 'ok');
    assert.equal(sentAuthorization, `Bearer ${OPENAI_KEY}`);
    assert.equal((sentBody as Record<string, unknown>).max_completion_tokens, spec.maxOutputTokens);
    assert.equal((sentBody as Record<string, unknown>).max_tokens, undefined);
  });

  it('estimates usage from characters when the server never reports it', async () => {
    server.reply({ events: openaiStream({ textPieces: ['12345678'] }) });
    const call = callOf(openaiCase.spec(server), {
      systemPrompt: 'x'.repeat(30),
      messages: [{ role: 'user', content: 'y'.repeat(10) }],
    });
    const answer = await model().generate(call.request);
    assert.deepEqual(answer.usage, { inputTokens: 10, outputTokens: 2, estimated: true });
  });

  it('fails as unavailable when the stream ends with [DONE] but no finish reason', async () => {
    const events = openaiStream({ textPieces: ['Hel'] }).filter(
      (step) => !('data' in step) || !JSON.stringify(step.data).includes('"finish_reason":"stop"'),
    );
    server.reply({ events });
    assertUnavailable(
      await failureOf(model().generate(callOf(openaiCase.spec(server)).request)),
      'ended early',
    );
  });

  it('fails with the message of an error the server sends inside the stream', async () => {
    server.reply({
      events: [
        ...openaiStream({ textPieces: ['Hel'] }).slice(0, 2),
        { data: { error: { message: 'upstream model crashed', type: 'server_error', code: 502 } } },
      ],
    });
    assertUnavailable(
      await failureOf(model().generate(callOf(openaiCase.spec(server)).request)),
      'upstream model crashed',
    );
    server.reply({
      events: [
        { data: { error: { message: 'context length exceeded', type: 'BadRequestError', code: 400 } } },
      ],
    });
    assertRejected(
      await failureOf(model().generate(callOf(openaiCase.spec(server)).request)),
      'context length exceeded',
    );
  });

  it('fails as unavailable, naming the line, when a data line is not JSON', async () => {
    server.reply({
      events: [...openaiStream({ textPieces: ['Hel'] }).slice(0, 2), { data: '{"choices": [garbled' }],
    });
    const failure = await failureOf(model().generate(callOf(openaiCase.spec(server)).request));
    assertUnavailable(failure, 'openai model gpt-4o', 'malformed stream data', '"{"choices": [garbled"');
  });

  it('refuses a server that answers with a JSON completion instead of a stream, and retries a JSON error', async () => {
    server.reply(
      { body: { id: 'chatcmpl-1', choices: [{ index: 0, message: { role: 'assistant', content: 'hi' } }] } },
      { body: { error: { message: 'upstream unavailable', type: 'server_error' } } },
    );
    assertRejected(
      await failureOf(model().generate(callOf(openaiCase.spec(server)).request)),
      'not an event stream',
    );
    assertUnavailable(
      await failureOf(model().generate(callOf(openaiCase.spec(server)).request)),
      'upstream unavailable',
    );
  });

  it('fails as unavailable when a chunk has the wrong shape', async () => {
    server.reply({ events: [{ data: { choices: [{ delta: { content: 42 } }] } }] });
    assertUnavailable(
      await failureOf(model().generate(callOf(openaiCase.spec(server)).request)),
      'unexpected stream data',
    );
  });
});

describe('Anthropic Messages provider', () => {
  let server: ModelApiServer;
  beforeEach(async () => {
    server = await ModelApiServer.start();
  });
  afterEach(() => server.close());

  const model = () => new AnthropicModel({ dispatcher, env: ENVIRONMENT });

  it('streams a text answer, reports progress on every event including pings, and counts cached input', async () => {
    const events = anthropicStream({
      textPieces: ['Hel', 'lo!'],
      usage: { inputTokens: 100, outputTokens: 40 },
    });
    const start = events[0] as { data: { message: { usage: Record<string, number> } } };
    Object.assign(start.data.message.usage, {
      cache_creation_input_tokens: 20,
      cache_read_input_tokens: 1000,
    });
    events.splice(4, 0, { event: 'ping', data: { type: 'ping' } });
    server.reply({ events });
    const call = callOf(anthropicCase.spec(server));
    const answer = await model().generate(call.request);
    assert.equal(answer.text, 'Hello!');
    assert.deepEqual(answer.toolCalls, []);
    assert.deepEqual(answer.usage, { inputTokens: 1120, outputTokens: 40 });
    // claude-sonnet-4 lists at $3 in and $15 out per million tokens.
    assert.ok(Math.abs(answer.costUsd - (1120 * 3 + 40 * 15) / 1_000_000) < 1e-12);
    assert.equal(call.progress(), events.length);
  });

  it('assembles text and two tool_use blocks whose input arrives cut mid-string', async () => {
    server.reply({
      events: anthropicStream({
        textPieces: ['Let me look.'],
        toolCalls: [
          { id: 'toolu_1', name: 'read_file', argumentPieces: ['', '{"path": "RE', 'ADME.md"}'] },
          { id: 'toolu_2', name: 'bash', argumentPieces: ['{"comm', 'and": "ls -la"}'] },
        ],
        usage: { inputTokens: 5, outputTokens: 7 },
      }),
    });
    const answer = await model().generate(callOf(anthropicCase.spec(server)).request);
    assert.equal(answer.text, 'Let me look.');
    assert.deepEqual(answer.toolCalls, [
      { id: 'toolu_1', tool: 'read_file', arguments: { path: 'README.md' } },
      { id: 'toolu_2', tool: 'bash', arguments: { command: 'ls -la' } },
    ]);
  });

  it('returns a tool_use whose input is not a JSON object as invalid instead of failing', async () => {
    server.reply({
      events: anthropicStream({ toolCalls: [{ id: 'toolu_1', name: 'bash', argumentPieces: ['["ls"]'] }] }),
    });
    const answer = await model().generate(callOf(anthropicCase.spec(server)).request);
    assert.match(answer.toolCalls[0]?.invalid ?? '', /must be a JSON object/);
  });

  it('ignores event types it does not know', async () => {
    const events = anthropicStream({ textPieces: ['ok'] });
    events.splice(2, 0, { event: 'future_event', data: { type: 'future_event', detail: 1 } });
    server.reply({ events });
    assert.equal((await model().generate(callOf(anthropicCase.spec(server)).request)).text, 'ok');
  });

  it('sends tool results and the next user text as one user message, with the key and API version', async () => {
    server.reply({ events: anthropicStream({ textPieces: ['ok'] }) });
    const messages: TranscriptMessage[] = [
      ...CONVERSATION,
      { role: 'assistant', content: '' },
      { role: 'user', content: '' },
    ];
    await model().generate(callOf(anthropicCase.spec(server, { temperature: 0.5 }), { messages }).request);
    const [sent] = server.requests;
    assert.equal(sent?.path, '/v1/messages');
    assert.equal(sent?.headers['x-api-key'], ANTHROPIC_KEY);
    assert.equal(sent?.headers['anthropic-version'], '2023-06-01');
    assert.equal(sent?.headers.authorization, undefined);
    assert.deepEqual(sent?.body, {
      model: 'claude-sonnet-4-5',
      max_tokens: 4096,
      system: 'You are a careful engineer.',
      messages: [
        { role: 'user', content: [{ type: 'text', text: 'Fix the build.' }] },
        {
          role: 'assistant',
          content: [
            { type: 'text', text: 'Looking at the files.' },
            { type: 'tool_use', id: 'call_a', name: 'read_file', input: { path: 'package.json' } },
            { type: 'tool_use', id: 'call_b', name: 'bash', input: { command: 'npm test' } },
          ],
        },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 'call_a', content: '{"name":"x"}', is_error: false },
            { type: 'tool_result', tool_use_id: 'call_b', content: 'exit 1', is_error: true },
            { type: 'text', text: 'Iteration 2: go on.' },
          ],
        },
      ],
      tools: TOOLS.map((tool) => ({
        name: tool.name,
        description: tool.description,
        input_schema: tool.parameters,
      })),
      stream: true,
      temperature: 0.5,
    });
  });

  it('retries an overloaded_error sent in the stream and refuses an invalid_request_error', async () => {
    const overloaded = { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } };
    server.reply({
      events: [...anthropicStream({ textPieces: ['Hel'] }).slice(0, 3), { event: 'error', data: overloaded }],
    });
    assertUnavailable(
      await failureOf(model().generate(callOf(anthropicCase.spec(server)).request)),
      'overloaded_error: Overloaded',
    );
    const invalid = {
      type: 'error',
      error: { type: 'invalid_request_error', message: 'prompt is too long' },
    };
    server.reply({ events: [{ event: 'error', data: invalid }] });
    assertRejected(
      await failureOf(model().generate(callOf(anthropicCase.spec(server)).request)),
      'prompt is too long',
    );
  });

  it('retries a 529 overloaded answer', async () => {
    server.reply({
      status: 529,
      body: { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } },
    });
    const failure = await failureOf(model().generate(callOf(anthropicCase.spec(server)).request));
    assertUnavailable(failure, 'anthropic model claude-sonnet-4-5: HTTP 529: Overloaded');
  });
});

for (const provider of [openaiCase, anthropicCase] as Array<ProviderCase<RemoteModelSpec>>) {
  describe(`${provider.name} provider failures and connections`, () => {
    let server: ModelApiServer;
    beforeEach(async () => {
      server = await ModelApiServer.start();
    });
    afterEach(() => server.close());

    const model = () => provider.create(ENVIRONMENT);
    const generate = (overrides: Partial<ModelRequest<RemoteModelSpec>> = {}, specOverrides = {}) =>
      model().generate(callOf(provider.spec(server, specOverrides), overrides).request);
    const answered = (answer: ModelResponse) => assert.equal(answer.text, 'ok');

    it('retries a 429 after the Retry-After the API asks for', async () => {
      server.reply({
        status: 429,
        headers: { 'retry-after': '7' },
        body: provider.errorBody('Rate limit reached'),
      });
      const failure = await failureOf(generate());
      assertUnavailable(failure, 'HTTP 429: Rate limit reached');
      assert.equal(failure.nextRetryDelay, 7000);
    });

    it('retries after retry-after-ms when the API sends it', async () => {
      server.reply({
        status: 429,
        headers: { 'retry-after-ms': '1500' },
        body: provider.errorBody('slow down'),
      });
      assert.equal((await failureOf(generate())).nextRetryDelay, 1500);
    });

    it('retries a 500 with backoff that grows with the attempt', async () => {
      server.reply({ status: 500, body: provider.errorBody('internal error') });
      const first = await failureOf(generate({ attempt: 1 }));
      assertUnavailable(first, 'HTTP 500: internal error');
      assert.ok(
        Number(first.nextRetryDelay) >= 500 && Number(first.nextRetryDelay) <= 1000,
        String(first.nextRetryDelay),
      );
      server.reply({ status: 500, body: '' });
      const third = await failureOf(generate({ attempt: 3 }));
      assertUnavailable(third, 'HTTP 500: Internal Server Error');
      assert.ok(
        Number(third.nextRetryDelay) >= 2000 && Number(third.nextRetryDelay) <= 4000,
        String(third.nextRetryDelay),
      );
    });

    it('answers on the next call after a 503', async () => {
      server.reply(
        { status: 503, body: '<html>Service Unavailable</html>' },
        { events: provider.stream({ textPieces: ['o', 'k'], usage: { inputTokens: 3, outputTokens: 1 } }) },
      );
      assertUnavailable(await failureOf(generate()), 'HTTP 503: <html>Service Unavailable</html>');
      answered(await generate({ attempt: 2 }));
    });

    it('refuses on 401 with the API text, the provider and the model, but never the key it echoes', async () => {
      server.reply({
        status: 401,
        body: provider.errorBody(`Incorrect API key provided: ${provider.key}. Check your key.`),
      });
      const failure = await failureOf(generate());
      const spec = provider.spec(server);
      assertRejected(failure, `${provider.name} model ${spec.model}: HTTP 401: Incorrect API key provided`);
      assert.ok(!failure.message.includes(provider.key), failure.message);
      assert.ok(!failure.message.includes(provider.key.slice(0, 12)), failure.message);
      assert.equal(failure.message.split('\n').length, 1);
    });

    it('refuses 400 and 404 without retrying', async () => {
      server.reply(
        { status: 400, body: provider.errorBody('max_tokens is too large') },
        { status: 404, body: provider.errorBody('model not found') },
      );
      assertRejected(await failureOf(generate()), 'HTTP 400: max_tokens is too large');
      assertRejected(await failureOf(generate()), 'HTTP 404: model not found');
    });

    it('keeps a very long error text to one short line', async () => {
      server.reply({ status: 400, body: provider.errorBody(`first line\nsecond ${'x'.repeat(2000)}`) });
      const failure = await failureOf(generate());
      assertRejected(failure, 'first line second x');
      assert.ok(failure.message.length < 400 && !failure.message.includes('\n'), failure.message);
    });

    it('retries a stream whose connection is cut before its final event', async () => {
      server.reply({ events: provider.stream({ textPieces: ['Hel', 'lo'] }).slice(0, 3), end: 'cut' });
      assertUnavailable(await failureOf(generate()), `${provider.name} model`);
    });

    it('retries a stream that ends cleanly before its final event', async () => {
      server.reply({ events: provider.stream({ textPieces: ['Hel', 'lo'] }).slice(0, 3) });
      assertUnavailable(await failureOf(generate()), 'stream ended early');
    });

    it('retries a stream that goes silent for longer than stallTimeoutS', async () => {
      server.reply({ events: provider.stream({ textPieces: ['Hel'] }).slice(0, 2), end: 'stall' });
      const failure = await failureOf(generate({}, { stallTimeoutS: 1 }));
      assertUnavailable(failure, 'stream stalled: no data for 1 s');
      await waitFor(
        'the stalled connection to close',
        () => server.requests[0]?.state === 'closed-by-client',
      );
    });

    it('stops at once when cancelled mid-stream, closing the connection and telling the tokens used so far', async () => {
      server.reply({ events: provider.stream({ textPieces: ['Hel', 'lo'] }).slice(0, 3), end: 'stall' });
      const call = callOf(provider.spec(server, { stallTimeoutS: 600 }));
      const generation = model().generate(call.request);
      await waitFor('the first chunks to arrive', () => call.progress() >= 3);
      const reason = new CancelledFailure('the run was stopped');
      call.controller.abort(reason);
      await assert.rejects(generation, (error) => {
        assert.ok(error instanceof ModelTurnStopped);
        assert.equal(error.cause, reason);
        assert.equal(error.usage.estimated, true);
        assert.ok(error.usage.outputTokens >= 1, 'the text streamed counts');
        return true;
      });
      await waitFor(
        'the server to see the client hang up',
        () => server.requests[0]?.state === 'closed-by-client',
      );
    });

    it('answers when a stream pauses and then goes on, reporting progress as chunks arrive', async () => {
      let release = () => {};
      const paused = new Promise<void>((resolve) => (release = resolve));
      const events = provider.stream({ textPieces: ['o', 'k'] });
      server.reply({ events: [...events.slice(0, 2), { until: paused }, ...events.slice(2)] });
      const call = callOf(provider.spec(server));
      const generation = model().generate(call.request);
      await waitFor('the chunks before the pause', () => call.progress() === 2);
      assert.equal(server.requests[0]?.state, 'replying');
      release();
      answered(await generation);
      assert.equal(call.progress(), events.length);
    });

    it('counts keep-alive comments as progress', async () => {
      const events = provider.stream({ textPieces: ['ok'] });
      server.reply({ events: [{ comment: 'PROCESSING' }, { comment: 'PROCESSING' }, ...events] });
      const call = callOf(provider.spec(server));
      answered(await model().generate(call.request));
      assert.equal(call.progress(), events.length + 2);
    });

    it('retries when the connection is refused', async () => {
      const closed = await ModelApiServer.start();
      const spec = provider.spec(closed);
      await closed.close();
      const failure = await failureOf(model().generate(callOf(spec).request));
      assertUnavailable(failure, 'connection refused');
    });

    it(`refuses a call to the vendor's host when its key variable is unset`, async () => {
      const spec = provider.spec(server);
      const official = {
        ...spec,
        baseUrl: provider.name === 'openai' ? 'https://api.openai.com/v1' : 'https://api.anthropic.com',
      };
      const failure = await failureOf(provider.create({}).generate(callOf(official).request));
      assertRejected(
        failure,
        `${provider.name} model ${spec.model}: no API key: set ${spec.apiKeyEnv} in the worker's environment`,
      );
      assert.equal(server.requests.length, 0);
    });

    it('reuses one connection for consecutive calls', async () => {
      server.replyAlways({
        events: provider.stream({ textPieces: ['ok'], usage: { inputTokens: 1, outputTokens: 1 } }),
      });
      answered(await generate());
      // undici returns a socket to its pool a turn of the event loop after the body ends; a
      // worker's consecutive turns are always further apart than that.
      await nextTurn();
      answered(await generate());
      assert.equal(server.requests.length, 2);
      assert.equal(server.connections, 1);
      assert.deepEqual(
        server.requests.map((request) => request.state),
        ['finished', 'finished'],
      );
    });

    it('charges the price given in the spec', async () => {
      server.reply({
        events: provider.stream({ textPieces: ['ok'], usage: { inputTokens: 2_000, outputTokens: 500 } }),
      });
      const price = { inputUsdPerMTok: 1.5, outputUsdPerMTok: 6 };
      const answer = await generate({}, { price });
      assert.ok(
        Math.abs(answer.costUsd - (2_000 * 1.5 + 500 * 6) / 1_000_000) < 1e-12,
        String(answer.costUsd),
      );
    });
  });
}
