import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type {
  ChatWrapper,
  Llama,
  LlamaContext,
  LlamaContextSequence,
  LlamaGrammar,
  LlamaModel,
} from 'node-llama-cpp' with { 'resolution-mode': 'import' };
import type { LocalModelSpec } from '../common/agent-input';
import { describeModel, modelRejected } from './model-failures';
import type { ModelProvider, ModelRequest, ModelResponse } from './model-provider';
import { answerSchema, chatHistory, parseAnswer, transcriptPrompt } from './local-model-prompt';

/** How a worker runs local models. */
export interface LocalModelOptions {
  /** Where model names resolve to files: `$AGENTS_HOME/models`. */
  modelsFolder: string;
  /** CPU threads per generation; default: every core but one. */
  threads?: number;
  /** Generations that run at once per model; more wait their turn. Default 2. */
  sequences?: number;
}

/** A model file loaded with its context: loaded once per worker, shared by every run that names it. */
interface LoadedModel {
  llama: Llama;
  model: LlamaModel;
  context: LlamaContext;
  /** The chat format of a model with a chat template; a base model continues a plain transcript. */
  chatWrapper: ChatWrapper | undefined;
  grammars: Map<string, Promise<LlamaGrammar>>;
  /** Sequences not generating now, and the generations waiting for one. */
  idle: LlamaContextSequence[];
  waiting: Array<(sequence: LlamaContextSequence) => void>;
}

/** The activity heartbeats this often while the model works, since the work happens on native threads. */
const HEARTBEAT_EVERY_MS = 1000;

/**
 * A GGUF model run in the worker with node-llama-cpp, whose prebuilt llama.cpp binaries come in the
 * npm package. Evaluation runs on native threads, off the event loop, so the activity keeps
 * heartbeating however long an answer takes. Tool calls come from a JSON answer held to the tools'
 * schemas by a grammar (`local-model-prompt.ts`), so a small model calls tools reliably.
 */
export class LocalModel implements ModelProvider<LocalModelSpec> {
  readonly provider = 'local' as const;
  private readonly loaded = new Map<string, Promise<LoadedModel>>();
  private llama: Promise<Llama> | undefined;

  constructor(private readonly options: LocalModelOptions) {}

  /** The file a spec names: an absolute path, or a name under the models folder (".gguf" optional). */
  modelFile(spec: LocalModelSpec): string {
    if (path.isAbsolute(spec.model)) return spec.model;
    const name = spec.model.endsWith('.gguf') ? spec.model : `${spec.model}.gguf`;
    return path.join(this.options.modelsFolder, name);
  }

  async generate(request: ModelRequest<LocalModelSpec>): Promise<ModelResponse> {
    const heartbeat = setInterval(request.onProgress, HEARTBEAT_EVERY_MS);
    try {
      const loaded = await this.load(request.spec);
      const sequence = await this.acquire(loaded, request.signal);
      try {
        return await this.answer(loaded, sequence, request);
      } finally {
        this.release(loaded, sequence);
      }
    } finally {
      clearInterval(heartbeat);
    }
  }

  /**
   * Loads the model a spec names ahead of its first call, so a caller learns at once whether it
   * can run here: it throws the reason (no file, a file llama.cpp cannot load) when it cannot.
   */
  async warmUp(spec: LocalModelSpec): Promise<void> {
    await this.load(spec);
  }

  /** Frees every loaded model. */
  async close(): Promise<void> {
    const models = await Promise.allSettled(this.loaded.values());
    this.loaded.clear();
    for (const model of models) if (model.status === 'fulfilled') await model.value.model.dispose();
    if (this.llama !== undefined) await (await this.llama).dispose();
    this.llama = undefined;
  }

