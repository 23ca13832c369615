import { lookup } from 'node:dns/promises';
import os from 'node:os';
import { formatIpAddress, hostMatchesPattern, normalizeHost, parseIpAddress } from '../common/host-patterns';
import { SandboxError } from './tool-call';

/**
 * Which addresses a sandboxed command (through the network proxy) or the `fetch_url` example may
 * connect to. Refused, whatever a run's policy says: the unspecified, loopback, link-local
 * (the cloud metadata address among them), private, shared (CGNAT), multicast, reserved and
 * broadcast ranges, IPv6 forms that embed such an IPv4 address (mapped, compatible, NAT64, 6to4),
 * and every address of this host's own interfaces, which reach the services the host runs (a
 * Temporal server, its Web UI, the sandbox server) however they are bound. An operator lifts a
 * refusal only by listing a CIDR range in the server's configuration (`allowCidrs`).
 *
 * The check is made on what a name resolves to, and the caller connects to the address that was
 * checked, never to the name again: a resolver that answers differently the second time (DNS
 * rebinding) gains nothing.
 */

export { hostMatchesPattern };

/** Resolves a host name to its addresses: `dns.lookup` with `all: true` unless a test passes its own. */
export type HostResolver = (hostname: string) => Promise<Array<{ address: string; family: number }>>;

/** What decides the addresses a connection may reach. */
export interface AddressPolicyOptions {
  /** CIDR ranges (`10.1.0.0/16`, `fd12::/64`, `127.0.0.1/32`) whose addresses are never refused. */
  allowCidrs?: readonly string[];
  /** The resolver to use instead of the system's (tests). */
  resolveHost?: HostResolver;
}

/** An {@link AddressPolicyOptions} with its ranges parsed once; made by {@link addressPolicy}. */
export interface AddressPolicy {
  readonly allowCidrs: readonly string[];
  readonly allowed: readonly AddressRange[];
  readonly resolveHost: HostResolver;
}

/** A parsed CIDR range. */
export interface AddressRange {
  bytes: number[];
  prefixLength: number;
}

/** The outcome of {@link vettedLookup}: the one address to connect to, or why there is none. */
export type VettedAddress =
  { allowed: true; address: string; family: 4 | 6 } | { allowed: false; reason: string };

/**
 * The ranges behind each reason for IPv4, most specific first. A reason is a phrase that finishes
 * "127.0.0.1 is …".
 */
const IPV4_REFUSALS: ReadonlyArray<[string, number, string]> = [
  // The cloud metadata services: AWS, GCP and Azure at the link-local one, Alibaba in the shared
  // range, Azure's wire server at a public one.
  ['169.254.169.254', 32, 'the cloud metadata address'],
  ['100.100.100.200', 32, 'the cloud metadata address'],
  ['168.63.129.16', 32, 'the cloud metadata address'],
  ['255.255.255.255', 32, 'the broadcast address'],
  ['0.0.0.0', 8, 'an unspecified address'],
  ['127.0.0.0', 8, 'a loopback address'],
  ['169.254.0.0', 16, 'a link-local address'],
  ['10.0.0.0', 8, 'a private address'],
  ['172.16.0.0', 12, 'a private address'],
  ['192.168.0.0', 16, 'a private address'],
  ['100.64.0.0', 10, 'a shared (CGNAT) address'],
  ['224.0.0.0', 4, 'a multicast address'],
  ['240.0.0.0', 4, 'a reserved address'],
];

/** The same for IPv6 addresses that embed no IPv4 address. */
const IPV6_REFUSALS: ReadonlyArray<[string, number, string]> = [
  ['fd00:ec2::254', 128, 'the cloud metadata address'],
  ['::', 128, 'an unspecified address'],
  ['::1', 128, 'a loopback address'],
  ['fe80::', 10, 'a link-local address'],
  ['fec0::', 10, 'a private address'],
  ['fc00::', 7, 'a private address'],
  ['ff00::', 8, 'a multicast address'],
  // The local-use NAT64 prefix puts its IPv4 address at a position of the operator's choosing.
  ['64:ff9b:1::', 48, 'a reserved address'],
  ['100::', 64, 'a reserved address'],
  ['2001::', 32, 'a tunnel (Teredo) address'],
];

/** IPv6 ranges with an IPv4 address in them, and where its four bytes start. */
const EMBEDDING_RANGES: ReadonlyArray<[string, number, number]> = [
  ['::ffff:0:0', 96, 12], // IPv4-mapped
  ['::ffff:0:0:0', 96, 12], // IPv4-translated (SIIT)
  ['64:ff9b::', 96, 12], // NAT64
  ['2002::', 16, 2], // 6to4
  ['::', 96, 12], // IPv4-compatible (deprecated)
];

function compileRanges<T extends unknown[]>(
  table: ReadonlyArray<[string, number, ...T]>,
): Array<[AddressRange, ...T]> {
  return table.map(([address, prefixLength, ...rest]) => [
    { bytes: parseIpAddress(address) ?? [], prefixLength },
    ...rest,
  ]);
}

const IPV4_RANGES = compileRanges(IPV4_REFUSALS);
const IPV6_RANGES = compileRanges(IPV6_REFUSALS);
const EMBEDDING = compileRanges(EMBEDDING_RANGES);

/**
 * Parses a CIDR range (`10.213.0.0/24`, `fd12::/64`; a bare address is a range of one). Throws a
 * {@link SandboxError} saying what is accepted when it is not one.
 */
