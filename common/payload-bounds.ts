/**
 * Sizes as Temporal counts them, and cuts that keep a text within one. A payload is JSON in UTF-8,
 * so a text's size is the UTF-8 bytes of its JSON form, escapes included: a control character takes
 * six bytes (`\u0001`), a quote two, an emoji four. Pure string work with no Node built-ins, so
 * workflow code may use it as well as activities.
 */

/** Control characters JSON writes as a two-character escape (`\n`); the others take six (`\u0001`). */
const SHORT_ESCAPES = new Set([0x08, 0x09, 0x0a, 0x0c, 0x0d]);

/**
 * The UTF-8 bytes the code unit at `index` takes inside a JSON string, and how many code units it
 * spans (2 for a surrogate pair, written as one 4-byte character).
 */
function jsonCharacterBytes(text: string, index: number): { bytes: number; units: 1 | 2 } {
  const code = text.charCodeAt(index);
  if (code < 0x20) return { bytes: SHORT_ESCAPES.has(code) ? 2 : 6, units: 1 };
  if (code === 0x22 || code === 0x5c) return { bytes: 2, units: 1 };
  if (code < 0x80) return { bytes: 1, units: 1 };
  if (code < 0x800) return { bytes: 2, units: 1 };
  if (code >= 0xd800 && code <= 0xdbff) {
    const next = text.charCodeAt(index + 1);
    // A lone surrogate is written as its escape (`\ud83d`), as JSON.stringify does.
    return next >= 0xdc00 && next <= 0xdfff ? { bytes: 4, units: 2 } : { bytes: 6, units: 1 };
  }
  if (code >= 0xdc00 && code <= 0xdfff) return { bytes: 6, units: 1 };
  return { bytes: 3, units: 1 };
}

/** UTF-8 bytes of `text` as a JSON string, its quotes included. */
export function jsonStringBytes(text: string): number {
  let bytes = 2;
  for (let index = 0; index < text.length;) {
    const character = jsonCharacterBytes(text, index);
    bytes += character.bytes;
    index += character.units;
  }
  return bytes;
}

/** UTF-8 bytes of `value` as JSON: the size of the payload it becomes. */
export function jsonBytes(value: unknown): number {
  const json = JSON.stringify(value) ?? 'null';
  let bytes = 0;
  for (let index = 0; index < json.length; index += 1) {
    const code = json.charCodeAt(index);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff) {
      // JSON.stringify escapes lone surrogates, so a high surrogate here opens a pair: 4 bytes.
      bytes += 4;
      index += 1;
    } else bytes += 3;
  }
  return bytes;
}

/**
 * A limit as a person reads it, exactly: "128 KiB", "2 MiB", "900 bytes" (sizes measured on the
 * host read rounded, with `formatBytes` of sandbox/byte-size).
 */
export function formatExactBytes(bytes: number): string {
  if (bytes >= 1024 * 1024 && bytes % (1024 * 1024) === 0) return `${bytes / (1024 * 1024)} MiB`;
  if (bytes >= 1024 && bytes % 1024 === 0) return `${bytes / 1024} KiB`;
  return `${formatCount(bytes)} bytes`;
}

/** A count with thousands separators ("4,980,736"), the same on every machine. */
export function formatCount(count: number): string {
  return String(Math.round(count)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/** How every cut ends, so a reader (and a test) can tell a cut text from one that ended there. */
export const CUT_MARKER_START = '…[cut: ';

/**
 * The marker a cut text ends with: how much was left out, and the limit that cut it
 * ("…[cut: 4,980,736 more characters; an answer keeps at most 128 KiB]").
 */
export function cutMarker(removedCharacters: number, limit: string): string {
  return `${CUT_MARKER_START}${formatCount(removedCharacters)} more characters; ${limit}]`;
}

/**
 * `text` cut so that, as a JSON string, it takes at most `maxBytes`, ending with the marker `limit`
 * describes; a text that fits is returned as it is. A surrogate pair is never split.
 */
export function cutToJsonBytes(text: string, maxBytes: number, limit: string): string {
  if (jsonStringBytes(text) <= maxBytes) return text;
  // The marker for the longest cut possible is the longest marker: room is kept for it.
  const room = maxBytes - jsonStringBytes(cutMarker(text.length, limit));
  let bytes = 2;
  let end = 0;
  while (end < text.length) {
    const character = jsonCharacterBytes(text, end);
    if (bytes + character.bytes > room) break;
    bytes += character.bytes;
    end += character.units;
  }
  return `${text.slice(0, end)}${cutMarker(text.length - end, limit)}`;
}
