import path from 'node:path';
import { z } from 'zod';
import { describeZodError } from '../common/agent-input';
import { SandboxError } from './tool-call';

/**
 * External tools: the tools a user adds to the agents, written as a TypeScript or JavaScript module
 * and served by a tool server (SEED-BEHAVIOURS 43). A tool names itself, says what it does, declares
 * its arguments as a zod schema (validated before it runs, and published as JSON Schema for the
 * model) and returns text.
 */

/** What a tool's `execute` receives besides its arguments. */
export interface ExternalToolContext {
  /** Aborted when the call times out, its client goes away or the server shuts down. */
  signal: AbortSignal;
}

/** What a tool returns: its text for the model, with optional metadata kept beside it. */
export type ExternalToolOutput = string | { output: string; metadata?: Record<string, unknown> };

/** One external tool. Write it with {@link defineTool} so `execute` sees the type of its input. */
export interface ExternalTool<Schema extends z.ZodType = z.ZodType> {
  /** The name the model calls it by: `[a-z][a-z0-9_]{0,63}`, not one of the built-in tools. */
  name: string;
  /** What the tool does, for the model. */
  description: string;
  /** Its arguments: a zod object schema. */
  input: Schema;
  // Method syntax, not a property: a tool over a narrower schema must still fit `ExternalTool[]`.
  /** Runs the tool on arguments that passed `input`; a thrown error becomes a failed result. */
  execute(input: z.infer<Schema>, context: ExternalToolContext): Promise<ExternalToolOutput>;
}

/** Returns `tool` unchanged: it exists so TypeScript infers the type of `execute`'s input. */
export function defineTool<Schema extends z.ZodType>(tool: ExternalTool<Schema>): ExternalTool<Schema> {
  return tool;
}

/** Names of the tools the agents have without a tool server; an external tool may not take one. */
export const BUILT_IN_TOOL_NAMES = [
  'bash',
  'read_file',
  'write_file',
  'bash_stateful',
  'tmux',
  'terminal',
  'terminal_stateful',
  'finish',
] as const;

/** The pattern of an external tool's name. */
export const TOOL_NAME_PATTERN = /^[a-z][a-z0-9_]{0,63}$/;

/** A problem with tools a user supplied: a module that does not load or a tool that is invalid. */
export class ToolDefinitionError extends SandboxError {
  override readonly name: string = 'ToolDefinitionError';
}

/** Duck-typed, not `instanceof`: a user's module may load its own copy of zod. */
function isZodSchema(value: unknown): value is z.ZodType {
  return (
    typeof value === 'object' &&
    value !== null &&
    '_zod' in value &&
    typeof (value as { safeParse?: unknown }).safeParse === 'function'
  );
}

const toolDefinitionSchema = z.object({
  name: z
    .string({ error: 'must be a string' })
    .regex(TOOL_NAME_PATTERN, 'must match [a-z][a-z0-9_]{0,63}')
    .refine((name) => !(BUILT_IN_TOOL_NAMES as readonly string[]).includes(name), {
      error: `must not be a built-in tool (${BUILT_IN_TOOL_NAMES.join(', ')})`,
    }),
  description: z.string({ error: 'must be a string' }).trim().min(1, 'must not be empty'),
  input: z.custom<z.ZodType>(isZodSchema, 'must be a zod schema'),
  execute: z.custom<ExternalTool['execute']>((value) => typeof value === 'function', 'must be a function'),
});

const toolListSchema = z.array(z.unknown(), { error: 'must be an array' }).min(1, 'must not be empty');

/**
 * The JSON Schema of a tool's arguments as the model sees them (input side: fields with defaults
 * are optional). Throws when the schema cannot be expressed, or does not describe a JSON object,
 * since tool arguments always are one.
 */
export function toolInputJsonSchema(tool: ExternalTool): Record<string, unknown> {
  let schema: Record<string, unknown>;
  try {
    schema = z.toJSONSchema(tool.input, { io: 'input' });
  } catch (error) {
    throw new ToolDefinitionError(
      `tool ${tool.name}: its input cannot be expressed as JSON Schema: ${(error as Error).message}`,
      { cause: error },
    );
  }
  if (schema.type !== 'object')
    throw new ToolDefinitionError(`tool ${tool.name}: input must be a z.object(…) schema`);
  return schema;
}

/**
 * Checks tools before a server offers them: each one well formed, names unique and clear of the
 * built-in tools, inputs expressible as JSON Schema. Throws a {@link ToolDefinitionError} with a
 * one-line message naming the first problem.
 */
export function validateTools(candidates: readonly unknown[]): ExternalTool[] {
  const tools: ExternalTool[] = [];
  const seen = new Set<string>();
  for (const [index, candidate] of candidates.entries()) {
    const parsed = toolDefinitionSchema.safeParse(candidate);
    if (!parsed.success) {
      const name = (candidate as { name?: unknown } | null)?.name;
      const label = typeof name === 'string' ? `tool ${index} (${name})` : `tool ${index}`;
      throw new ToolDefinitionError(`${label}: ${describeZodError(parsed.error)}`);
    }
    const tool = candidate as ExternalTool;
    if (seen.has(tool.name)) throw new ToolDefinitionError(`tool name ${tool.name} is used twice`);
    seen.add(tool.name);
    toolInputJsonSchema(tool);
    tools.push(tool);
  }
  return tools;
}

/**
 * Loads a user's tool module: a TypeScript or JavaScript file whose default export, or `tools`
 * export, is an array of tools. Loaded with `require`, which handles TypeScript because every
 * `agents` process runs under tsx. Failures throw a {@link ToolDefinitionError} whose one-line
 * message names the module and the problem.
 */
export function loadToolModule(modulePath: string): ExternalTool[] {
  const resolved = path.resolve(modulePath);
  let exported: unknown;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a user's module, named at run time
    exported = require(resolved);
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ToolDefinitionError(`Tool module ${resolved} does not load: ${reason.split('\n')[0]}`, {
      cause: error,
    });
  }
  const exports = exported as { default?: unknown; tools?: unknown } | null | undefined;
  // `module.exports = [...]`, `export default [...]` or `export const tools = [...]`.
  const list = Array.isArray(exported) ? exported : (exports?.default ?? exports?.tools);
  if (list === undefined) {
    throw new ToolDefinitionError(
      `Tool module ${resolved} exports no tools: export an array of tools as its default export or as \`tools\``,
    );
  }
  const parsed = toolListSchema.safeParse(list);
  if (!parsed.success)
    throw new ToolDefinitionError(
      `Tool module ${resolved}: the exported tools ${describeZodError(parsed.error)}`,
    );
  try {
    return validateTools(parsed.data);
  } catch (error) {
    throw new ToolDefinitionError(`Tool module ${resolved}: ${(error as Error).message}`, { cause: error });
  }
}
