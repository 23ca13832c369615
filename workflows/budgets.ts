import type { BudgetLimits } from '../common/agent-input';
import { BUDGET_WARNING_FRACTIONS } from '../common/constants';

/**
 * Budget arithmetic of a run (SEED-BEHAVIOURS 15-19): whether a budget is used up or would be by the
 * next request, which warnings are due, and how a resume's overrides change the limits. Pure
 * functions, so the workflow decides from its own state and replay decides the same.
 */

/** Tokens and money, spent or about to be. */
export interface Spend {
  tokens: number;
  costUsd: number;
}

/** Spend of this run, and of every run on the current UTC day. */
export interface BudgetUsage {
  session: Spend;
  daily: Spend;
}

/** One of the four budgets. */
export type BudgetName = keyof BudgetLimits;

/** The answer of {@link checkBudgets}. */
export type BudgetCheck = { exceeded: false } | { exceeded: true; budget: BudgetName; reason: string };

/** A warning to send once, and the keys to remember so that it is not sent again. */
export interface BudgetWarning {
  budget: BudgetName;
  /** The highest fraction of the limit that usage has crossed. */
  fraction: number;
  message: string;
  /** Every fraction key this warning covers: remember them all in `alreadyWarned`. */
  keys: string[];
}

/** Longest reason a budget pause gives (SEED-BEHAVIOURS 18). */
const REASON_MAX_CHARS = 300;

/** The budgets in the order they are checked, with what each reads and how it is named. */
const BUDGETS: readonly {
  name: BudgetName;
  scope: keyof BudgetUsage;
  measure: keyof Spend;
  label: string;
  daily: boolean;
}[] = [
  { name: 'sessionTokens', scope: 'session', measure: 'tokens', label: 'session token budget', daily: false },
  {
    name: 'sessionCostUsd',
    scope: 'session',
    measure: 'costUsd',
    label: 'session cost budget',
    daily: false,
  },
  { name: 'dailyTokens', scope: 'daily', measure: 'tokens', label: 'daily token budget', daily: true },
  { name: 'dailyCostUsd', scope: 'daily', measure: 'costUsd', label: 'daily cost budget', daily: true },
];

/** A token count with thousands separators ("200,512"), the same on every machine. */
export function formatTokens(tokens: number): string {
  const [whole = '0', fraction] = String(Math.round(tokens * 100) / 100).split('.');
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return fraction === undefined ? grouped : `${grouped}.${fraction}`;
}

/**
 * An amount in dollars rounded to a millionth, where a cost is data a person reads (records, status,
 * result): sums of prices read 0.0003, not 0.00030000000000000003. Budgets keep the exact sums.
 */
export function roundUsd(amount: number): number {
  return Math.round(amount * 1_000_000) / 1_000_000;
}

/** An amount in dollars: cents ("$19.80"), or four decimals for amounts below a cent ("$0.0042"). */
export function formatUsd(amount: number): string {
  return amount > 0 && amount < 0.01 ? `$${amount.toFixed(4)}` : `$${amount.toFixed(2)}`;
}

/** An amount of one measure: a token count ("200,512") or dollars ("$19.80"). */
function formatAmount(measure: keyof Spend, amount: number): string {
  return measure === 'tokens' ? formatTokens(amount) : formatUsd(amount);
}

/** "of 200,000 tokens" or "of $20.00". */
function formatLimit(measure: keyof Spend, limit: number): string {
  return measure === 'tokens' ? `of ${formatTokens(limit)} tokens` : `of ${formatUsd(limit)}`;
}

/**
 * The first budget used up, checking session tokens, session cost, daily tokens, daily cost in turn.
 * A limit of 0 is unlimited. A budget is used up when usage has reached its limit, or when usage plus
 * a positive `projected` spend of the next request would reach it.
 */
export function checkBudgets(
  limits: BudgetLimits,
  usage: BudgetUsage,
  projected: Spend = { tokens: 0, costUsd: 0 },
): BudgetCheck {
  for (const { name, scope, measure, label } of BUDGETS) {
    const limit = limits[name];
    if (!(limit > 0)) continue;
    const used = usage[scope][measure];
    const next = projected[measure];
    let reason: string | undefined;
    if (used >= limit) {
      reason = `${label} reached: ${formatAmount(measure, used)} ${formatLimit(measure, limit)}`;
    } else if (next > 0 && used + next >= limit) {
      reason =
        `${label} would be exceeded by the next request: ` +
        `${formatAmount(measure, used)} + ${formatAmount(measure, next)} ${formatLimit(measure, limit)}`;
    }
    if (reason !== undefined)
      return { exceeded: true, budget: name, reason: reason.slice(0, REASON_MAX_CHARS) };
  }
  return { exceeded: false };
}

