/**
 * Host names, IP literals and the host patterns of a run's network allow list
 * (`network: { allow: ["registry.npmjs.org", "*.github.com"] }`). Plain functions with no Node
 * built-ins, so the run's input schema (also loaded by workflow code) can check patterns, and the
 * sandbox's network proxy matches a destination with the same rules. Matching compares labels;
 * nothing here builds a regular expression from a pattern.
 */

/** Longest host name DNS allows, in characters. */
const MAX_HOSTNAME_LENGTH = 253;

/** One DNS label: letters, digits and inner hyphens, at most 63 characters. */
const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/**
 * The bytes of an IP address written in its usual form: dotted decimal IPv4 (4 bytes) or IPv6
 * (16 bytes, with `::`, an embedded dotted IPv4 tail and an optional `%zone`); undefined for
 * anything else. Deliberately strict: the shorthand forms `127.1` or `0x7f000001` are not literals
 * here (a resolver may still read them as addresses, which is why the proxy checks what a name
 * resolves to, not how it was written).
 */
export function parseIpAddress(text: string): number[] | undefined {
  return parseIpv4(text) ?? parseIpv6(text);
}

/** The four bytes of a dotted decimal IPv4 address, or undefined. */
export function parseIpv4(text: string): number[] | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const bytes: number[] = [];
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    bytes.push(value);
  }
  return bytes;
}

/** The sixteen bytes of an IPv6 address, or undefined. */
export function parseIpv6(text: string): number[] | undefined {
  const zone = text.indexOf('%');
  const value = zone >= 0 ? text.slice(0, zone) : text;
  if (!/^[0-9a-f:.]+$/i.test(value)) return undefined;
  const halves = value.split('::');
  if (halves.length > 2) return undefined;
  const compressed = halves.length === 2;
  const head = parseGroups(halves[0] ?? '', !compressed);
  const tail = compressed ? parseGroups(halves[1] ?? '', true) : [];
  if (head === undefined || tail === undefined) return undefined;
  if (!compressed) return head.length === 16 ? head : undefined;
  // `::` stands for at least one group of zeros.
  const missing = 16 - head.length - tail.length;
  if (missing < 2) return undefined;
  return [...head, ...new Array<number>(missing).fill(0), ...tail];
}

function parseGroups(part: string, ipv4TailAllowed: boolean): number[] | undefined {
  if (part === '') return [];
  const groups = part.split(':');
  const bytes: number[] = [];
  for (const [index, group] of groups.entries()) {
    if (group.includes('.')) {
      const ipv4 = ipv4TailAllowed && index === groups.length - 1 ? parseIpv4(group) : undefined;
      if (ipv4 === undefined) return undefined;
      bytes.push(...ipv4);
      continue;
    }
    if (!/^[0-9a-f]{1,4}$/i.test(group)) return undefined;
    const number = Number.parseInt(group, 16);
    bytes.push(number >> 8, number & 0xff);
  }
  return bytes;
}

/** An address's bytes in the usual notation: dotted IPv4, or IPv6 groups with the longest zero run as `::`. */
export function formatIpAddress(bytes: readonly number[]): string {
  if (bytes.length === 4) return bytes.join('.');
  const groups = Array.from(
    { length: 8 },
    (_, index) => ((bytes[2 * index] ?? 0) << 8) | (bytes[2 * index + 1] ?? 0),
  );
  let bestStart = -1;
  let bestLength = 1;
  for (let start = 0; start < 8;) {
    let end = start;
    while (end < 8 && groups[end] === 0) end += 1;
    if (end - start > bestLength) {
      bestStart = start;
      bestLength = end - start;
    }
    start = end === start ? start + 1 : end;
  }
  const hex = groups.map((group) => group.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`;
}

/**
 * A host as written in a URL or a `CONNECT` line, made comparable: lower case, without the
 * brackets of an IPv6 literal and without a final dot.
 */
export function normalizeHost(host: string): string {
  let normalized = host.trim().toLowerCase();
  if (normalized.startsWith('[') && normalized.endsWith(']')) normalized = normalized.slice(1, -1);
  if (normalized.endsWith('.') && parseIpAddress(normalized) === undefined)
    normalized = normalized.slice(0, -1);
  return normalized;
}

/**
 * Whether `host` (already normalized) is a DNS host name: dot-separated labels, 253 characters at
 * most, the last one not a number (`127.1` and `0x7f000001` are addresses to a resolver, not names).
 */
export function isHostname(host: string): boolean {
  if (host.length === 0 || host.length > MAX_HOSTNAME_LENGTH) return false;
  const labels = host.split('.');
  if (/^(0x[0-9a-f]*|[0-9]+)$/.test(labels.at(-1) ?? '')) return false;
  return labels.every((label) => LABEL.test(label));
}

/** What {@link isHostPattern} accepts, for error messages. */
export const HOST_PATTERN_RULE =
  'a host name (registry.npmjs.org), "*." and a host name for its subdomains (*.github.com), or an IP address (192.0.2.10, 2001:db8::1)';

/** Whether `pattern` is a valid allow-list entry: a host name, `*.` and a host name, or an IP literal. */
export function isHostPattern(pattern: string): boolean {
  const normalized = normalizeHost(pattern);
  if (parseIpAddress(normalized) !== undefined) return true;
  if (normalized.startsWith('*.'))
    return isHostname(normalized.slice(2)) && normalized.slice(2).includes('.');
  return isHostname(normalized);
}

/**
 * Whether a destination host matches an allow-list pattern: a host name matches itself (case and
 * a final dot ignored), `*.github.com` matches any name below github.com but not github.com itself,
 * and an IP literal matches the same address however it is written.
 */
export function hostMatchesPattern(host: string, pattern: string): boolean {
  const destination = normalizeHost(host);
  const wanted = normalizeHost(pattern);
  const wantedAddress = parseIpAddress(wanted);
  if (wantedAddress !== undefined) {
    const destinationAddress = parseIpAddress(destination);
    return (
      destinationAddress !== undefined &&
      destinationAddress.length === wantedAddress.length &&
      destinationAddress.every((byte, index) => byte === wantedAddress[index])
    );
  }
  if (!isHostname(destination)) return false;
  if (wanted.startsWith('*.')) {
    const suffix = wanted.slice(1);
    return destination.length > suffix.length && destination.endsWith(suffix);
  }
  return destination === wanted;
}
