import { z } from 'zod';
import { markdownCode, markdownFence, markdownText, visibleJson } from '../../common/display-text';
import type { AuditEntry } from './audit-entries';

/** The audit as Markdown for people: iterations under headings, long texts cut. */

/** Markdown shows this many characters of a long text; the jsonl export always has all of it. */
export const MARKDOWN_MAX_CHARS = 4000;

/**
 * The story as Markdown, chunk by chunk: the run's input, then each iteration under its own heading
 * with its prompt, model output, tool calls and results, decisions, signals and state changes, and
 * the end. Texts longer than {@link MARKDOWN_MAX_CHARS} are cut, saying how much the jsonl adds.
 */
export async function* formatMarkdown(
  entries: AsyncIterable<AuditEntry> | Iterable<AuditEntry>,
): AsyncGenerator<string> {
  let heading = 0;
  let titled = false;
  for await (const entry of entries) {
    if (!titled && entry.kind === 'run_started') {
      titled = true;
      const name = entry.input?.name ?? entry.workflowId;
      yield `# Audit of agent run ${code(name)}\n\nWorkflow ${code(entry.workflowId)}, told from its Temporal history.\n\n`;
    }
    if (entry.iteration !== undefined && entry.iteration > heading && entry.kind !== 'run_started') {
      heading = entry.iteration;
      yield `## Iteration ${heading}\n\n`;
    }
    yield markdownOf(entry);
  }
}

/** One entry as Markdown: a paragraph ending in a blank line. */
function markdownOf(entry: AuditEntry): string {
  const at = `at ${entry.at}`;
  switch (entry.kind) {
    case 'run_started': {
      if (entry.continuedFrom !== undefined) {
        const carried =
          entry.carried === undefined ? '' : `, carrying on after iteration ${entry.carried.iteration}`;
        return `_Execution ${code(entry.runId)} started ${at}${carried}._\n\n`;
      }
      const input = entry.input ?? {};
      const lines = [
        `## Run started`,
        '',
        `- Run ${code(entry.runId)} started ${at} by ${code(entry.identity)}`,
        `- Template: ${code(input.template?.name ?? '?')} (${oneLine(input.template?.source ?? '?')})`,
        `- Args: ${input.args ? code(input.args) : '(none)'}`,
        `- Model: ${oneLine(input.model?.provider ?? '?')}`,
        `- Interval: ${oneLine(String(input.intervalS ?? '?'))} s · max iterations: ${oneLine(String(input.maxIterations ?? 'none'))} · permissions: ${oneLine(input.permissions?.mode ?? '?')}`,
      ];
      return `${lines.join('\n')}\n\n`;
    }
    case 'earlier_runs_missing':
      return `_Earlier executions (the last of them ${code(entry.missingRunId)}) are no longer on the server: the story starts here._\n\n`;
    case 'system_prompt':
      return `**System prompt** ${at}\n\n${fenced(entry.text)}`;
    case 'conversation_sent':
      return `**Conversation compacted or resent** ${at}: the model was given the whole conversation again (${entry.messages.length} messages, in full in the jsonl export).\n\n`;
    case 'prompt':
      return `**Prompt** ${at}\n\n${fenced(entry.text)}`;
    case 'model_output': {
      const usage = `${entry.usage.inputTokens} → ${entry.usage.outputTokens} tokens, ${dollars(entry.costUsd)}`;
      const retried =
        entry.attempt === undefined
          ? ''
          : ` (attempt ${entry.attempt}${entry.retriedAfter ? `, after: ${oneLine(entry.retriedAfter)}` : ''})`;
      const text = entry.text === '' ? '_(no text)_\n\n' : fenced(entry.text);
      return `**Model output** ${at} · ${usage}${retried}\n\n${text}`;
    }
    case 'model_failed':
      return `**Model call failed** ${at}${entry.failureType ? ` (${oneLine(entry.failureType)})` : ''}: ${oneLine(entry.error)}\n\n`;
    case 'tool_call':
      // Arguments that were not a JSON object are shown as the model sent them, not as `{}`.
      return entry.rawArguments === undefined
        ? `**Tool call** ${code(entry.tool)} (${code(entry.callId)})\n\n${fenced(visibleJson(entry.arguments ?? null, 2), 'json')}`
        : `**Tool call** ${code(entry.tool)} (${code(entry.callId)}), arguments as sent (not a JSON object)\n\n${fenced(entry.rawArguments)}`;
    case 'tool_result': {
      const outcome = entry.success ? 'succeeded' : 'failed';
      const source = entry.source === 'workflow' ? ', given by the run' : '';
      const error = entry.error ? `Error: ${oneLine(entry.error)}\n\n` : '';
      const output = entry.output === '' ? '_(no output)_\n\n' : fenced(entry.output);
      return `**Tool result** ${code(entry.tool)} (${code(entry.callId)}) ${outcome}${source} ${at}\n\n${error}${output}`;
    }
    case 'tool_failed':
      return `**Tool call failed** ${code(entry.tool)} (${code(entry.callId)}) ${at}: ${oneLine(entry.error)}\n\n`;
    case 'permission_requested':
      return (
        `**Permission requested** ${code(entry.requestId)} for ${code(entry.tool)} ${at}, until ${oneLine(entry.expiresAt)}` +
        `${entry.rationale ? `: ${oneLine(entry.rationale)}` : ''}\n\n${fenced(visibleJson(entry.input ?? null, 2), 'json')}`
      );
    case 'permission_decided': {
      // Calls decided without asking are named by their call ID, which the tool result shows already.
      const request = entry.requestId.startsWith('pr_') ? `${code(entry.requestId)} ` : '';
      return `**${entry.approved ? 'Approved' : 'Denied'}** ${request}(${code(entry.tool)}) ${decisionText(entry)}\n\n`;
    }
    case 'signal': {
      const payload = entry.payload === undefined ? 'no payload' : code(JSON.stringify(entry.payload));
      const ignored = entry.valid ? '' : ` — ignored: ${oneLine(entry.problem ?? 'invalid')}`;
      return `- Signal ${code(entry.signal)} from ${code(entry.identity)} ${at}: ${payload}${ignored}\n\n`;
    }
    case 'cancel_requested':
      return `- Cancellation requested by ${code(entry.identity)} ${at}${entry.cause ? `: ${oneLine(entry.cause)}` : ''}\n\n`;
    case 'state':
      return `- State → ${code(entry.state)} ${at}\n\n`;
    case 'notice':
      return `- Notice (${oneLine(entry.notice)}) ${at}: ${oneLine(entry.text)}\n\n`;
    case 'timer':
      if (entry.event === 'started')
        return `- Timer ${entry.timerId} started ${at}: ${entry.seconds ?? '?'} s\n\n`;
      return `- Timer ${entry.timerId} ${entry.event === 'fired' ? 'fired' : 'cancelled (woken early)'} ${at}\n\n`;
    case 'activity':
      // The daily ledger's bookkeeping is in the jsonl export; only its failures matter to a reader.
      if (entry.activity === 'dailyUsage' && entry.error === undefined) return '';
      return `- ${code(entry.activity)}${entry.summary ? ` (${oneLine(entry.summary)})` : ''} ${entry.error ? `failed: ${oneLine(entry.error)}` : 'done'} ${at}\n\n`;
    case 'continued_as_new':
      return `---\n\n_Execution ${code(entry.runId)} continued as new ${at}._\n\n`;
    case 'run_ended':
      return `## End\n\n${endText(entry)}\n`;
  }
}

