import { z } from 'zod';
import type { AnthropicModelSpec, TokenUsage } from '../common/agent-input';
import type { ModelToolCall, ModelUsage, TranscriptMessage } from '../common/agent-run-types';
import {
  endpointUrl,
  ModelStreamError,
  parseEventData,
  readApiKey,
  streamModelEvents,
  RemoteModel,
} from './http';
import {
  ModelTurnStopped,
  type ModelProvider,
  type ModelRequest,
  type ModelResponse,
} from './model-provider';
import { costOf } from './prices';
import { parseToolCallArguments } from './tool-calls';
import { estimateInputTokens, estimateTokens } from './usage-estimate';

/** Anthropic's own API, which requires a key. */
const OFFICIAL_HOST = 'api.anthropic.com';
/** The Messages API version whose stream events are parsed here. */
const API_VERSION = '2023-06-01';
/** Error types that say the request itself is wrong: no retry will fix them. */
const REJECTED_ERROR_TYPES = new Set([
  'invalid_request_error',
  'authentication_error',
  'permission_error',
  'not_found_error',
  'request_too_large',
  'billing_error',
]);

/** Token counts as Anthropic reports them; cache writes and reads are input too. */
const usageSchema = z.looseObject({
  input_tokens: z.number().int().nonnegative().nullish(),
  output_tokens: z.number().int().nonnegative().nullish(),
  cache_creation_input_tokens: z.number().int().nonnegative().nullish(),
  cache_read_input_tokens: z.number().int().nonnegative().nullish(),
});
const blockIndex = z.number().int().nonnegative();

/** The stream events read here; other fields pass, and event types added later are let through. */
const knownEventSchema = z.discriminatedUnion('type', [
  z.looseObject({
    type: z.literal('message_start'),
    message: z.looseObject({ usage: usageSchema.nullish() }),
  }),
  z.looseObject({
    type: z.literal('content_block_start'),
    index: blockIndex,
    content_block: z.looseObject({
      type: z.string(),
      id: z.string().optional(),
      name: z.string().optional(),
      text: z.string().optional(),
      input: z.unknown().optional(),
    }),
  }),
  z.looseObject({
    type: z.literal('content_block_delta'),
    index: blockIndex,
    delta: z.looseObject({
      type: z.string(),
      text: z.string().optional(),
      partial_json: z.string().optional(),
    }),
  }),
  z.looseObject({ type: z.literal('content_block_stop'), index: blockIndex }),
  z.looseObject({ type: z.literal('message_delta'), usage: usageSchema.nullish() }),
  z.looseObject({ type: z.literal('message_stop') }),
  z.looseObject({ type: z.literal('ping') }),
  z.looseObject({
    type: z.literal('error'),
    error: z.looseObject({ type: z.string(), message: z.string() }),
  }),
]);
const KNOWN_EVENT_TYPES = new Set<string>(knownEventSchema.options.map((option) => option.shape.type.value));
const eventSchema = z.union([
  knownEventSchema,
  z.looseObject({ type: z.string().refine((type) => !KNOWN_EVENT_TYPES.has(type)) }),
]);
type StreamEvent = z.output<typeof knownEventSchema>;

/** A content block of a Messages API request. */
type ContentBlock =
  | { type: 'text'; text: string }
  | { type: 'tool_use'; id: string; name: string; input: Record<string, unknown> }
  | { type: 'tool_result'; tool_use_id: string; content?: string; is_error: boolean };

/**
 * A Claude model through Anthropic's Messages API, streamed: every event, pings included, is a
 * heartbeat, and an `overloaded_error` in the stream is retried like a 529.
 */
export class AnthropicModel extends RemoteModel implements ModelProvider<AnthropicModelSpec> {
  readonly provider = 'anthropic' as const;

  async generate(request: ModelRequest<AnthropicModelSpec>): Promise<ModelResponse> {
    const { spec } = request;
    const apiKey = readApiKey(spec, this.environment, OFFICIAL_HOST);
    const answer = new StreamedAnswer();
    try {
      await streamModelEvents(
        {
          dispatcher: this.dispatcher,
          request,
          url: endpointUrl(spec.baseUrl, '/v1/messages'),
          headers: {
            'anthropic-version': API_VERSION,
            ...(apiKey === undefined ? {} : { 'x-api-key': apiKey }),
          },
          body: requestBody(request),
          apiKey,
        },
        (event) => {
          const data = parseEventData(event, eventSchema);
          return isKnownEvent(data) ? answer.add(data) : undefined;
        },
      );
    } catch (error) {
      if (!request.signal.aborted) throw error;
      const usage = answer.stoppedUsage(request);
      throw new ModelTurnStopped(usage, costOf(spec, usage), { cause: error });
    }
    const usage = answer.usage;
    return { text: answer.text(), toolCalls: answer.toolCalls(), usage, costUsd: costOf(spec, usage) };
  }
}

function isKnownEvent(event: { type: string }): event is StreamEvent {
  return KNOWN_EVENT_TYPES.has(event.type);
}

/** The body of a streaming Messages request. */
function requestBody(request: ModelRequest<AnthropicModelSpec>): Record<string, unknown> {
  const { spec } = request;
  return {
    model: spec.model,
    max_tokens: spec.maxOutputTokens,
    ...(request.systemPrompt === '' ? {} : { system: request.systemPrompt }),
    messages: toMessages(request.messages),
    ...(request.tools.length === 0
      ? {}
      : {
          tools: request.tools.map((tool) => ({
            name: tool.name,
            description: tool.description,
            input_schema: tool.parameters,
          })),
        }),
    stream: true,
    ...(spec.temperature === undefined ? {} : { temperature: spec.temperature }),
  };
}

