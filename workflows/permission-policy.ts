import type { PermissionPolicy, PermissionRule } from '../common/agent-input';
import type { PendingPermission } from '../common/agent-run-types';
import type { PermissionPayload } from '../common/messages';

/**
 * Which tool calls run, wait for a person or are refused, and the book of requests that wait.
 * Plain functions over plain JSON, so workflow code can call them and keep their state across
 * continue-as-new, and unit tests can exercise every rule without Temporal.
 */

/** A tool call as far as permissions care: its name and its arguments. */
export interface ToolCallShape {
  tool: string;
  arguments: Record<string, unknown>;
}

/** Tools that change nothing: they pass without asking in `ask` mode (rules still apply to them). */
export const READ_ONLY_TOOLS: readonly string[] = ['read_file', 'finish'];

/** Another name the model may use for a tool; rules and decisions see the tool's own name. */
const TOOL_ALIASES: Readonly<Record<string, string>> = {
  terminal: 'bash',
  terminal_stateful: 'bash_stateful',
};

/** Longest description of a call in notices and rationales. */
const DESCRIPTION_MAX_CHARS = 200;

/** The tool's own name for an alias (`terminal` → `bash`), so a rule for `bash` covers `terminal` too. */
export function canonicalTool(tool: string): string {
  return TOOL_ALIASES[tool] ?? tool;
}

/** JSON with object keys sorted at every depth, so equal arguments always read the same. */
function stableJson(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) => {
    if (inner === null || typeof inner !== 'object' || Array.isArray(inner)) return inner;
    const record = inner as Record<string, unknown>;
    return Object.fromEntries(
      Object.keys(record)
        .sort()
        .map((key) => [key, record[key]]),
    );
  });
}

/** The argument `name` when it is a string; otherwise the whole arguments, so nothing escapes a rule. */
function stringArgument(call: ToolCallShape, name: string): string {
  const value = call.arguments[name];
  return typeof value === 'string' ? value : stableJson(call.arguments);
}

/**
 * What a rule's pattern is matched against: the command of `bash` / `bash_stateful`, the path of
 * `read_file` / `write_file`, "action keys" of `tmux`, and the sorted JSON of any other tool's arguments.
 */
export function ruleSubject(call: ToolCallShape): string {
  switch (canonicalTool(call.tool)) {
    case 'bash':
    case 'bash_stateful':
      return stringArgument(call, 'command');
    case 'read_file':
    case 'write_file':
      return stringArgument(call, 'path');
    case 'tmux': {
      const { action, keys } = call.arguments;
      const actionText = typeof action === 'string' ? action : stableJson(action ?? '');
      return keys === undefined
        ? actionText
        : `${actionText} ${typeof keys === 'string' ? keys : stableJson(keys)}`;
    }
    default:
      return stableJson(call.arguments);
  }
}

/**
 * Whether `glob` matches the whole of `text`: `*` any run of characters (slashes, spaces and newlines
 * included), `?` exactly one, every other character literal. A direct matcher rather than a regular
 * expression: the model writes the text, and a regular expression with several stars can take
 * polynomial time on a long command, which in workflow code would stall the run on every replay.
 * This one backtracks only to the latest star, so it takes at most glob × text steps.
 */
function globMatches(glob: string, text: string): boolean {
  const pattern = Array.from(glob);
  const characters = Array.from(text);
  let patternIndex = 0;
  let textIndex = 0;
  let starIndex = -1;
  let starTextIndex = 0;
  while (textIndex < characters.length) {
    const expected = pattern[patternIndex];
    if (expected === '*') {
      starIndex = patternIndex++;
      starTextIndex = textIndex;
    } else if (expected !== undefined && (expected === '?' || expected === characters[textIndex])) {
      patternIndex++;
      textIndex++;
    } else if (starIndex !== -1) {
      patternIndex = starIndex + 1;
      textIndex = ++starTextIndex;
    } else {
      return false;
    }
  }
  while (pattern[patternIndex] === '*') patternIndex++;
  return patternIndex === pattern.length;
}

/** A rule's `match` split into its tool glob and its pattern (undefined for a bare tool). */
function parseMatch(match: string): { toolGlob: string; pattern?: string } {
  const open = match.indexOf('(');
  if (open === -1 || !match.endsWith(')')) return { toolGlob: match };
  return { toolGlob: match.slice(0, open), pattern: match.slice(open + 1, -1) };
}

/**
 * Whether `rule` applies to `call`. `match` is `tool` or `tool(pattern)`: the tool part is a glob over
 * canonical tool names (an alias in a rule means its tool too), the pattern a glob over the whole
 * {@link ruleSubject}. A bare `tool` and `tool(*)` match any arguments.
 */
