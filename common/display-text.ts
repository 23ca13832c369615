/**
 * Text from a model (commands, rationales, summaries, tool output, errors) made safe to show a
 * person: every character that a terminal would obey or that the eye cannot see is shown as its
 * escape, so a command cannot erase or reorder what the approver reads, and Markdown or HTML in it
 * stays text. Pure string work with no Node built-ins: the workflow's current details use it too.
 */

/**
 * The characters shown as their escape: C0 controls, DEL and C1 controls (ESC starts the terminal
 * sequences that erase lines, move the cursor or hide a hyperlink's target); bidi controls, which
 * reorder what is shown; zero-width and other invisible format characters, fillers and tag
 * characters, which hide text; the Unicode line and paragraph separators; lone surrogates.
 * Variation selectors stay: they change how a visible character is drawn, not what is there.
 */
const HIDDEN_BEYOND_C0 =
  '\\x7f-\\x9f\\u00ad\\u034f\\u061c\\u115f\\u1160\\u17b4\\u17b5\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u206f\\u3164\\ufeff\\uffa0\\ufff9-\\ufffb\\u{1d173}-\\u{1d17a}\\u{e0000}-\\u{e007f}';
// The classes list combining and joining characters one by one, on purpose: each is to be shown.
// eslint-disable-next-line no-misleading-character-class
const HIDDEN_CHARACTERS = new RegExp(`\\r\\n|[\\x00-\\x1f${HIDDEN_BEYOND_C0}\\ud800-\\udfff]`, 'gu');
/** What JSON.stringify leaves raw that a terminal obeys or hides: it escapes C0 and lone surrogates. */
// eslint-disable-next-line no-misleading-character-class
const HIDDEN_IN_JSON = new RegExp(`[${HIDDEN_BEYOND_C0}]`, 'gu');

/** Short escapes a reader knows; every other control is `\xNN`. */
const NAMED_ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** The escape a hidden character is shown as: `\x1b`, `\n`, `\u202e`, `\u{e0041}`. */
function escapeOf(character: string): string {
  const named = NAMED_ESCAPES[character];
  if (named !== undefined) return named;
  const code = character.codePointAt(0)!;
  if (code <= 0x9f) return `\\x${code.toString(16).padStart(2, '0')}`;
  if (code <= 0xffff) return `\\u${code.toString(16).padStart(4, '0')}`;
  return `\\u{${code.toString(16)}}`;
}

/** `text` with every hidden character escaped; in a block, newline and tab stay and CR LF is a newline. */
function neutralize(text: string, keepLines: boolean): string {
  return text.replace(HIDDEN_CHARACTERS, (character) => {
    if (!keepLines) return character === '\r\n' ? '\\r\\n' : escapeOf(character);
    if (character === '\r\n') return '\n';
    return character === '\n' || character === '\t' ? character : escapeOf(character);
  });
}

/**
 * `text` for a one-line place (a terminal line, a log line): every control, bidi, invisible or
 * line-breaking character shown as its escape, newline as `\n`, ESC as `\x1b`, so `\x1b[2K` (erase
 * the line) shows as those characters instead of erasing anything.
 */
export function visibleLine(text: string): string {
  return neutralize(text, false);
}

/**
 * `text` for a block of several lines (command output, model text): as {@link visibleLine}, but
 * newline and tab stay (and CR LF becomes a newline); a lone CR, which would let a line overwrite
 * itself, shows as `\r`.
 */
export function visibleBlock(text: string): string {
  return neutralize(text, true);
}

/**
 * `text` as prose on one line: runs of spaces, tabs and line breaks become one space, as a log line
 * shows a summary, and everything else hidden is shown as in {@link visibleLine}; a lone CR, which
 * returns to the line's start, is not a line break and shows as `\r`.
 */
export function visibleProse(text: string): string {
  return visibleLine(text.replace(/(?:[ \t\n]|\r\n)+/g, ' ').trim());
}

/**
 * `value` as JSON on one line (or indented by `space`), its strings shown as in {@link visibleLine}:
 * quotes and backslashes escaped as JSON does, a control as `\x1b` or `\n`, a bidi or invisible
 * character as `\u202e`. Whatever a tool call's arguments hold, all of it is there, where it can be
 * read and not obeyed, and a typed `\x1b` (shown `\\x1b`) is told apart from a real ESC.
 */
