/**
 * The small part of PromQL the dashboard's panels use, evaluated over scrapes taken by the render
 * script: selectors with `=`, `!=`, `=~` matchers; `rate` and `increase` over a range; `sum`, `max`
 * and `min`, optionally `by (…)`; `histogram_quantile`; and `*` or `/` by a number. So the picture
 * is drawn from the very queries the Grafana dashboard runs, not from a copy of them. Grafana's
 * `$__rate_interval` stands for {@link RATE_INTERVAL_S}.
 */

/** One sample of a scrape. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A scrape: when it was taken (seconds) and what it held. */
export interface Scrape {
  at: number;
  samples: Sample[];
}

/** One series of a result: its labels and its value. */
export interface Point {
  labels: Record<string, string>;
  value: number;
}

/** What `$__rate_interval` is taken as: four scrape intervals of the render's 5 s, Grafana's rule. */
export const RATE_INTERVAL_S = 20;

/** Parses Prometheus' text format (no timestamps, as both exporters write it). */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match === null) throw new Error(`not a sample line: ${line}`);
    samples.push({ name: match[1]!, labels: parseLabels(match[2] ?? ''), value: Number(match[3]) });
  }
  return samples;
}

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [, key, value] of text.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
    labels[key!] = value!.replace(/\\(.)/g, '$1');
  return labels;
}

type Matcher = { label: string; operator: '=' | '!=' | '=~'; value: string };
type Node =
  | { kind: 'number'; value: number }
  | { kind: 'selector'; name: string; matchers: Matcher[]; rangeS?: number }
  | { kind: 'call'; name: 'rate' | 'increase'; argument: Node & { kind: 'selector' } }
  | { kind: 'quantile'; quantile: number; argument: Node }
  | { kind: 'aggregate'; name: 'sum' | 'max' | 'min'; by: string[] | undefined; argument: Node }
  | { kind: 'scale'; operator: '*' | '/'; left: Node; factor: number };

/** Parses an expression of the subset; anything else is an error naming where it stopped. */
export function parsePromql(expression: string): Node {
  const tokens =
    expression
      .replaceAll('$__rate_interval', `${RATE_INTERVAL_S}s`)
      .match(/\s*("(?:[^"\\]|\\.)*"|=~|!=|[a-zA-Z_:][a-zA-Z0-9_:]*|\d+(?:\.\d+)?[smh]?|[(){}[\],=*/])/g)
      ?.map((token) => token.trim()) ?? [];
  let position = 0;
  const peek = () => tokens[position];
  const take = (expected?: string) => {
    const token = tokens[position++];
    if (token === undefined || (expected !== undefined && token !== expected))
      throw new Error(`expected ${expected ?? 'more'} at token ${position} of ${expression}`);
    return token;
  };
  const parseExpression = (): Node => {
    let node = parseTerm();
    while (peek() === '*' || peek() === '/') {
      const operator = take() as '*' | '/';
      node = { kind: 'scale', operator, left: node, factor: Number(take()) };
    }
    return node;
  };
  const parseSelector = (name: string): Node & { kind: 'selector' } => {
    const matchers: Matcher[] = [];
    if (peek() === '{') {
      take('{');
      while (peek() !== '}') {
        const label = take();
        const operator = take() as Matcher['operator'];
        matchers.push({ label, operator, value: JSON.parse(take()) as string });
        if (peek() === ',') take(',');
      }
      take('}');
    }
    if (peek() !== '[') return { kind: 'selector', name, matchers };
    take('[');
    const range = take();
    take(']');
    const unit = range.at(-1)!;
    const factor = unit === 'm' ? 60 : unit === 'h' ? 3600 : 1;
    return { kind: 'selector', name, matchers, rangeS: Number.parseFloat(range) * factor };
  };
  const parseTerm = (): Node => {
    const token = take();
    if (/^\d/.test(token)) return { kind: 'number', value: Number(token) };
    if (token === '(') {
      const inner = parseExpression();
      take(')');
      return inner;
    }
    if (token === 'rate' || token === 'increase') {
      take('(');
      const argument = parseSelector(take());
      take(')');
      return { kind: 'call', name: token, argument };
    }
    if (token === 'histogram_quantile') {
      take('(');
      const quantile = Number(take());
      take(',');
      const argument = parseExpression();
      take(')');
      return { kind: 'quantile', quantile, argument };
    }
    if (token === 'sum' || token === 'max' || token === 'min') {
      let by: string[] | undefined;
      if (peek() === 'by') {
        take('by');
        take('(');
        by = [];
        while (peek() !== ')') {
          by.push(take());
          if (peek() === ',') take(',');
        }
        take(')');
      }
      take('(');
      const argument = parseExpression();
      take(')');
      return { kind: 'aggregate', name: token, by, argument };
    }
    return parseSelector(token);
  };
  const node = parseExpression();
  if (position !== tokens.length) throw new Error(`unexpected '${peek()}' in ${expression}`);
  return node;
}

