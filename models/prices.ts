import type { ModelPrice, ModelSpec, TokenUsage } from '../common/agent-input';

/**
 * List prices in dollars per million tokens, by model name prefix; the longest matching prefix
 * wins. A run overrides them with `model.price` (the CLI fills it from `$AGENTS_HOME/prices.json`
 * or `--price`), so the price a run was charged at is in its history.
 */
export const DEFAULT_PRICES: Readonly<Record<string, ModelPrice>> = {
  'gpt-4o': { inputUsdPerMTok: 2.5, outputUsdPerMTok: 10 },
  'gpt-4o-mini': { inputUsdPerMTok: 0.15, outputUsdPerMTok: 0.6 },
  'gpt-4.1': { inputUsdPerMTok: 2, outputUsdPerMTok: 8 },
  'gpt-4.1-mini': { inputUsdPerMTok: 0.4, outputUsdPerMTok: 1.6 },
  'gpt-4.1-nano': { inputUsdPerMTok: 0.1, outputUsdPerMTok: 0.4 },
  'gpt-5': { inputUsdPerMTok: 1.25, outputUsdPerMTok: 10 },
  'gpt-5-mini': { inputUsdPerMTok: 0.25, outputUsdPerMTok: 2 },
  'gpt-5-nano': { inputUsdPerMTok: 0.05, outputUsdPerMTok: 0.4 },
  o3: { inputUsdPerMTok: 2, outputUsdPerMTok: 8 },
  'o4-mini': { inputUsdPerMTok: 1.1, outputUsdPerMTok: 4.4 },
  'claude-opus-4': { inputUsdPerMTok: 15, outputUsdPerMTok: 75 },
  'claude-opus-4-5': { inputUsdPerMTok: 5, outputUsdPerMTok: 25 },
  'claude-sonnet-4': { inputUsdPerMTok: 3, outputUsdPerMTok: 15 },
  'claude-3-7-sonnet': { inputUsdPerMTok: 3, outputUsdPerMTok: 15 },
  'claude-3-5-haiku': { inputUsdPerMTok: 0.8, outputUsdPerMTok: 4 },
  'claude-haiku-4-5': { inputUsdPerMTok: 1, outputUsdPerMTok: 5 },
};

/**
 * The price of a model by the longest matching prefix of `table`, the vendor part of a router's
 * name ("anthropic/claude-sonnet-4") left out; undefined for a model the table does not know.
 */
export function lookupPrice(
  model: string,
  table: Readonly<Record<string, ModelPrice>>,
): ModelPrice | undefined {
  const name = model.slice(model.lastIndexOf('/') + 1);
  let best: string | undefined;
  for (const prefix of Object.keys(table)) {
    if (name.startsWith(prefix) && (best === undefined || prefix.length > best.length)) best = prefix;
  }
  return best === undefined ? undefined : table[best];
}

/** What a call cost: the run's own price for its model, else the table's, else nothing (local, scripted). */
export function costOf(spec: ModelSpec, usage: TokenUsage): number {
  if (spec.provider !== 'openai' && spec.provider !== 'anthropic') return 0;
  const price = spec.price ?? lookupPrice(spec.model, DEFAULT_PRICES);
  if (price === undefined) return 0;
  return (
    (usage.inputTokens * price.inputUsdPerMTok + usage.outputTokens * price.outputUsdPerMTok) / 1_000_000
  );
}
