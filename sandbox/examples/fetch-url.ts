import type { LookupAddress } from 'node:dns';
import { TextDecoder } from 'node:util';
import { Agent, request, type Dispatcher } from 'undici';
import { z } from 'zod';
import { defineTool } from '../external-tool';
import { addressPolicy, vettedLookup, type AddressPolicy } from '../network-addresses';
import { SandboxError, TRUNCATION_MARKER } from '../tool-call';

/** Milliseconds to wait for the response headers, then between body chunks. */
const NETWORK_TIMEOUT_MS = 30_000;

/** Redirects followed at most, each checked like the first request. */
const MAX_REDIRECTS = 5;

/** Statuses whose `location` is followed. */
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

/**
 * CIDR ranges (comma-separated) the tool may reach although they are refused by default, such as
 * `10.20.0.0/16` for an internal documentation server; read at each call.
 */
export const FETCH_URL_ALLOW_CIDRS_VARIABLE = 'FETCH_URL_ALLOW_CIDRS';

/** Content types shown as text; any other body is described, not dumped into the transcript. */
const TEXT_TYPE = /^(text\/|application\/([\w.+-]*\+)?(json|xml|javascript|x-www-form-urlencoded)\b)/i;

/**
 * An example external tool: fetches an http(s) URL and returns its status, content type and body
 * text, read up to `maxBytes` (so a huge download is never pulled in whole); a binary body is
 * described, not read.
 *
 * It never reaches what the tool server's own network position grants: loopback, private,
 * link-local, the cloud metadata address and the host's own addresses are refused after the name is
 * resolved (`network-addresses.ts`, the rules of the sandbox's network proxy), and the connection
 * goes to the address that was checked, so a name that resolves differently the second time
 * (DNS rebinding) gains nothing. Redirects are followed by the tool itself, at most
 * {@link MAX_REDIRECTS}, each one checked the same way. `FETCH_URL_ALLOW_CIDRS` lets listed ranges
 * through.
 *
 * Serve it with `agents tool-server --tools sandbox/examples/fetch-url.ts`.
 */
export const fetchUrl = defineTool({
  name: 'fetch_url',
  description:
    "Fetch a public http(s) URL with GET and return the HTTP status, the content type and the body as text, truncated at maxBytes bytes. Follows up to 5 redirects. Refuses loopback, private, link-local and cloud metadata addresses and the host's own, checked after name resolution and again at every redirect.",
  input: z.object({
    url: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }),
    maxBytes: z.number().int().min(1).max(1_000_000).default(100_000),
  }),
  async execute({ url, maxBytes }, { signal }) {
    const policy = addressPolicy({ allowCidrs: allowCidrsFromEnvironment() });
    const vetted = new Map<string, string>();
    // Connections go to the address vetted for the host, never to a fresh resolution of its name.
    const dispatcher = new Agent({
      connect: {
        lookup: (hostname, options, callback) => {
          const address = vetted.get(hostname);
          if (address === undefined) {
            callback(new SandboxError(`${hostname} was not checked before connecting`), '', 0);
            return;
          }
          const family = address.includes(':') ? 6 : 4;
          if ((options as { all?: boolean }).all === true) {
            (callback as unknown as (error: null, addresses: LookupAddress[]) => void)(null, [
              { address, family },
            ]);
          } else callback(null, address, family);
        },
      },
    });
    try {
      return await fetchFollowing(new URL(url), { maxBytes, signal, policy, vetted, dispatcher });
    } finally {
      await dispatcher.close();
    }
  },
});

interface FetchContext {
  maxBytes: number;
  signal: AbortSignal;
  policy: AddressPolicy;
  /** Host name (as undici passes it to `lookup`) to the address checked for it. */
  vetted: Map<string, string>;
  dispatcher: Dispatcher;
}

