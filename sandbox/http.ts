import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { z } from 'zod';
import { describeZodError } from '../common/agent-input';

/** What the sandbox and tool servers share on the wire: errors, JSON bodies and bearer tokens. */

/** A failure with the HTTP status and the one-line message the client receives. */
export class HttpError extends Error {
  override readonly name = 'HttpError';

  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Reads a JSON body of at most `maxBytes`: 413 over it, 400 with the parser's first line when it is not JSON. */
export async function readJson(request: IncomingMessage, maxBytes: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) throw new HttpError(413, `Request body over ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (error) {
    throw new HttpError(400, `Invalid JSON: ${(error as Error).message.split('\n')[0]}`);
  }
}

/** Validates a body with zod: 400 with "field: what was wrong" when it does not fit. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) throw new HttpError(400, `Invalid request: ${describeZodError(parsed.error)}`);
  return parsed.data;
}

/**
 * Checks `Authorization: Bearer <token>`: 401 when missing, 403 when wrong. The comparison is of
 * fixed-length digests in constant time, so it leaks neither the token nor its length.
 */
export class BearerToken {
  private readonly digest: Buffer;

  constructor(token: string) {
    this.digest = createHash('sha256').update(token).digest();
  }

  authorize(request: IncomingMessage): void {
    const header = request.headers.authorization;
    if (header === undefined || !header.startsWith('Bearer '))
      throw new HttpError(401, 'Missing bearer token');
    const given = createHash('sha256').update(header.slice('Bearer '.length)).digest();
    if (!timingSafeEqual(given, this.digest)) throw new HttpError(403, 'Invalid bearer token');
  }
}