/**
 * Share of a daily limit from which a run reads the shared ledger itself before every model call.
 * Below it the figure its model turns bring back, which may miss what other workers charged in the
 * last moments, is close enough: the limit is still at least a tenth away.
 */
export const DAILY_EXACT_FROM_SHARE = 0.9;

/** Whether today's spend plus the next call's projection reaches {@link DAILY_EXACT_FROM_SHARE} of a daily limit. */
export function nearDailyLimit(limits: BudgetLimits, daily: Spend, projected: Spend): boolean {
  const near = (limit: number, used: number) => limit > 0 && used >= limit * DAILY_EXACT_FROM_SHARE;
  return (
    near(limits.dailyTokens, daily.tokens + projected.tokens) ||
    near(limits.dailyCostUsd, daily.costUsd + projected.costUsd)
  );
}

/** The key remembering one warning: `sessionTokens:0.8`, or with the day for daily budgets. */
function warningKey(name: BudgetName, daily: boolean, day: string, fraction: number): string {
  return daily ? `${name}:${day}:${fraction}` : `${name}:${fraction}`;
}

/**
 * Warnings due as usage crosses each fraction of {@link BUDGET_WARNING_FRACTIONS} of a limit, at most
 * one per budget and only once per fraction (per UTC `day` for daily budgets, so they warn again on
 * a new day). When usage jumps past several fractions at once, only the highest is announced; its
 * `keys` cover the lower ones too, so they never fire afterwards for a smaller figure.
 */
export function budgetWarnings(
  limits: BudgetLimits,
  usage: BudgetUsage,
  alreadyWarned: readonly string[],
  day: string,
): BudgetWarning[] {
  const warnings: BudgetWarning[] = [];
  for (const { name, scope, measure, label, daily } of BUDGETS) {
    const limit = limits[name];
    if (!(limit > 0)) continue;
    const used = usage[scope][measure];
    const crossed = BUDGET_WARNING_FRACTIONS.filter((fraction) => used >= fraction * limit);
    const highest = crossed.at(-1);
    if (highest === undefined) continue;
    const keys = crossed.map((fraction) => warningKey(name, daily, day, fraction));
    if (keys.every((key) => alreadyWarned.includes(key))) continue;
    const percent = Math.round(highest * 100);
    warnings.push({
      budget: name,
      fraction: highest,
      message: `${label} ${percent}% used: ${formatAmount(measure, used)} ${formatLimit(measure, limit)}`,
      keys,
    });
  }
  return warnings;
}

/**
 * The warning keys still worth remembering on `day`: session ones and today's daily ones. Keeps the
 * list that travels through continue-as-new from growing by a few keys every day.
 */
export function currentWarningKeys(alreadyWarned: readonly string[], day: string): string[] {
  const dailyNames = BUDGETS.filter((budget) => budget.daily).map((budget) => `${budget.name}:`);
  return alreadyWarned.filter((key) => {
    const dailyName = dailyNames.find((prefix) => key.startsWith(prefix));
    return dailyName === undefined || key.startsWith(`${dailyName}${day}:`);
  });
}

/**
 * The limits after a resume's overrides: each given value replaces the run's (0 lifts the limit).
 * Values that are not finite and non-negative are left out; the signal's schema already refuses them.
 */
export function applyBudgetOverrides(
  limits: BudgetLimits,
  overrides: Partial<BudgetLimits> | undefined,
): BudgetLimits {
  const next: BudgetLimits = { ...limits };
  if (overrides === undefined) return next;
  for (const { name } of BUDGETS) {
    const value = overrides[name];
    if (value !== undefined && Number.isFinite(value) && value >= 0) next[name] = value;
  }
  return next;
}

/** The UTC day of an instant: daily budgets reset at midnight UTC, when the ledger of a new day begins. */
export { utcDay } from '../common/daily-ledger';
