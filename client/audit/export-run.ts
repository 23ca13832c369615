import type { Client } from '@temporalio/client';
import { agentNameSchema, describeZodError } from '../../common/agent-input';
import { workflowIdFor } from '../agents-client';
import { AgentsError } from '../errors';
import { chainEntries } from './audit-entries';
import { resolveRunChain } from './history-reader';
import { jsonlLines } from './jsonl-export';
import { formatMarkdown } from './markdown-export';

/** Export formats: one JSON object per line for tools, or Markdown for people. */
export type ExportFormat = 'jsonl' | 'md';

/**
 * The export of agent `name` as text chunks in `format`, for `agents export`. The run is found
 * before this resolves, so a missing run fails before anything is written.
 */
export async function exportRun(
  client: Client,
  name: string,
  options: { format: ExportFormat; runId?: string },
): Promise<AsyncGenerator<string>> {
  const parsed = agentNameSchema.safeParse(name);
  if (!parsed.success) {
    throw new AgentsError(
      'invalid_argument',
      `Invalid agent name '${name}': ${describeZodError(parsed.error)}`,
    );
  }
  const chain = await resolveRunChain(client, workflowIdFor(name), options);
  const entries = chainEntries(client, chain);
  return options.format === 'md' ? formatMarkdown(entries) : jsonlLines(entries);
}
