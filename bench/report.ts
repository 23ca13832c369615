/** What the benchmarks share: option schemas, percentiles, ratios, the table and the machine line. */
import { execFile } from 'node:child_process';
import os from 'node:os';
import { parseArgs, promisify } from 'node:util';
import type { google, temporal } from '@temporalio/proto';
import { z } from 'zod';
import type { ScriptedTurn } from '../common/agent-input';
import { testTemporalBinary } from '../test/helpers/temporal-server';

/** A whole number option from 1 to `maximum`, with messages naming it. */
export const countSchema = (name: string, maximum: number) =>
  z.coerce
    .number({ error: `${name} must be a number` })
    .int(`${name} must be a whole number`)
    .min(1, `${name} must be at least 1`)
    .max(maximum, `${name} must be at most ${maximum}`);

/** The value below which `fraction` of the samples fall (nearest rank). */
export function percentile(samples: number[], fraction: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil(fraction * sorted.length));
  return sorted[rank - 1] ?? Number.NaN;
}

/** A ratio as "×1.5" or, from 100 on, "×1,234". */
export function formatRatio(ratio: number): string {
  return `×${ratio >= 100 ? Math.round(ratio).toLocaleString('en-US') : ratio.toFixed(1)}`;
}

/** A plain-text table: the first column left-aligned, the figures right-aligned. */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const render = (cells: string[]) =>
    cells
      .map((cell, column) =>
        column === 0 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0),
      )
      .join('  ');
  const rule = widths.map((width) => '-'.repeat(width)).join('  ');
  return [render(header), rule, ...rows.map(render)].join('\n');
}

/** The version line of the `temporal` binary the dev server runs from. */
export async function temporalVersion(): Promise<string> {
  const { stdout } = await promisify(execFile)(await testTemporalBinary(), ['--version']);
  return stdout.trim();
}

/** CPU, Node and platform, printed with every result. */
export function describeMachine(): string {
  const cpus = os.cpus();
  const model = cpus[0]?.model.trim() ?? 'unknown CPU';
  return `${cpus.length} × ${model} · Node ${process.version} · ${os.platform()} ${os.arch()}`;
}

/** A history event's time in ms since the epoch, keeping the server's sub-millisecond precision. */
export function eventTimeMs(event: temporal.api.history.v1.IHistoryEvent): number {
  const time: google.protobuf.ITimestamp | null | undefined = event.eventTime;
  const seconds = time?.seconds;
  if (time === null || time === undefined || seconds === null || seconds === undefined) {
    throw new Error(`history event ${String(event.eventId)} has no time`);
  }
  return (typeof seconds === 'number' ? seconds : seconds.toNumber()) * 1000 + (time.nanos ?? 0) / 1e6;
}

/** A benchmark option: its flag, the field it fills, and the environment variable that may give it instead. */
export interface BenchOption {
  flag: string;
  field: string;
  variable?: string;
  /** A flag without a value, such as `--skip-local`. */
  boolean?: boolean;
}

/**
 * Reads a benchmark's options from argv, falling back on the environment, then on the schema's
 * defaults; fails with one line listing what is accepted. `--verbose` is always accepted.
 */
export function parseBenchOptions<Schema extends z.ZodType>(
  argv: string[],
  environment: NodeJS.ProcessEnv,
  schema: Schema,
  options: BenchOption[],
  accepted: string,
): z.output<Schema> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: Object.fromEntries([
        ...options.map((option) => [option.flag, { type: option.boolean === true ? 'boolean' : 'string' }]),
        ['verbose', { type: 'boolean' }],
      ]) as Record<string, { type: 'string' | 'boolean' }>,
      strict: true,
    }));
  } catch (error) {
    throw new Error(`${(error as Error).message.split('. ')[0]}. Accepted: ${accepted} [--verbose]`);
  }
  const input = Object.fromEntries(
    options.map((option) => [
      option.field,
      values[option.flag] ?? (option.variable === undefined ? undefined : environment[option.variable]),
    ]),
  );
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw new Error(`Invalid options: ${parsed.error.issues.map((issue) => issue.message).join('; ')}`);
  }
  return parsed.data;
}

/**
 * What the model says in `bench:iterations`, its peers and `bench:iteration-profile`: a few turns
 * with text and usage, played in a cycle, never waiting, so a profile measures the benchmark's runs.
 */
export const ITERATION_TURNS: Array<Partial<ScriptedTurn>> = [
  {
    text: 'Read the task program and listed the files to look at. Next: inspect the first file.',
    usage: { inputTokens: 420, outputTokens: 38 },
    costUsd: 0.0012,
    delayMs: 0,
  },
  {
    text: 'Inspected the file and noted two small issues. Next: fix the first issue.',
    usage: { inputTokens: 510, outputTokens: 31 },
    costUsd: 0.0014,
    delayMs: 0,
  },
  {
    text: 'Fixed the issue and checked the result. Next: move on to the second issue.',
    usage: { inputTokens: 590, outputTokens: 29 },
    costUsd: 0.0016,
    delayMs: 0,
  },
];
