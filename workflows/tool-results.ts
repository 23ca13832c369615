import type { ModelToolCall, TranscriptMessage } from '../common/agent-run-types';
import type { ToolResult } from '../sandbox/tool-call';

/** The Web UI summary of a tool-batch activity: "tools: bash ×2, read_file ×1". */
export function toolBatchSummary(calls: ModelToolCall[]): string {
  const counts = new Map<string, number>();
  for (const call of calls) counts.set(call.tool, (counts.get(call.tool) ?? 0) + 1);
  return `tools: ${[...counts].map(([tool, count]) => `${tool} ×${count}`).join(', ')}`;
}

/** What the model reads back for a tool call: the output, and the error when it failed. */
export function toolResultMessage(call: ModelToolCall, result: ToolResult): TranscriptMessage {
  const parts = [result.output];
  if (!result.success) parts.push(`Error: ${result.error ?? 'failed'}`);
  return {
    role: 'tool',
    toolCallId: call.id,
    tool: call.tool,
    content: parts.filter((part) => part !== '').join('\n'),
    success: result.success,
  };
}

/** What the model reads back for `finish`, which the workflow handles itself. */
export function finishResult(callId: string): ToolResult {
  return { callId, success: true, output: 'The run ends after this iteration.', metadata: {} };
}

/** What the model reads back for a call that did not run: a denial, or the run ending first. */
export function refusalMessage(call: ModelToolCall, refusal: string): TranscriptMessage {
  return { role: 'tool', toolCallId: call.id, tool: call.tool, content: refusal, success: false };
}

/** The result the sandbox gave for a call, or a failure saying it gave none. */
export function resultOrMissing(results: ReadonlyMap<string, ToolResult>, callId: string): ToolResult {
  return (
    results.get(callId) ?? {
      callId,
      success: false,
      output: '',
      error: 'No result from the sandbox',
      metadata: {},
    }
  );
}