/** Fetches `start`, following redirects, each hop's host checked before it is connected to. */
async function fetchFollowing(start: URL, context: FetchContext) {
  let current = start;
  for (let redirects = 0; ; redirects += 1) {
    const hostname = current.hostname.replace(/^\[(.*)\]$/, '$1');
    const decision = await vettedLookup(hostname, context.policy, current.host);
    if (!decision.allowed) {
      throw new SandboxError(
        `Refused: ${decision.reason}${redirects > 0 ? ` (after ${redirects} redirect${redirects === 1 ? '' : 's'} from ${start.href})` : ''}`,
      );
    }
    context.vetted.set(hostname, decision.address);
    const response = await request(current, {
      method: 'GET',
      signal: context.signal,
      dispatcher: context.dispatcher,
      headersTimeout: NETWORK_TIMEOUT_MS,
      bodyTimeout: NETWORK_TIMEOUT_MS,
      headers: { accept: 'text/*, application/json, application/xml;q=0.9, */*;q=0.5' },
    });
    const location = headerValue(response.headers.location);
    if (!REDIRECT_STATUSES.has(response.statusCode) || location === undefined) {
      return describeResponse(response, context.maxBytes, redirects === 0 ? undefined : current);
    }
    await response.body.dump();
    if (redirects === MAX_REDIRECTS) {
      throw new SandboxError(`Too many redirects: more than ${MAX_REDIRECTS} from ${start.href}`);
    }
    const next = new URL(location, current);
    if (next.protocol !== 'http:' && next.protocol !== 'https:') {
      throw new SandboxError(`Refused: a redirect to ${next.protocol} (only http and https are fetched)`);
    }
    current = next;
  }
}

/** The response as the tool's result: status, type, the final URL after redirects, and the body. */
async function describeResponse(
  response: Dispatcher.ResponseData,
  maxBytes: number,
  finalUrl: URL | undefined,
) {
  const contentType = headerValue(response.headers['content-type']) ?? '';
  const location = headerValue(response.headers.location);
  const head = [`HTTP ${response.statusCode}`, `content-type: ${contentType || '(none)'}`];
  if (finalUrl !== undefined) head.push(`url: ${finalUrl.href}`);
  if (location !== undefined) head.push(`location: ${location}`);
  const redirected = finalUrl === undefined ? {} : { url: finalUrl.href };
  if (contentType !== '' && !TEXT_TYPE.test(contentType)) {
    // Discards the body, destroying it unread when it is large; a bare destroy() would emit an
    // unhandled error and bring the server down.
    await response.body.dump();
    const length = headerValue(response.headers['content-length']);
    head.push('', `(binary body${length === undefined ? '' : ` of ${length} bytes`}, not shown)`);
    return {
      output: head.join('\n'),
      metadata: { status: response.statusCode, contentType, ...redirected },
    };
  }

  const chunks: Buffer[] = [];
  let bytes = 0;
  let truncated = false;
  for await (const chunk of response.body) {
    const buffer = chunk as Buffer;
    const room = maxBytes - bytes;
    if (buffer.length > room) {
      // Leaving the loop destroys the body: the rest is never downloaded.
      chunks.push(buffer.subarray(0, room));
      bytes = maxBytes;
      truncated = true;
      break;
    }
    chunks.push(buffer);
    bytes += buffer.length;
  }
  // A character cut at the limit is dropped rather than shown as U+FFFD.
  const text = decoderFor(contentType).decode(Buffer.concat(chunks), { stream: truncated });
  return {
    output: `${head.join('\n')}\n\n${text}${truncated ? `\n${TRUNCATION_MARKER}` : ''}`,
    metadata: { status: response.statusCode, contentType, bytes, truncated, ...redirected },
  };
}

/** The ranges of {@link FETCH_URL_ALLOW_CIDRS_VARIABLE}; a bad one is the call's error. */
function allowCidrsFromEnvironment(): string[] {
  const value = process.env[FETCH_URL_ALLOW_CIDRS_VARIABLE] ?? '';
  return value
    .split(',')
    .map((range) => range.trim())
    .filter(Boolean);
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** A decoder for the charset the content type names, UTF-8 when it names none or an unknown one. */
function decoderFor(contentType: string): TextDecoder {
  const charset = /charset="?([\w-]+)"?/i.exec(contentType)?.[1];
  try {
    return new TextDecoder(charset ?? 'utf-8');
  } catch {
    return new TextDecoder('utf-8');
  }
}

export default [fetchUrl];
