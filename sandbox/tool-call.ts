import { z } from 'zod';
import { sandboxPolicySchema } from '../common/agent-input';
import { mcpStdioServerSchema } from '../common/mcp-servers';

/**
 * The wire shapes of tool calls and their results between the worker and a sandbox server. A
 * result is data, never an exception: a failed command, a refused path or an unknown tool all come
 * back as `{ success: false, error }` for the model to read.
 */

/** Tools a sandbox server runs itself. */
export const SANDBOX_TOOLS = ['bash', 'read_file', 'write_file', 'bash_stateful', 'tmux'] as const;
export type SandboxToolName = (typeof SANDBOX_TOOLS)[number];

/** Whether a tool is one the sandbox server runs itself. */
export function isSandboxTool(tool: string): tool is SandboxToolName {
  return (SANDBOX_TOOLS as readonly string[]).includes(tool);
}

/** Per-run policy from the run's input, never from the model. */
export { sandboxPolicySchema };
export type SandboxPolicy = z.infer<typeof sandboxPolicySchema>;

/** Timeout bounds of one call, in seconds. */
export const MIN_TOOL_TIMEOUT_S = 1;
export const MAX_TOOL_TIMEOUT_S = 600;
export const DEFAULT_TOOL_TIMEOUT_S = 30;

/** Clamps a requested timeout into 1..600 s; no request gives the default. */
export function clampTimeoutS(requested: number | undefined): number {
  if (requested === undefined || !Number.isFinite(requested)) return DEFAULT_TOOL_TIMEOUT_S;
  return Math.min(MAX_TOOL_TIMEOUT_S, Math.max(MIN_TOOL_TIMEOUT_S, requested));
}

/**
 * A name that is one folder of the server's root and nothing else: 1-200 characters of A-Z, a-z,
 * 0-9, "_", "." and "-", not starting with "." (so never `.`, `..` nor a hidden name) and never
 * with a `/` or a NUL. Release with reset deletes the folder it names: it must not name any other.
 */
export const PLAIN_NAME_PATTERN = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}$/;

/** A trajectory ID as every endpoint takes it (see {@link PLAIN_NAME_PATTERN}). */
export const trajectoryIdSchema = z
  .string()
  .regex(
    PLAIN_NAME_PATTERN,
    'must be a plain name: 1-200 characters of A-Z, a-z, 0-9, "_", "." or "-", not starting with "."',
  );

/** One tool call as the sandbox server receives it. */
export const toolCallSchema = z
  .object({
    /** Deterministic ID from the workflow: the server runs each callId at most once. */
    callId: z.string().min(1).max(200),
    /** The agent run the call belongs to (its workspace). */
    trajectoryId: trajectoryIdSchema,
    tool: z.string().min(1).max(100),
    arguments: z.record(z.string(), z.unknown()).default({}),
    timeoutS: z.number().positive().optional(),
    policy: sandboxPolicySchema.default({ network: false }),
    /**
     * For a tool of an MCP server run in the sandbox (`tool` is then `mcp__<server>__<tool>`): the
     * server to run it on, started in the trajectory's sandbox on first use.
     */
    mcpServer: mcpStdioServerSchema.optional(),
  })
  .strict();
export type ToolCall = z.infer<typeof toolCallSchema>;

/**
 * What a result says beside its output: each tool's own figures (`exitCode`, `durationMs`, `path`…),
 * and the fields below, which the worker adds.
 */
export interface ToolResultMetadata {
  /**
   * The sandbox server stopped while it ran the call, kept no result of it, and ran it again from
   * the start when the tool batch was retried: what the command did before the stop is done twice.
   * The result's output opens with a line saying so, for the model.
   */
  rerun?: true;
  [field: string]: unknown;
}

/** What a tool call produced. */
export interface ToolResult {
  callId: string;
  success: boolean;
  output: string;
  error?: string;
  metadata: ToolResultMetadata;
}

/** A result as it comes back over the wire (a tool server's answer, a batch's heartbeats). */
export const toolResultSchema = z.object({
  callId: z.string(),
  success: z.boolean(),
  output: z.string(),
  error: z.string().optional(),
  metadata: z.record(z.string(), z.unknown()),
});

/** Output limits (SEED-BEHAVIOURS 36). */
export const MAX_STREAM_CHARS = 50_000;
export const MAX_FILE_CHARS = 100_000;
export const TRUNCATION_MARKER = '… (output truncated)';

/**
 * Base of the sandbox area's errors, with a stable `name` to branch on and the underlying `cause`.
 * Tool-level problems never surface as these: they become `{ success: false }` results.
 */
export class SandboxError extends Error {
  override readonly name: string = 'SandboxError';

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}