export function visibleJson(value: unknown, space?: number): string {
  const json = JSON.stringify(value, null, space) ?? 'null';
  // JSON writes C0 controls as \u00XX: shown as \xNN like everywhere else; \\ stays a backslash.
  const shorter = json.replace(/\\(u00[01][0-9a-f]|.)/g, (escape: string, body: string) =>
    body.startsWith('u00') ? `\\x${body.slice(3)}` : escape,
  );
  // Indented, the only raw newlines are the layout's: strings hold theirs as \n.
  return space === undefined ? visibleLine(shorter) : visibleBlock(shorter);
}

/**
 * `value` as JSON (indented by `space` as JSON.stringify does) with every character a terminal would
 * obey or hide written as its `\uXXXX` escape: the same data to any JSON parser, so `--json` output
 * and the jsonl export stay exact, and nothing in them acts on the terminal that prints them.
 */
export function terminalSafeJson(value: unknown, space?: number): string {
  const json = JSON.stringify(value, null, space) ?? 'null';
  return json.replace(HIDDEN_IN_JSON, (character) => {
    // JSON escapes UTF-16 units: a tag character beyond U+FFFF is written as its surrogate pair.
    let escaped = '';
    for (let index = 0; index < character.length; index += 1)
      escaped += `\\u${character.charCodeAt(index).toString(16).padStart(4, '0')}`;
    return escaped;
  });
}

/**
 * A Markdown fenced code block holding `text` (neutralized as a block), fenced with more backticks
 * than any run inside it so the text cannot close the block early: whatever it holds (links,
 * images, HTML) is shown as code and nothing in it is rendered.
 */
export function markdownFence(text: string, language = 'text'): string {
  const visible = visibleBlock(text);
  const longestRun = Math.max(2, ...[...visible.matchAll(/`+/g)].map((match) => match[0].length));
  const fence = '`'.repeat(longestRun + 1);
  return `${fence}${language}\n${visible}${visible.endsWith('\n') ? '' : '\n'}${fence}`;
}

/**
 * `text` as Markdown prose on one line (a paragraph, a list item, a table cell): neutralized as in
 * {@link visibleProse}, every character Markdown gives a meaning to backslash-escaped and `& < >`
 * written as entities, so `![APPROVED](http://x/a.png)` shows as those characters, not as an image,
 * and no HTML from the text is rendered. What renderers turn into links on their own (`://`, `www.`,
 * `mailto:`, the `@` of an address with a domain) is broken with an entity, so no bare URL becomes a link either: it reads the same.
 */
export function markdownText(text: string): string {
  return visibleProse(text)
    .replace(/[\\`*_[\]()#!|~{}]/g, (character) => `\\${character}`)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/:(?=\/\/)|(?<=\b(?:mailto|xmpp)):/gi, '&#58;')
    .replace(/www\./gi, (www) => `${www.slice(0, 3)}&#46;`)
    .replace(/@(?=[a-z0-9_-]+\.)/gi, '&#64;');
}

/**
 * `text` as a Markdown code span on one line, neutralized as in {@link visibleLine}, delimited by
 * more backticks than any run inside it: for names and IDs a reader may want to copy exactly.
 */
export function markdownCode(text: string): string {
  const visible = visibleLine(text);
  const longestRun = Math.max(0, ...[...visible.matchAll(/`+/g)].map((match) => match[0].length));
  const ticks = '`'.repeat(longestRun + 1);
  const padding = visible.startsWith('`') || visible.endsWith('`') || longestRun > 0 ? ' ' : '';
  return `${ticks}${padding}${visible}${padding}${ticks}`;
}

/**
 * `text` for the `text` field of a chat webhook (Slack and the services that copy its format):
 * neutralized as a block, and `&`, `<` and `>` written as `&amp;`, `&lt;` and `&gt;`, as those
 * services require, so no `<url|label>` link, mention or markup comes from the text.
 */
export function chatText(text: string): string {
  return visibleBlock(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * `text` cut to `maxChars`, saying how many characters were left out and where they are, so a cut
 * never hides a tail unnoticed: `… (1234 more characters: agents status <name>)`.
 */
export function cutWithNote(text: string, maxChars: number, whereTheRestIs: string): string {
  if (text.length <= maxChars) return text;
  return `${text.slice(0, maxChars)}… (${text.length - maxChars} more characters: ${whereTheRestIs})`;
}