export function matchesRule(rule: PermissionRule, call: ToolCallShape): boolean {
  const { toolGlob, pattern } = parseMatch(rule.match);
  if (!globMatches(canonicalTool(toolGlob), canonicalTool(call.tool))) return false;
  return pattern === undefined || globMatches(pattern, ruleSubject(call));
}

/** What the policy says about one call, and why, for the audit and the notice. */
export interface PermissionVerdict {
  action: 'allow' | 'deny' | 'ask';
  /** One short line: "rule deny bash(*rm -rf /*)", "read-only tool", "auto-approve mode", "ask mode". */
  reason: string;
  /** The rule that decided, as `<action> <match>`; absent when the mode's default decided. */
  rule?: string;
}

/**
 * Decides one call: the first matching rule wins in both modes, so a deny rule holds even under
 * auto-approve; without one, auto-approve allows and ask allows only read-only tools.
 */
export function decidePermission(policy: PermissionPolicy, call: ToolCallShape): PermissionVerdict {
  const rule = policy.rules.find((candidate) => matchesRule(candidate, call));
  if (rule !== undefined) {
    const written = `${rule.action} ${rule.match}`;
    return { action: rule.action, reason: `rule ${written}`, rule: written };
  }
  if (policy.mode === 'auto-approve') return { action: 'allow', reason: 'auto-approve mode' };
  if (READ_ONLY_TOOLS.includes(canonicalTool(call.tool)))
    return { action: 'allow', reason: 'read-only tool' };
  return { action: 'ask', reason: 'ask mode' };
}

/** One line naming a call for notices and rationales: "bash: git status", cut to 200 characters. */
export function describeToolCall(call: ToolCallShape): string {
  const line = `${call.tool}: ${ruleSubject(call)}`.replace(/\s+/g, ' ').trim();
  return line.length <= DESCRIPTION_MAX_CHARS ? line : `${line.slice(0, DESCRIPTION_MAX_CHARS - 1)}…`;
}

/**
 * A permission request ID: `pr_` and 16 lowercase hex digits drawn from `random`. The workflow passes
 * its own Math.random, which Temporal seeds per run, so replay gives the same IDs.
 */
export function newRequestId(random: () => number): string {
  let digits = '';
  for (let index = 0; index < 16; index++) digits += Math.min(15, Math.floor(random() * 16)).toString(16);
  return `pr_${digits}`;
}

/** How a request was settled. A timeout is a denial nobody gave, so it carries `timedOut`. */
export interface PermissionDecision {
  approve: boolean;
  timedOut: boolean;
  note?: string;
  by?: string;
  /** When it was decided (workflow time, ISO 8601). */
  at: string;
}

/** A request in the book: the pending request, and its decision once there is one. */
export interface PermissionRequest extends PendingPermission {
  decision?: PermissionDecision;
}

/** A `permission` payload that named no open request, kept in case its request opens later. */
export interface EarlyDecision extends PermissionPayload {
  receivedAt: string;
}

/**
 * Every permission request of a run, as plain JSON. The functions below change it in place.
 * - `pending`: opened requests, decided or not, until {@link closeRequests} takes them out;
 * - `early`: payloads that arrived before their request was opened (a signal can overtake the
 *   workflow code that opens the request: an approval must not be lost for that);
 * - `closed`: IDs of recently closed requests, so a late second answer is ignored rather than held.
 */
export interface PermissionBook {
  pending: PermissionRequest[];
  early: EarlyDecision[];
  closed: string[];
}

/** Payloads held for requests not yet opened; beyond this the oldest are dropped. */
export const MAX_EARLY_DECISIONS = 32;

/** Closed request IDs remembered to ignore late answers. */
const MAX_CLOSED_IDS = 64;

/** An empty book for a new run. */
export function newPermissionBook(): PermissionBook {
  return { pending: [], early: [], closed: [] };
}

/** The outcome of one `permission` payload, for logging and the count of ignored signals. */
export type DecisionReceipt = 'decided' | 'extended' | 'held' | 'ignored';

/** Applies a payload to an open request: a decision if it has `approve`, else an extension. */
function applyPayload(
  request: PermissionRequest,
  payload: PermissionPayload,
  nowIso: string,
): DecisionReceipt {
  if (request.decision !== undefined) return 'ignored';
  if (payload.approve !== undefined) {
    request.decision = { approve: payload.approve, timedOut: false, at: nowIso };
    if (payload.note !== undefined) request.decision.note = payload.note;
    if (payload.by !== undefined) request.decision.by = payload.by;
    return 'decided';
  }
  if (payload.extendS !== undefined && Number.isFinite(payload.extendS) && payload.extendS > 0) {
    request.expiresAt = new Date(Date.parse(request.expiresAt) + payload.extendS * 1000).toISOString();
    return 'extended';
  }
  return 'ignored';
}

