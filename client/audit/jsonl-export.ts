import { terminalSafeJson } from '../../common/display-text';
import type { AuditEntry } from './audit-entries';

/** The audit as JSON Lines for tools: one entry per line, every field in full. */

/**
 * One entry as a line of JSON Lines, newline included, every field in full: characters a terminal
 * would obey or hide are JSON `\u` escapes, the same data to a parser.
 */
export function formatJsonl(entry: AuditEntry): string {
  return `${terminalSafeJson(entry)}\n`;
}

/** The entries as JSON Lines, one line per chunk. */
export async function* jsonlLines(entries: AsyncIterable<AuditEntry>): AsyncGenerator<string> {
  for await (const entry of entries) yield formatJsonl(entry);
}