export function parseCidr(text: string): AddressRange {
  const [address = '', prefix, ...rest] = text.trim().split('/');
  const bytes = parseIpAddress(address);
  const bits = bytes === undefined ? 0 : bytes.length * 8;
  const prefixLength = prefix === undefined ? bits : /^\d{1,3}$/.test(prefix) ? Number(prefix) : -1;
  if (bytes === undefined || rest.length > 0 || prefixLength < 0 || prefixLength > bits) {
    throw new SandboxError(
      `Invalid CIDR range '${text}': expected an IPv4 or IPv6 address with an optional /prefix, such as 10.213.0.0/24 or fd12::/64`,
    );
  }
  return { bytes, prefixLength };
}

/** Whether `text` is a CIDR range {@link parseCidr} accepts. */
export function isCidrRange(text: string): boolean {
  try {
    parseCidr(text);
    return true;
  } catch {
    return false;
  }
}

/** Parses the options once: throws a {@link SandboxError} naming a bad CIDR range. */
export function addressPolicy(options: AddressPolicyOptions = {}): AddressPolicy {
  const allowCidrs = options.allowCidrs ?? [];
  return {
    allowCidrs,
    allowed: allowCidrs.map(parseCidr),
    resolveHost: options.resolveHost ?? systemResolver,
  };
}

const systemResolver: HostResolver = (hostname) => lookup(hostname, { all: true, verbatim: true });

function inRange(bytes: readonly number[], range: AddressRange): boolean {
  if (bytes.length !== range.bytes.length) return false;
  for (let bit = 0; bit < range.prefixLength; bit += 8) {
    const remaining = Math.min(8, range.prefixLength - bit);
    const mask = (0xff << (8 - remaining)) & 0xff;
    if (((bytes[bit / 8] ?? 0) & mask) !== ((range.bytes[bit / 8] ?? 0) & mask)) return false;
  }
  return true;
}

/** The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), if any. */
function embeddedIpv4(bytes: readonly number[]): number[] | undefined {
  if (bytes.length !== 16) return undefined;
  for (const [range, start] of EMBEDDING) {
    if (!inRange(bytes, range)) continue;
    // :: and ::1 sit in the compatible range but are IPv6's own unspecified and loopback addresses.
    if (start === 12 && bytes.slice(0, 12).every((byte) => byte === 0) && (bytes[12] ?? 0) === 0) {
      const last = bytes.slice(13);
      if (last.every((byte) => byte === 0) || (last[0] === 0 && last[1] === 0 && last[2] === 1)) {
        return undefined;
      }
    }
    return bytes.slice(start, start + 4);
  }
  return undefined;
}

/** The addresses of this host's interfaces, read at each check: interfaces come and go. */
function hostAddresses(): number[][] {
  const addresses: number[][] = [];
  for (const entries of Object.values(os.networkInterfaces())) {
    for (const entry of entries ?? []) {
      const bytes = parseIpAddress(entry.address);
      if (bytes !== undefined) addresses.push(bytes);
    }
  }
  return addresses;
}

/**
 * Why a connection to `address` (an IP literal) is refused, as a phrase that finishes "… is": "a
 * loopback address", "a private address", "the cloud metadata address", "an address of this host";
 * undefined when it may be reached. An address inside one of the policy's `allowCidrs` is never
 * refused. Something that is not an IP literal is refused as "not an IP address".
 */
export function addressRefusal(address: string, policy: AddressPolicy): string | undefined {
  const bytes = parseIpAddress(normalizeHost(address));
  if (bytes === undefined) return 'not an IP address';
  return refusalOf(bytes, policy);
}

function refusalOf(bytes: number[], policy: AddressPolicy): string | undefined {
  if (policy.allowed.some((range) => inRange(bytes, range))) return undefined;
  const embedded = embeddedIpv4(bytes);
  if (embedded !== undefined) {
    const reason = refusalOf(embedded, policy);
    return reason === undefined ? undefined : `${reason} (IPv4 ${formatIpAddress(embedded)} inside)`;
  }
  const table = bytes.length === 4 ? IPV4_RANGES : IPV6_RANGES;
  const classified = table.find(([range]) => inRange(bytes, range))?.[1];
  if (classified !== undefined) return classified;
  const own = hostAddresses().some(
    (hostAddress) =>
      hostAddress.length === bytes.length && hostAddress.every((byte, index) => byte === bytes[index]),
  );
  return own ? 'an address of this host' : undefined;
}

/**
 * Resolves `hostname` (or takes it as it is when it is an IP literal) and vets every address it
 * resolves to: one refused address refuses the name, so a name that answers with a public and a
 * loopback address cannot pick the loopback one later. Returns the address to connect to (the
 * first of the answer); the caller connects to exactly that. A refusal's reason names the
 * destination as `label` ("localhost:7233 resolves to 127.0.0.1, a loopback address"). Rejects when
 * the name does not resolve.
 */
export async function vettedLookup(
  hostname: string,
  policy: AddressPolicy,
  label = normalizeHost(hostname),
): Promise<VettedAddress> {
  const host = normalizeHost(hostname);
  const literal = parseIpAddress(host);
  const answers =
    literal === undefined
      ? await policy.resolveHost(host)
      : [{ address: formatIpAddress(literal), family: literal.length === 4 ? 4 : 6 }];
  if (answers.length === 0) throw new SandboxError(`${host} resolves to no address`);
  for (const { address } of answers) {
    const reason = addressRefusal(address, policy);
    if (reason === undefined) continue;
    return {
      allowed: false,
      reason: literal === undefined ? `${label} resolves to ${address}, ${reason}` : `${label} is ${reason}`,
    };
  }
  const first = answers[0]!;
  const bytes = parseIpAddress(first.address);
  return { allowed: true, address: first.address, family: bytes?.length === 4 ? 4 : 6 };
}
