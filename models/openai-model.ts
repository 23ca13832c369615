import { z } from 'zod';
import type { OpenAIModelSpec, TokenUsage } from '../common/agent-input';
import type { ModelToolCall, TranscriptMessage } from '../common/agent-run-types';
import {
  endpointUrl,
  isOfficialHost,
  isRetryableStatus,
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
import { estimateUsage, toolCallCharacters } from './usage-estimate';

/** OpenAI's own API, which requires a key and names the output limit differently. */
const OFFICIAL_HOST = 'api.openai.com';

/** A Chat Completions stream chunk: only the fields read here are checked, the rest pass. */
const chunkSchema = z.looseObject({
  choices: z
    .array(
      z.looseObject({
        delta: z
          .looseObject({
            content: z.string().nullish(),
            refusal: z.string().nullish(),
            tool_calls: z
              .array(
                z.looseObject({
                  index: z.number().int().nonnegative().optional(),
                  id: z.string().nullish(),
                  function: z
                    .looseObject({ name: z.string().nullish(), arguments: z.string().nullish() })
                    .nullish(),
                }),
              )
              .nullish(),
          })
          .nullish(),
        finish_reason: z.string().nullish(),
      }),
    )
    .nullish(),
  usage: z
    .looseObject({
      prompt_tokens: z.number().int().nonnegative(),
      completion_tokens: z.number().int().nonnegative(),
    })
    .nullish(),
  /** Some servers report a failure in the stream: `{"error": {"message": …, "code": 400}}`. */
  error: z
    .union([
      z.string(),
      z.looseObject({
        message: z.string().optional(),
        type: z.string().nullish(),
        code: z.union([z.string(), z.number()]).nullish(),
      }),
    ])
    .nullish(),
});
type Chunk = z.output<typeof chunkSchema>;

/**
 * A model behind an OpenAI-compatible Chat Completions API: OpenAI itself, and vLLM, Ollama, LM
 * Studio or OpenRouter at their own base URL. The answer is streamed, so every chunk is a
 * heartbeat and a stalled stream is noticed within `stallTimeoutS`.
 */
export class OpenAIModel extends RemoteModel implements ModelProvider<OpenAIModelSpec> {
  readonly provider = 'openai' as const;

  async generate(request: ModelRequest<OpenAIModelSpec>): Promise<ModelResponse> {
    const { spec } = request;
    const apiKey = readApiKey(spec, this.environment, OFFICIAL_HOST);
    const answer = new StreamedAnswer();
    try {
      await streamModelEvents(
        {
          dispatcher: this.dispatcher,
          request,
          url: endpointUrl(spec.baseUrl, '/chat/completions'),
          headers: apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` },
          body: requestBody(request),
          apiKey,
        },
        (event) => {
          if (event.data.trim() !== '[DONE]') return answer.add(parseEventData(event, chunkSchema));
          if (!answer.finished)
            throw new ModelStreamError('stream ended early, without a finish reason', true);
          return 'final';
        },
      );
    } catch (error) {
      if (!request.signal.aborted) throw error;
      // Usage comes only after the last chunk: a stopped answer is counted from what streamed.
      const usage = answer.usage ?? estimateUsage(request, answer.streamedCharacters);
      throw new ModelTurnStopped(usage, costOf(spec, usage), { cause: error });
    }
    const toolCalls = answer.toolCalls(request.callIndex);
    const usage = answer.usage ?? estimateUsage(request, answer.text.length + toolCallCharacters(toolCalls));
    return { text: answer.text, toolCalls, usage, costUsd: costOf(spec, usage) };
  }
}

/** The body of a streaming Chat Completions request. */
function requestBody(request: ModelRequest<OpenAIModelSpec>): Record<string, unknown> {
  const { spec } = request;
  // OpenAI renamed the limit for its reasoning models; compatible servers know only the old name.
  const limitField = isOfficialHost(spec.baseUrl, OFFICIAL_HOST) ? 'max_completion_tokens' : 'max_tokens';
  const system = request.systemPrompt === '' ? [] : [{ role: 'system', content: request.systemPrompt }];
  return {
    model: spec.model,
    messages: [...system, ...request.messages.map(toChatMessage)],
    ...(request.tools.length === 0
      ? {}
      : {
          tools: request.tools.map((tool) => ({
            type: 'function',
            function: { name: tool.name, description: tool.description, parameters: tool.parameters },
          })),
        }),
    stream: true,
    stream_options: { include_usage: true },
    [limitField]: spec.maxOutputTokens,
    ...(spec.temperature === undefined ? {} : { temperature: spec.temperature }),
  };
}

function toChatMessage(message: TranscriptMessage): Record<string, unknown> {
  switch (message.role) {
    case 'user':
      return { role: 'user', content: message.content };
    case 'assistant':
      if (message.toolCalls === undefined || message.toolCalls.length === 0) {
        return { role: 'assistant', content: message.content };
      }
      return {
        role: 'assistant',
        content: message.content,
        tool_calls: message.toolCalls.map((call) => ({
          id: call.id,
          type: 'function',
          function: { name: call.tool, arguments: JSON.stringify(call.arguments) },
        })),
      };
    case 'tool':
      return { role: 'tool', tool_call_id: message.toolCallId, content: message.content };
  }
}

/** An answer as its chunks arrive: text, tool calls assembled from fragments, usage. */
class StreamedAnswer {
  text = '';
  usage: TokenUsage | undefined;
  /** A choice said why it stopped: without one, the stream was cut. */
  finished = false;
  /** Characters of text, tool names and arguments streamed so far: the output of a stopped answer. */
  streamedCharacters = 0;
  /** Tool calls by their `index`: the ID and name come in the first fragment, arguments in pieces. */
  private readonly calls = new Map<number, { id: string; name: string; arguments: string }>();

  add(chunk: Chunk): void {
    if (chunk.error !== undefined && chunk.error !== null) throw streamError(chunk.error);
    if (chunk.usage) {
      this.usage = { inputTokens: chunk.usage.prompt_tokens, outputTokens: chunk.usage.completion_tokens };
    }
    // Only one choice is asked for; a server may still number it other than 0.
    const choice = chunk.choices?.[0];
    if (choice === undefined) return;
    if (choice.finish_reason) this.finished = true;
    const text = choice.delta?.content ?? choice.delta?.refusal ?? '';
    this.text += text;
    this.streamedCharacters += text.length;
    for (const [position, fragment] of (choice.delta?.tool_calls ?? []).entries()) {
      const index = fragment.index ?? position;
      const call = this.calls.get(index) ?? { id: '', name: '', arguments: '' };
      if (!call.id && fragment.id) call.id = fragment.id;
      if (!call.name && fragment.function?.name) call.name = fragment.function.name;
      const argumentsPiece = fragment.function?.arguments ?? '';
      call.arguments += argumentsPiece;
      this.streamedCharacters += (fragment.function?.name ?? '').length + argumentsPiece.length;
      this.calls.set(index, call);
    }
  }

  /** The calls in index order; a server that gave no ID gets one stable across retries of the turn. */
  toolCalls(callIndex: number): ModelToolCall[] {
    return [...this.calls.entries()]
      .sort(([first], [second]) => first - second)
      .map(([index, call]) =>
        parseToolCallArguments(call.id || `call_${callIndex}_${index}`, call.name, call.arguments),
      );
  }
}

/** A failure a server reported in the stream, retried unless it says the request itself was wrong. */
function streamError(error: NonNullable<Chunk['error']>): ModelStreamError {
  if (typeof error === 'string') return new ModelStreamError(error, true);
  const message = error.message ?? JSON.stringify(error);
  if (typeof error.code === 'number') return new ModelStreamError(message, isRetryableStatus(error.code));
  return new ModelStreamError(message, !/invalid_request|authentication|permission/.test(error.type ?? ''));
}
