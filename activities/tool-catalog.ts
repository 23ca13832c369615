import { log } from '@temporalio/activity';
import { z } from 'zod';
import type { ModelToolCall } from '../common/agent-run-types';
import { FINISH_TOOL } from '../common/transcript';
import type { ToolDefinition } from '../models/model-provider';
import { canonicalTool } from '../workflows/permission-policy';
import { parseToolArguments, SANDBOX_TOOL_ARGUMENTS } from '../sandbox/tool-arguments';
import { isSandboxTool, SANDBOX_TOOLS } from '../sandbox/tool-call';
import type { ToolServerClient } from './tool-server-client';

/** How long the external tool server's list is reused before it is asked again. */
const EXTERNAL_TOOLS_TTL_MS = 60_000;

/** The JSON Schema of a tool's arguments as a model is given it: what it may pass, no `$schema` header. */
function toolParameters(schema: z.ZodType): Record<string, unknown> {
  const parameters: Record<string, unknown> = z.toJSONSchema(schema, { io: 'input' });
  delete parameters.$schema;
  return parameters;
}

const finishDefinition: ToolDefinition = {
  name: FINISH_TOOL,
  description: 'End the run after this iteration, when the task program is complete.',
  parameters: toolParameters(z.object({ summary: z.string().optional().describe('What was achieved') })),
};

/** The sandbox tools as models are told about them, their JSON Schema made from the same zod schemas. */
const sandboxDefinitions: ToolDefinition[] = SANDBOX_TOOLS.map((name) => ({
  name,
  description: SANDBOX_TOOL_ARGUMENTS[name].description,
  parameters: toolParameters(SANDBOX_TOOL_ARGUMENTS[name].schema),
}));

/**
 * The tools a worker offers models, and the check of a model's calls against them. The sandbox
 * tools and `finish` are always offered; the external tool server's tools are added from its list,
 * fetched at most once a minute, and left out (with a warning) while it cannot be listed.
 */
export class ToolCatalog {
  private external: { tools: ToolDefinition[]; fetchedAt: number } | undefined;

  constructor(
    private readonly externalTools?: ToolServerClient,
    /** Default: the activity's log, which names the run and the activity. */
    private readonly warn: (message: string) => void = (message) => {
      log.warn(message);
    },
  ) {}

  async definitions(signal?: AbortSignal): Promise<ToolDefinition[]> {
    return [...sandboxDefinitions, finishDefinition, ...(await this.externalDefinitions(signal))];
  }

  /**
   * The call as the workflow should see it: a sandbox tool's arguments that do not fit its schema
   * make it `invalid`, with the one-line reason the sandbox would give, and so does a tool that no
   * tool server offers ("Unknown tool: x"), so the policy never asks a person about a call that
   * cannot run. An external tool's arguments are checked where it runs.
   */
  check(call: ModelToolCall): ModelToolCall {
    if (call.invalid !== undefined) return call;
    if (isSandboxTool(call.tool)) {
      const parsed = parseToolArguments(call.tool, call.arguments, SANDBOX_TOOL_ARGUMENTS[call.tool].schema);
      return parsed.ok ? call : { ...call, invalid: parsed.error };
    }
    if (call.tool === FINISH_TOOL || isSandboxTool(canonicalTool(call.tool))) return call;
    const unknown = this.unknownToolReason(call.tool);
    return unknown === undefined ? call : { ...call, invalid: unknown };
  }

  /**
   * Why a tool that is neither a sandbox tool nor `finish` cannot run, or undefined when the tool
   * server offers it or its list is not known: then the tool server itself answers the call.
   */
  private unknownToolReason(tool: string): string | undefined {
    if (this.externalTools === undefined)
      return `External tool not available (ToolServer not configured): ${tool}`;
    if (this.external === undefined) return undefined;
    return this.external.tools.some((offered) => offered.name === tool) ? undefined : `Unknown tool: ${tool}`;
  }

  private async externalDefinitions(signal?: AbortSignal): Promise<ToolDefinition[]> {
    if (this.externalTools === undefined) return [];
    if (this.external !== undefined && Date.now() - this.external.fetchedAt < EXTERNAL_TOOLS_TTL_MS) {
      return this.external.tools;
    }
    try {
      const listed = await this.externalTools.listTools(signal);
      const tools = listed
        .filter((tool) => !isSandboxTool(tool.name) && tool.name !== FINISH_TOOL)
        .map((tool) => ({ name: tool.name, description: tool.description, parameters: tool.inputSchema }));
      this.external = { tools, fetchedAt: Date.now() };
      return tools;
    } catch (error) {
      if (signal?.aborted === true) throw error;
      this.warn(`The tool server's tools are not offered this turn: ${(error as Error).message}`);
      return this.external?.tools ?? [];
    }
  }
}
