import { TextDecoder } from 'node:util';
import { request } from 'undici';
import { z } from 'zod';
import { defineTool } from '../external-tool';
import { TRUNCATION_MARKER } from '../tool-call';

/** Milliseconds to wait for the response headers, then between body chunks. */
const NETWORK_TIMEOUT_MS = 30_000;

/** Content types shown as text; any other body is described, not dumped into the transcript. */
const TEXT_TYPE = /^(text\/|application\/([\w.+-]*\+)?(json|xml|javascript|x-www-form-urlencoded)\b)/i;

/**
 * An example external tool: fetches an http(s) URL and returns its status, content type and body
 * text, read up to `maxBytes` (so a huge download is never pulled in whole); a binary body is
 * described, not read. Redirects are not followed: the `location` header is shown for the model to
 * fetch next. It reaches whatever the tool server's machine reaches, internal addresses included:
 * run the server where that is fine.
 *
 * Serve it with `agents tool-server --tools sandbox/examples/fetch-url.ts`.
 */
export const fetchUrl = defineTool({
  name: 'fetch_url',
  description:
    'Fetch an http(s) URL with GET and return the HTTP status, the content type and the body as text, truncated at maxBytes bytes.',
  input: z.object({
    url: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }),
    maxBytes: z.number().int().min(1).max(1_000_000).default(100_000),
  }),
  async execute({ url, maxBytes }, { signal }) {
    const response = await request(url, {
      method: 'GET',
      signal,
      headersTimeout: NETWORK_TIMEOUT_MS,
      bodyTimeout: NETWORK_TIMEOUT_MS,
      headers: { accept: 'text/*, application/json, application/xml;q=0.9, */*;q=0.5' },
    });
    const contentType = headerValue(response.headers['content-type']) ?? '';
    const location = headerValue(response.headers.location);
    const head = [`HTTP ${response.statusCode}`, `content-type: ${contentType || '(none)'}`];
    if (location !== undefined) head.push(`location: ${location}`);
    if (contentType !== '' && !TEXT_TYPE.test(contentType)) {
      // Discards the body, destroying it unread when it is large; a bare destroy() would emit an
      // unhandled error and bring the server down.
      await response.body.dump();
      const length = headerValue(response.headers['content-length']);
      head.push('', `(binary body${length === undefined ? '' : ` of ${length} bytes`}, not shown)`);
      return { output: head.join('\n'), metadata: { status: response.statusCode, contentType } };
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
      metadata: { status: response.statusCode, contentType, bytes, truncated },
    };
  },
});

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