function matches(sample: Sample, name: string, matchers: Matcher[]): boolean {
  if (sample.name !== name) return false;
  return matchers.every(({ label, operator, value }) => {
    const actual = sample.labels[label] ?? '';
    if (operator === '=') return actual === value;
    if (operator === '!=') return actual !== value;
    return new RegExp(`^(?:${value})$`).test(actual);
  });
}

const keyOf = (labels: Record<string, string>) =>
  JSON.stringify(Object.entries(labels).sort(([first], [second]) => first.localeCompare(second)));

/** The expression's value at scrape `index` of `scrapes`, as Prometheus would compute it there. */
export function evaluate(node: Node, scrapes: Scrape[], index: number): Point[] {
  const now = scrapes[index]!;
  switch (node.kind) {
    case 'number':
      return [{ labels: {}, value: node.value }];
    case 'selector':
      return now.samples
        .filter((sample) => matches(sample, node.name, node.matchers))
        .map(({ labels, value }) => ({ labels, value }));
    case 'call': {
      const rangeS = node.argument.rangeS ?? RATE_INTERVAL_S;
      // The earliest scrape within the range, or the first one while the range reaches before it.
      const start = scrapes.find((scrape) => scrape.at >= now.at - rangeS) ?? now;
      if (start === now) return [];
      const earlier = new Map(
        start.samples
          .filter((sample) => matches(sample, node.argument.name, node.argument.matchers))
          .map((sample) => [keyOf(sample.labels), sample.value]),
      );
      const elapsed = now.at - start.at;
      return now.samples
        .filter((sample) => matches(sample, node.argument.name, node.argument.matchers))
        .map(({ labels, value }) => {
          const before = earlier.get(keyOf(labels)) ?? 0;
          // A counter that went down was reset: all of its value is new.
          const delta = value >= before ? value - before : value;
          if (node.name === 'rate') return { labels, value: delta / elapsed };
          // Like Prometheus, no extrapolation past the first sample when the range begins before it.
          return { labels, value: start === scrapes[0] ? delta : (delta * rangeS) / elapsed };
        });
    }
    case 'aggregate': {
      const groups = new Map<string, Point>();
      for (const point of evaluate(node.argument, scrapes, index)) {
        const labels = Object.fromEntries(
          (node.by ?? []).flatMap((label) =>
            point.labels[label] === undefined ? [] : [[label, point.labels[label]]],
          ),
        );
        const key = keyOf(labels);
        const group = groups.get(key);
        if (group === undefined) groups.set(key, { labels, value: point.value });
        else if (node.name === 'sum') group.value += point.value;
        else if (node.name === 'max') group.value = Math.max(group.value, point.value);
        else group.value = Math.min(group.value, point.value);
      }
      return [...groups.values()];
    }
    case 'quantile':
      return histogramQuantile(node.quantile, evaluate(node.argument, scrapes, index));
    case 'scale':
      return evaluate(node.left, scrapes, index).map(({ labels, value }) => ({
        labels,
        value: node.operator === '*' ? value * node.factor : value / node.factor,
      }));
  }
}

/** Prometheus' `histogram_quantile`: linear interpolation inside the bucket the rank falls in. */
function histogramQuantile(quantile: number, buckets: Point[]): Point[] {
  const series = new Map<string, { labels: Record<string, string>; buckets: Array<[number, number]> }>();
  for (const { labels, value } of buckets) {
    const { le, ...rest } = labels;
    if (le === undefined) continue;
    const key = keyOf(rest);
    const entry = series.get(key) ?? { labels: rest, buckets: [] };
    entry.buckets.push([le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), value]);
    series.set(key, entry);
  }
  const result: Point[] = [];
  for (const { labels, buckets: bounds } of series.values()) {
    bounds.sort(([first], [second]) => first - second);
    const count = bounds.at(-1)?.[1] ?? 0;
    if (count <= 0) continue;
    const rank = quantile * count;
    let lowerBound = 0;
    let lowerCount = 0;
    for (const [bound, cumulative] of bounds) {
      if (cumulative >= rank) {
        const value =
          bound === Number.POSITIVE_INFINITY
            ? lowerBound
            : lowerBound + ((bound - lowerBound) * (rank - lowerCount)) / (cumulative - lowerCount || 1);
        result.push({ labels, value });
        break;
      }
      lowerBound = bound;
      lowerCount = cumulative;
    }
  }
  return result;
}