  private async answer(
    loaded: LoadedModel,
    sequence: LlamaContextSequence,
    request: ModelRequest<LocalModelSpec>,
  ): Promise<ModelResponse> {
    const { LlamaChat, LlamaCompletion } = await import('node-llama-cpp');
    const grammar = await this.grammar(loaded, request);
    let outputTokens = 0;
    const options = {
      grammar,
      maxTokens: request.spec.maxOutputTokens,
      temperature: request.spec.temperature,
      signal: request.signal,
      onToken: (tokens: readonly unknown[]) => {
        outputTokens += tokens.length;
        request.onProgress();
      },
    };
    let response: string;
    let inputTokens: number;
    if (loaded.chatWrapper === undefined) {
      const prompt = transcriptPrompt(request.systemPrompt, request.tools, request.messages);
      inputTokens = loaded.model.tokenize(prompt).length;
      const completion = new LlamaCompletion({ contextSequence: sequence });
      try {
        response = await completion.generateCompletion(prompt, options);
      } finally {
        completion.dispose({ disposeSequence: false });
      }
    } else {
      const history = chatHistory(request.systemPrompt, request.tools, request.messages);
      const { contextText } = loaded.chatWrapper.generateContextState({ chatHistory: history });
      inputTokens = contextText.tokenize(loaded.model.tokenizer).length;
      const chat = new LlamaChat({ contextSequence: sequence, chatWrapper: loaded.chatWrapper });
      try {
        response = (await chat.generateResponse(history, options)).response;
      } finally {
        chat.dispose({ disposeSequence: false });
      }
    }
    const answer = parseAnswer(response, `call_${request.callIndex}`);
    return { ...answer, usage: { inputTokens, outputTokens }, costUsd: 0 };
  }

  private grammar(loaded: LoadedModel, request: ModelRequest<LocalModelSpec>): Promise<LlamaGrammar> {
    const schema = answerSchema(request.tools);
    const key = JSON.stringify(schema);
    let grammar = loaded.grammars.get(key);
    if (grammar === undefined) {
      // The schema is built at run time, so its static type is too wide for the typed helper.
      grammar = loaded.llama.createGrammarForJsonSchema(schema as never);
      loaded.grammars.set(key, grammar);
    }
    return grammar;
  }

  private load(spec: LocalModelSpec): Promise<LoadedModel> {
    const file = this.modelFile(spec);
    const key = `${file}\n${spec.contextTokens}`;
    let loaded = this.loaded.get(key);
    if (loaded === undefined) {
      loaded = this.loadFile(spec, file);
      this.loaded.set(key, loaded);
      // A failed load is tried again by the next call, after the file is fixed.
      loaded.catch(() => this.loaded.delete(key));
    }
    return loaded;
  }

  private async loadFile(spec: LocalModelSpec, file: string): Promise<LoadedModel> {
    if (!existsSync(file)) {
      throw modelRejected(
        `${describeModel({ provider: 'local', model: spec.model })}: no model file at ${file}: run \`agents models install\` or name a GGUF file`,
      );
    }
    const { resolveChatWrapper, LlamaLogLevel, getLlama } = await import('node-llama-cpp');
    this.llama ??= getLlama({ build: 'never', gpu: false, logLevel: LlamaLogLevel.error });
    const llama = await this.llama;
    let model: LlamaModel;
    try {
      model = await llama.loadModel({ modelPath: file });
    } catch (error) {
      throw modelRejected(
        `${describeModel({ provider: 'local', model: spec.model })}: cannot load ${file}: ${(error as Error).message}`,
      );
    }
    const sequences = this.options.sequences ?? 2;
    const context = await model.createContext({
      contextSize: Math.min(spec.contextTokens, model.trainContextSize),
      sequences,
      // llama.cpp's threads wait for each other spinning: one core is left for the worker itself
      // and the Temporal client, or a thread that loses its core stalls all the others.
      threads: this.options.threads ?? Math.max(1, os.availableParallelism() - 1),
    });
    const idle = Array.from({ length: sequences }, () => context.getSequence());
    return {
      llama,
      model,
      context,
      chatWrapper:
        model.fileInfo.metadata.tokenizer?.chat_template === undefined
          ? undefined
          : resolveChatWrapper(model),
      grammars: new Map(),
      idle,
      waiting: [],
    };
  }

  private acquire(loaded: LoadedModel, signal: AbortSignal): Promise<LlamaContextSequence> {
    const sequence = loaded.idle.pop();
    if (sequence !== undefined) return Promise.resolve(sequence);
    return new Promise((resolve, reject) => {
      const waiter = (next: LlamaContextSequence) => {
        signal.removeEventListener('abort', onAbort);
        resolve(next);
      };
      const onAbort = () => {
        loaded.waiting.splice(loaded.waiting.indexOf(waiter), 1);
        reject(signal.reason as Error);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      loaded.waiting.push(waiter);
    });
  }

  private release(loaded: LoadedModel, sequence: LlamaContextSequence): void {
    const next = loaded.waiting.shift();
    if (next === undefined) loaded.idle.push(sequence);
    else next(sequence);
  }
}
