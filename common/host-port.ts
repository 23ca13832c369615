import { z } from 'zod';

/** The forms a `host:port` setting accepts, for the message when one is wrong. */
export const HOST_PORT_FORMS =
  'host:port, such as temporal.example.com:7233, 127.0.0.1:7233 or [::1]:7233 (an IPv6 host in brackets)';

/** A `host:port` address read from a setting: the host without brackets, and the address as given. */
export interface HostPort {
  host: string;
  port: number;
  /** `host:port`, an IPv6 host in brackets: what Temporal's clients and listeners take. */
  address: string;
}

const HOST_PORT_PATTERN = /^(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([^\s:[\]/]+)):(\d{1,5})$/;

/** Parses `host:port` or `[ipv6]:port`; undefined when it is neither, or the port is out of range. */
export function parseHostPort(value: string): HostPort | undefined {
  const match = HOST_PORT_PATTERN.exec(value.trim());
  const port = Number(match?.[3]);
  if (match === null || !Number.isInteger(port) || port < 1 || port > 65_535) return undefined;
  const ipv6 = match[1];
  const host = ipv6 ?? match[2]!;
  return { host, port, address: ipv6 === undefined ? `${host}:${port}` : `[${host}]:${port}` };
}

/** `host:port` for a host and port: an IPv6 host in brackets, so the port stays readable. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** A zod schema of a `host:port` setting, parsed; `forms` is what the message says it accepts. */
export function hostPortSchema(forms = HOST_PORT_FORMS) {
  return z.string().transform((value, context): HostPort => {
    const parsed = parseHostPort(value);
    if (parsed === undefined) {
      context.addIssue({ code: 'custom', message: `must be ${forms}, not '${value}'` });
      return z.NEVER;
    }
    return parsed;
  });
}
