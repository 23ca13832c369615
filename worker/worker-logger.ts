import { formatWithOptions } from 'node:util';
import { DefaultLogger, type LogEntry, type LogLevel } from '@temporalio/worker';

/**
 * One log entry as one line: the time, the level, the message, then its fields as the SDK's own
 * logger shows them but never broken over lines. A multi-line message or field keeps its line
 * breaks as `\n`, so an entry from outside (a signal's name, a payload's error) cannot pose as
 * several, and `grep` finds every entry whole.
 */
export function formatLogEntry(entry: LogEntry): string {
  const time = new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString();
  const message = entry.message.replace(/\r/g, '\\r').replace(/\n/g, '\\n');
  const fields =
    entry.meta === undefined
      ? ''
      : ` ${formatWithOptions({ breakLength: Infinity, compact: true }, entry.meta)}`;
  return `${time} [${entry.level}] ${message}${fields}`;
}

/**
 * The logger of the worker's process: the SDK's default logger at `level`, writing to stderr with
 * one line per entry (see {@link formatLogEntry}), where the default breaks fields over many lines.
 */
export function createWorkerLogger(level: LogLevel): DefaultLogger {
  return new DefaultLogger(level, (entry) => {
    process.stderr.write(`${formatLogEntry(entry)}\n`);
  });
}