/**
 * The transcript as the Messages API wants it: user and assistant strictly alternating, tool
 * results as blocks of a user message (so results and the user text after them are ONE message),
 * and no empty text blocks, which the API refuses.
 */
function toMessages(
  transcript: TranscriptMessage[],
): Array<{ role: 'user' | 'assistant'; content: ContentBlock[] }> {
  const messages: Array<{ role: 'user' | 'assistant'; content: ContentBlock[] }> = [];
  for (const message of transcript) {
    const role = message.role === 'assistant' ? 'assistant' : 'user';
    const blocks = contentBlocks(message);
    if (blocks.length === 0) continue;
    const previous = messages.at(-1);
    if (previous?.role === role) previous.content.push(...blocks);
    else messages.push({ role, content: blocks });
  }
  return messages;
}

function contentBlocks(message: TranscriptMessage): ContentBlock[] {
  if (message.role === 'tool') {
    return [
      {
        type: 'tool_result',
        tool_use_id: message.toolCallId,
        ...(message.content === '' ? {} : { content: message.content }),
        is_error: !message.success,
      },
    ];
  }
  const text: ContentBlock[] = message.content === '' ? [] : [{ type: 'text', text: message.content }];
  if (message.role === 'user') return text;
  const calls = (message.toolCalls ?? []).map((call): ContentBlock => ({
    type: 'tool_use',
    id: call.id,
    name: call.tool,
    input: call.arguments,
  }));
  return [...text, ...calls];
}

/** An answer as its events arrive: content blocks by index, and usage. */
class StreamedAnswer {
  /** The latest token counts; cache writes and reads are input too, at their own price on the bill. */
  private readonly counts = {
    input_tokens: 0,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: 0,
    output_tokens: 0,
  };
  /** Whether `message_start` came with the input's count. */
  private inputReported = false;
  /** Characters of text and tool input streamed so far: the output of a stopped answer. */
  private streamedCharacters = 0;
  private readonly blocks = new Map<
    number,
    | { kind: 'text'; text: string }
    | { kind: 'tool_use'; id: string; name: string; json: string; input: unknown }
  >();

  add(event: StreamEvent): 'final' | void {
    switch (event.type) {
      case 'message_start':
      case 'message_delta':
        if (event.type === 'message_start' && typeof event.message.usage?.input_tokens === 'number')
          this.inputReported = true;
        this.takeUsage(event.type === 'message_start' ? event.message.usage : event.usage);
        return;
      case 'content_block_start': {
        const block = event.content_block;
        if (block.type === 'text') this.blocks.set(event.index, { kind: 'text', text: block.text ?? '' });
        if (block.type === 'tool_use') {
          const { id = '', name = '', input } = block;
          this.blocks.set(event.index, { kind: 'tool_use', id, name, json: '', input });
        }
        // Other blocks (thinking, server tools) are not part of the answer.
        return;
      }
      case 'content_block_delta': {
        const block = this.blocks.get(event.index);
        const piece = (block?.kind === 'text' ? event.delta.text : event.delta.partial_json) ?? '';
        if (block?.kind === 'text') block.text += piece;
        if (block?.kind === 'tool_use') block.json += piece;
        if (block !== undefined) this.streamedCharacters += piece.length;
        return;
      }
      case 'error':
        throw new ModelStreamError(
          `${event.error.type}: ${event.error.message}`,
          !REJECTED_ERROR_TYPES.has(event.error.type),
        );
      case 'message_stop':
        return 'final';
      default:
        // content_block_stop and ping: nothing to keep; the event already counted as progress.
        return;
    }
  }

  get usage(): TokenUsage {
    const { input_tokens, cache_creation_input_tokens, cache_read_input_tokens, output_tokens } = this.counts;
    return {
      inputTokens: input_tokens + cache_creation_input_tokens + cache_read_input_tokens,
      outputTokens: output_tokens,
    };
  }

  /**
   * The usage of an answer stopped mid-stream, `estimated`: the input as `message_start` reported
   * it (or estimated from the prompt when it never came), and the output counted from the
   * characters streamed, or the running count the API sent if that is higher.
   */
  stoppedUsage(request: ModelRequest): ModelUsage {
    const reported = this.usage;
    return {
      inputTokens: this.inputReported ? reported.inputTokens : estimateInputTokens(request),
      outputTokens: Math.max(reported.outputTokens, estimateTokens(this.streamedCharacters)),
      estimated: true,
    };
  }

  text(): string {
    return this.sortedBlocks()
      .flatMap((block) => (block.kind === 'text' && block.text !== '' ? [block.text] : []))
      .join('\n');
  }

  toolCalls(): ModelToolCall[] {
    return this.sortedBlocks().flatMap((block) => {
      if (block.kind !== 'tool_use') return [];
      // A stream with no input deltas carries the whole input in the block's start.
      const json = block.json === '' && block.input !== undefined ? JSON.stringify(block.input) : block.json;
      return [parseToolCallArguments(block.id, block.name, json)];
    });
  }

  /** Counts are running totals: each one an event carries replaces the one before. */
  private takeUsage(usage: z.output<typeof usageSchema> | null | undefined): void {
    for (const [field, value] of Object.entries(usage ?? {})) {
      if (Object.hasOwn(this.counts, field) && typeof value === 'number')
        this.counts[field as keyof typeof this.counts] = value;
    }
  }

  private sortedBlocks() {
    return [...this.blocks.entries()].sort(([first], [second]) => first - second).map(([, block]) => block);
  }
}