/**
 * Adds a request to the book. Payloads that arrived for its ID earlier are applied to it now, in
 * the order they came; the decision they made, if any, is returned so the caller can act on it at once.
 */
export function openRequest(
  book: PermissionBook,
  request: PendingPermission,
): { decision?: PermissionDecision } {
  const entry: PermissionRequest = { ...request };
  book.pending.push(entry);
  const waiting = book.early.filter((early) => early.requestId === request.requestId);
  book.early = book.early.filter((early) => early.requestId !== request.requestId);
  for (const { receivedAt, ...payload } of waiting) applyPayload(entry, payload, receivedAt);
  return entry.decision === undefined ? {} : { decision: entry.decision };
}

/**
 * Applies a `permission` payload. `approve` decides an undecided request; `extendS` without `approve`
 * moves its expiry later. A payload for an ID not opened yet is held for {@link openRequest} (the
 * newest {@link MAX_EARLY_DECISIONS}); a second answer, or one for a closed request, is ignored.
 * A decision counts until {@link expireRequests} has marked the request timed out: a person who
 * answered while the worker was down is not overruled by a timer that fired meanwhile.
 */
export function receiveDecision(
  book: PermissionBook,
  payload: PermissionPayload,
  nowIso: string,
): DecisionReceipt {
  const request = book.pending.find((candidate) => candidate.requestId === payload.requestId);
  if (request !== undefined) return applyPayload(request, payload, nowIso);
  if (book.closed.includes(payload.requestId)) return 'ignored';
  if (payload.approve === undefined && payload.extendS === undefined) return 'ignored';
  book.early.push({ ...payload, receivedAt: nowIso });
  if (book.early.length > MAX_EARLY_DECISIONS) book.early.splice(0, book.early.length - MAX_EARLY_DECISIONS);
  return 'held';
}

/** Marks every undecided request whose expiry has come as timed out (a denial) and returns them. */
export function expireRequests(book: PermissionBook, nowIso: string): PermissionRequest[] {
  const now = Date.parse(nowIso);
  const expired = book.pending.filter(
    (request) => request.decision === undefined && Date.parse(request.expiresAt) <= now,
  );
  for (const request of expired) request.decision = { approve: false, timedOut: true, at: nowIso };
  return expired;
}

/** The earliest expiry among undecided requests: when the workflow must wake to time one out. */
export function nextExpiry(book: PermissionBook): string | undefined {
  let earliest: string | undefined;
  for (const request of book.pending) {
    if (request.decision !== undefined) continue;
    if (earliest === undefined || Date.parse(request.expiresAt) < Date.parse(earliest)) {
      earliest = request.expiresAt;
    }
  }
  return earliest;
}

/** Milliseconds from `nowMs` to {@link nextExpiry}, at least 1; undefined when nothing waits. */
export function msUntilNextExpiry(book: PermissionBook, nowMs: number): number | undefined {
  const expiry = nextExpiry(book);
  return expiry === undefined ? undefined : Math.max(1, Date.parse(expiry) - nowMs);
}

/** Whether every request in `ids` has been opened and decided (timeouts included). */
export function allDecided(book: PermissionBook, ids: readonly string[]): boolean {
  return ids.every((id) =>
    book.pending.some((request) => request.requestId === id && request.decision !== undefined),
  );
}

/** The requests still waiting for an answer, as the `status` query shows them. */
export function undecidedRequests(book: PermissionBook): PendingPermission[] {
  return book.pending
    .filter((request) => request.decision === undefined)
    .map(({ decision: _decision, ...request }) => request);
}

/**
 * Takes the requests in `ids` out of the book once their decisions have been acted on, and returns
 * them. Their IDs are remembered, so a late answer is ignored instead of being held.
 */
export function closeRequests(book: PermissionBook, ids: readonly string[]): PermissionRequest[] {
  const closing = book.pending.filter((request) => ids.includes(request.requestId));
  book.pending = book.pending.filter((request) => !ids.includes(request.requestId));
  book.closed.push(...closing.map((request) => request.requestId));
  if (book.closed.length > MAX_CLOSED_IDS) book.closed.splice(0, book.closed.length - MAX_CLOSED_IDS);
  return closing;
}

/** What the model reads back for a call that was refused or timed out. */
export function denialResultText(decision: PermissionDecision): string {
  if (decision.timedOut) return 'Denied: no decision arrived before the request timed out';
  return decision.note === undefined
    ? 'Denied: user rejected this operation'
    : `Denied: user rejected this operation (${decision.note})`;
}
