/** One server-sent event: its `event:` name ("message" when none was given) and its data lines joined. */
export interface ServerSentEvent {
  event: string;
  data: string;
}

/** What the parser reports besides events. */
export interface ServerSentEventOptions {
  /**
   * Called for each comment line (`: keep-alive`): proxies such as OpenRouter send them while the
   * model has not started answering, so they show the connection is alive.
   */
  onComment?: (text: string) => void;
}

/**
 * Parses a Server-Sent Events stream (the WHATWG format) from raw body chunks: lines end in `\n`,
 * `\r\n` or `\r`, and a line or an event may be split anywhere across chunks, even inside a UTF-8
 * character. An event is dispatched at a blank line; events with no `data:` line are skipped, as
 * the format says. An event complete but for its blank line when the stream ends is still
 * dispatched, since some servers omit the last one; a line cut off mid-way is dropped.
 */
export async function* parseServerSentEvents(
  chunks: AsyncIterable<Uint8Array | string>,
  options: ServerSentEventOptions = {},
): AsyncGenerator<ServerSentEvent> {
  const decoder = new TextDecoder('utf-8');
  let pending = '';
  let eventName = '';
  let dataLines: string[] = [];
  let firstLine = true;
  /** The previous chunk ended in `\r`: a `\n` opening this one belongs to that line ending. */
  let afterCarriageReturn = false;

  function takeLine(line: string): ServerSentEvent | undefined {
    if (firstLine) {
      firstLine = false;
      if (line.startsWith('\uFEFF')) line = line.slice(1);
    }
    if (line === '') {
      const event =
        dataLines.length === 0 ? undefined : { event: eventName || 'message', data: dataLines.join('\n') };
      eventName = '';
      dataLines = [];
      return event;
    }
    if (line.startsWith(':')) {
      options.onComment?.(line.slice(1).trimStart());
      return undefined;
    }
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') dataLines.push(value);
    else if (field === 'event') eventName = value;
    // `id:` and `retry:` only matter to clients that reconnect, which a model call never does.
    return undefined;
  }

  for await (const chunk of chunks) {
    let text = typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true });
    if (afterCarriageReturn && text.startsWith('\n')) text = text.slice(1);
    afterCarriageReturn = text.endsWith('\r');
    // What is pending holds no line end: only the new text is searched, so a line of megabytes
    // in many chunks costs its length, not its length times its chunks.
    let searchFrom = pending.length;
    pending += text;
    let start = 0;
    for (;;) {
      const end = nextLineEnd(pending, Math.max(start, searchFrom));
      searchFrom = 0;
      if (end === -1) break;
      const event = takeLine(pending.slice(start, end));
      if (event !== undefined) yield event;
      start = pending[end] === '\r' && pending[end + 1] === '\n' ? end + 2 : end + 1;
    }
    pending = pending.slice(start);
  }
  pending += decoder.decode();
  if (pending === '' && dataLines.length > 0) {
    const event = takeLine('');
    if (event !== undefined) yield event;
  }
}

/** Index of the first `\r` or `\n` at or after `from`, or -1. */
function nextLineEnd(text: string, from: number): number {
  for (let index = from; index < text.length; index++) {
    const character = text[index];
    if (character === '\n' || character === '\r') return index;
  }
  return -1;
}