function decisionText(entry: Extract<AuditEntry, { kind: 'permission_decided' }>): string {
  const note = entry.note ? ` — "${oneLine(entry.note)}"` : '';
  switch (entry.via) {
    case 'signal': {
      const who = entry.by ?? entry.signal?.by ?? 'someone';
      const identity = entry.signal ? ` (identity ${oneLine(entry.signal.identity)})` : '';
      return `by ${oneLine(who)}${identity} at ${entry.signal?.at ?? entry.at}${note}`;
    }
    case 'rule':
      return `by rule ${entry.rule ? code(entry.rule) : '(unnamed)'} at ${entry.at}${note}`;
    case 'auto-approve':
      return `automatically (mode auto-approve) at ${entry.at}${note}`;
    case 'timeout':
      return `on timeout at ${entry.at}: nobody decided in time${note}`;
  }
}

function endText(entry: Extract<AuditEntry, { kind: 'run_ended' }>): string {
  const at = `at ${entry.at}`;
  switch (entry.outcome) {
    case 'completed': {
      const result = z
        .looseObject({
          exitReason: z.string(),
          iterations: z.number(),
          usage: z.looseObject({ inputTokens: z.number(), outputTokens: z.number(), costUsd: z.number() }),
        })
        .safeParse(entry.result);
      if (!result.success) return `The run completed ${at}.\n`;
      const { exitReason, iterations, usage } = result.data;
      return (
        `The run completed ${at}: exit reason ${code(exitReason)} after ${iterations} iterations, ` +
        `${usage.inputTokens} → ${usage.outputTokens} tokens, ${dollars(usage.costUsd)}.\n`
      );
    }
    case 'failed':
      return `The run failed ${at}: ${oneLine(entry.error ?? '')}\n`;
    case 'terminated':
      return `The run was terminated ${at} by ${code(entry.identity ?? '')}: ${oneLine(entry.reason ?? '')}\n`;
    case 'cancelled':
      return `The run was cancelled ${at}.\n`;
    case 'timed_out':
      return `The run timed out ${at}.\n`;
  }
}

/**
 * A fenced block that no backtick run inside `text` can close early, with controls and invisible
 * characters shown as escapes; long texts cut with a note.
 */
function fenced(text: string, language = 'text'): string {
  const cut = text.length > MARKDOWN_MAX_CHARS ? text.slice(0, MARKDOWN_MAX_CHARS) : text;
  const rest = text.length - cut.length;
  const note = rest > 0 ? `(${rest} more characters in the jsonl export)\n\n` : '';
  return `${markdownFence(cut, language)}\n\n${note}`;
}

/** A name, ID or short text as an inline code span, on one line and neutralized. */
function code(text: string): string {
  return markdownCode(cutLine(text.replace(/[ \t\r\n]+/g, ' ').trim()));
}

/** History text as Markdown prose: one line, neutralized, with Markdown and HTML escaped. */
function oneLine(text: string): string {
  return markdownText(cutLine(text));
}

function cutLine(text: string): string {
  return text.length > 500 ? `${text.slice(0, 499)}…` : text;
}

function dollars(amount: number): string {
  return `$${amount.toFixed(4)}`;
}
