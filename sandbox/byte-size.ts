/**
 * Sizes in bytes as operators write them (`2GiB`, `500MiB`, `1073741824`) and as results show them
 * (`2.0 GiB`), for the sandbox server's disk quota and memory limit.
 */

const BINARY_UNITS: ReadonlyArray<readonly [string, number]> = [
  ['TiB', 1024 ** 4],
  ['GiB', 1024 ** 3],
  ['MiB', 1024 ** 2],
  ['KiB', 1024],
];

/**
 * Multipliers by unit, lower-cased. IEC units (`KiB`, `MiB`, `GiB`, `TiB`) and the single letters
 * `K`, `M`, `G`, `T` (as `du` and `ulimit` read them) are powers of 1024; SI units (`kB`, `MB`, `GB`,
 * `TB`) are powers of 1000; `B` or no unit is bytes.
 */
const UNIT_MULTIPLIERS: ReadonlyMap<string, number> = new Map([
  ['', 1],
  ['b', 1],
  ['k', 1024],
  ['kib', 1024],
  ['m', 1024 ** 2],
  ['mib', 1024 ** 2],
  ['g', 1024 ** 3],
  ['gib', 1024 ** 3],
  ['t', 1024 ** 4],
  ['tib', 1024 ** 4],
  ['kb', 1000],
  ['mb', 1000 ** 2],
  ['gb', 1000 ** 3],
  ['tb', 1000 ** 4],
]);

/** What {@link parseByteSize} accepts, for error messages. */
export const BYTE_SIZE_FORMS = 'a number of bytes or a size such as 500MiB, 2GiB, 2G or 1.5GB';

/**
 * The number of bytes `text` names (rounded down to a whole byte), or undefined when it is not a
 * positive size of one of the forms in {@link BYTE_SIZE_FORMS}.
 */
export function parseByteSize(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$/.exec(text);
  if (match === null) return undefined;
  const multiplier = UNIT_MULTIPLIERS.get((match[2] ?? '').toLowerCase());
  if (multiplier === undefined) return undefined;
  const bytes = Math.floor(Number(match[1]) * multiplier);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}

/** `bytes` with one decimal in the largest binary unit it reaches: `2.0 GiB`, `64.0 MiB`, `512 B`. */
export function formatBytes(bytes: number): string {
  for (const [unit, size] of BINARY_UNITS) {
    if (bytes >= size) return `${(bytes / size).toFixed(1)} ${unit}`;
  }
  return `${Math.round(bytes)} B`;
}
