/**
 * Writes docs/grafana-dashboard.json and draws docs/grafana-dashboard.png from real scrapes.
 *
 *   node --import tsx bench/dashboard/render-dashboard.ts [--seconds 150]
 *
 * Starts what a deployment runs, on loopback: a Temporal dev server, a sandbox server, and
 * `agents worker` with `AGENTS_METRICS`; drives a few scripted agents through tool calls,
 * approvals, a budget pause, a failing model call, and an OpenAI-compatible API served here that
 * answers 503 for a while, so the worker's circuit breaker opens; scrapes the worker
 * and the sandbox server every 5 s, as Prometheus would; then evaluates each panel's PromQL over
 * those scrapes (`promql-subset.ts`) and draws the panels as SVG in a page that headless Chromium
 * photographs. Needs the `temporal` CLI and bubblewrap, as the tests do, and Chromium
 * (`CHROMIUM_PATH` or /usr/bin/chromium).
 */
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import * as prettier from 'prettier';
import { request } from 'undici';
import { AgentsClient } from '../../client/agents-client';
import type { ScriptedTurn } from '../../common/agent-input';
import { findChromium, launchChromium } from '../../test/helpers/browser';
import { startCli } from '../../test/helpers/cli';
import { startTestSandbox, TEST_SANDBOX_TOKEN } from '../../test/helpers/environment';
import { ModelApiServer, openaiModelOf, openaiStream } from '../../test/helpers/model-api-server';
import { scriptedRun, uniqueName } from '../../test/helpers/run-input';
import { freePort, startTestTemporal } from '../../test/helpers/temporal-server';
import { DASHBOARD_ROWS, grafanaDashboard, type PanelSpec } from './panels';
import { evaluate, parseExposition, parsePromql, type Sample, type Scrape } from './promql-subset';

const DOCS = path.resolve(__dirname, '..', '..', 'docs');
const SCRAPE_EVERY_MS = 5_000;

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '150' } } });
  const seconds = Number(values.seconds);
  if (!Number.isFinite(seconds) || seconds < 30) throw new Error('--seconds must be a number ≥ 30');
  const chromium = findChromium();
  if (chromium === undefined) throw new Error('no Chromium found: set CHROMIUM_PATH');

  // In the repository's own style, so `prettier --check .` passes on the written file.
  const dashboardFile = path.join(DOCS, 'grafana-dashboard.json');
  const style = await prettier.resolveConfig(dashboardFile);
  await writeFile(
    dashboardFile,
    await prettier.format(JSON.stringify(grafanaDashboard()), { ...style, filepath: dashboardFile }),
  );
  const scrapes = await collectScrapes(seconds);
  const html = renderPage(scrapes);
  const browser = await launchChromium(chromium);
  try {
    const page = await browser.newPage({ viewport: { width: PAGE_WIDTH, height: 900 } });
    await page.setContent(html);
    await page.screenshot({ path: path.join(DOCS, 'grafana-dashboard.png'), fullPage: true });
  } finally {
    await browser.close();
  }
  console.log(
    `Wrote docs/grafana-dashboard.json and docs/grafana-dashboard.png from ${scrapes.length} scrapes`,
  );
}

/** Runs the stack and its agents for `seconds`, scraping both endpoints every 5 s. */
async function collectScrapes(seconds: number): Promise<Scrape[]> {
  const temporal = await startTestTemporal();
  const sandbox = await startTestSandbox();
  const metricsPort = await freePort();
  const api = await ModelApiServer.start();
  let worker: ChildProcess | undefined;
  const agents = new AgentsClient(temporal.client);
  const names: string[] = [];
  try {
    worker = await startCli(
      ['worker'],
      {
        ...temporal.environment,
        AGENTS_SANDBOX_URLS: sandbox.endpoint.url,
        AGENTS_SANDBOX_TOKEN: TEST_SANDBOX_TOKEN,
        AGENTS_METRICS: `127.0.0.1:${metricsPort}`,
        RENDER_MODEL_API_KEY: 'render-key',
      },
      /Worker polling task queue/,
    );
    const scrapeBoth = async (): Promise<Scrape> => {
      const [workerSamples, sandboxSamples] = await Promise.all([
        scrapeText(`http://127.0.0.1:${metricsPort}/metrics`),
        scrapeText(`${sandbox.endpoint.url}/metrics`, TEST_SANDBOX_TOKEN),
      ]);
      return { at: Date.now() / 1000, samples: [...workerSamples, ...sandboxSamples] };
    };
    const scrapes = [await scrapeBoth()];
    const start = async (prefix: string, turns: Array<Partial<ScriptedTurn>>, overrides = {}) => {
      const name = uniqueName(prefix);
      names.push(name);
      await agents.start(scriptedRun(name, turns, { intervalS: 3, ...overrides }));
      return name;
    };
    const toolTurn = (command: string, tokens: number): Partial<ScriptedTurn> => ({
      toolCalls: [
        { tool: 'bash', arguments: { command } },
        { tool: 'read_file', arguments: { path: 'notes.txt' } },
      ],
      usage: { inputTokens: tokens, outputTokens: Math.round(tokens / 8) },
      costUsd: tokens * 0.000003,
    });
    const writeTurn: Partial<ScriptedTurn> = {
      toolCalls: [{ tool: 'write_file', arguments: { path: 'notes.txt', content: 'step done\n' } }],
      usage: { inputTokens: 1800, outputTokens: 240 },
      costUsd: 0.0062,
    };
    const done: Partial<ScriptedTurn> = {
      text: 'done',
      usage: { inputTokens: 2100, outputTokens: 90 },
      costUsd: 0.0066,
    };
    const asking = { permissions: { mode: 'auto-approve', rules: [{ action: 'ask', match: 'write_file' }] } };
    for (let index = 0; index < 4; index += 1)
      await start('builder', [toolTurn(`sleep 0.${index + 2}; ls -la`, 1200 + 300 * index), writeTurn, done]);
    for (let index = 0; index < 2; index += 1)
      await start('reviewer', [toolTurn('git --version || true', 1500), writeTurn, done], asking);
    const paused = await start('spender', [toolTurn('du -sh .', 2500), done], {
      budgets: { sessionTokens: 6000 },
    });
    await start('flaky', [
      { error: 'upstream answered 503', failAttempts: 1, usage: { inputTokens: 900, outputTokens: 50 } },
      done,
    ]);
    // Two runs on an OpenAI-compatible API served here, which answers 503 for a while: its calls
    // fail, are retried, and open the worker's circuit breaker for that model.
    const started = Date.now();
    const outage = { from: seconds * 250, to: seconds * 450 };
    api.replyAlways(() => {
      const elapsed = Date.now() - started;
      if (elapsed > outage.from && elapsed < outage.to) return { status: 503, body: { error: 'overloaded' } };
      return {
        events: openaiStream({
          textPieces: ['Checked ', 'the queue.'],
          usage: { inputTokens: 2600, outputTokens: 180 },
        }),
      };
    });
    for (let index = 0; index < 2; index += 1) {
      const name = uniqueName('triage');
      names.push(name);
      const model = openaiModelOf(api, 'RENDER_MODEL_API_KEY', {
        model: 'gpt-4o-mini',
        price: { inputUsdPerMTok: 0.15, outputUsdPerMTok: 0.6 },
      });
      await agents.start({ ...scriptedRun(name, [done], { intervalS: 2 }), model });
    }

    let resumed = false;
    while (Date.now() - started < seconds * 1000) {
      await sleep(SCRAPE_EVERY_MS);
      scrapes.push(await scrapeBoth());
      // A person answers each request once it has waited a little, and lifts the pause halfway.
      for (const { name, request: pending } of await agents.pending()) {
        if (Date.now() - Date.parse(pending.requestedAt) > 8_000)
          await agents.decide(name, { requestId: pending.requestId, approve: true, by: 'operator' });
      }
      if (!resumed && Date.now() - started > (seconds * 1000) / 2) {
        resumed = true;
        await agents.resume(paused, { budgets: { sessionTokens: 1_000_000 } }).catch(() => undefined);
      }
    }
    for (const name of names) await agents.stop(name).catch(() => false);
    return scrapes;
  } finally {
    if (worker !== undefined && worker.exitCode === null) {
      worker.kill('SIGTERM');
      await once(worker, 'exit');
    }
    await sandbox.server.close();
    await api.close();
    await rm(sandbox.root, { recursive: true, force: true });
    await temporal.close();
  }
}

async function scrapeText(url: string, token?: string): Promise<Sample[]> {
  const response = await request(url, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  const text = await response.body.text();
  if (response.statusCode !== 200) throw new Error(`${url} answered ${response.statusCode}: ${text}`);
  return parseExposition(text);
}

/** One drawn series: its legend and its values over the scrapes (NaN where it had none). */
interface Series {
  legend: string;
  values: number[];
}

/** Each query of a panel over every scrape, one series per legend. */
function seriesOf(panel: PanelSpec, scrapes: Scrape[]): Series[] {
  const series = new Map<string, Series>();
  for (const query of panel.queries) {
    const node = parsePromql(query.expr);
    scrapes.forEach((_scrape, index) => {
      for (const point of evaluate(node, scrapes, index)) {
        const legend = query.legend.replace(
          /\{\{(\w+)\}\}/g,
          (_match, label: string) => point.labels[label] ?? '',
        );
        const entry = series.get(legend) ?? { legend, values: scrapes.map(() => Number.NaN) };
        entry.values[index] = point.value;
        series.set(legend, entry);
      }
    });
  }
  return [...series.values()].sort((first, second) => first.legend.localeCompare(second.legend));
}

const PAGE_WIDTH = 1800;
const COLUMN = (PAGE_WIDTH - 32) / 24;
const PALETTE = [
  '#73BF69',
  '#F2CC0C',
  '#8AB8FF',
  '#FF780A',
  '#F2495C',
  '#5794F2',
  '#B877D9',
  '#FADE2A',
  '#37872D',
  '#C4162A',
];

/** A value in a panel's unit, short. */
function formatValue(value: number, unit: string): string {
  if (!Number.isFinite(value)) return '–';
  if (unit === 'currencyUSD') return `$${value < 1 ? value.toFixed(3) : value.toFixed(2)}`;
  if (unit === 's')
    return value < 1 ? `${(value * 1000).toFixed(value < 0.01 ? 1 : 0)} ms` : `${value.toFixed(2)} s`;
  if (unit === 'bytes') {
    const units = ['B', 'KiB', 'MiB', 'GiB'];
    let scaled = value;
    let index = 0;
    while (scaled >= 1024 && index < units.length - 1) {
      scaled /= 1024;
      index += 1;
    }
    return `${scaled.toFixed(index === 0 ? 0 : 1)} ${units[index]}`;
  }
  if (Math.abs(value) >= 1000) return `${(value / 1000).toFixed(1)} K`;
  return Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 2 : 1);
}

const escape = (text: string) =>
  text.replace(
    /[&<>"]/g,
    (character) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[character]!,
  );

function timeLabel(at: number): string {
  return new Date(at * 1000).toISOString().slice(11, 19);
}

/** A time series panel as SVG: grid, axes in the panel's unit, one line per series, and a legend. */
function timeseriesSvg(panel: PanelSpec, series: Series[], scrapes: Scrape[], width: number): string {
  const height = 190;
  const left = 64;
  const right = 12;
  const top = 10;
  const bottom = 22;
  const finite = series.flatMap((entry) => entry.values.filter(Number.isFinite));
  const max = niceCeiling(Math.max(0, ...finite));
  const x = (index: number) => left + ((width - left - right) * index) / Math.max(1, scrapes.length - 1);
  const y = (value: number) => top + (height - top - bottom) * (1 - value / max);
  const grid = [0, 0.25, 0.5, 0.75, 1].map((fraction) => {
    const value = max * fraction;
    return `<line x1="${left}" x2="${width - right}" y1="${y(value)}" y2="${y(value)}" stroke="#2c3235"/>
      <text x="${left - 6}" y="${y(value) + 4}" fill="#8e8e8e" font-size="11" text-anchor="end">${escape(formatValue(value, panel.unit))}</text>`;
  });
  const ticks = [0, 0.33, 0.66, 1].map((fraction) => {
    const index = Math.round(fraction * (scrapes.length - 1));
    const anchor = fraction === 0 ? 'start' : fraction === 1 ? 'end' : 'middle';
    return `<text x="${x(index)}" y="${height - 6}" fill="#8e8e8e" font-size="11" text-anchor="${anchor}">${timeLabel(scrapes[index]!.at)}</text>`;
  });
  const lines = series.map((entry, seriesIndex) => {
    const segments: string[] = [];
    let current: string[] = [];
    entry.values.forEach((value, index) => {
      if (Number.isFinite(value)) current.push(`${x(index).toFixed(1)},${y(value).toFixed(1)}`);
      else if (current.length > 0) {
        segments.push(current.join(' '));
        current = [];
      }
    });
    if (current.length > 0) segments.push(current.join(' '));
    const color = PALETTE[seriesIndex % PALETTE.length];
    return segments
      .map((points) =>
        points.includes(' ')
          ? `<polyline points="${points}" fill="none" stroke="${color}" stroke-width="2"/>`
          : `<circle cx="${points.split(',')[0]}" cy="${points.split(',')[1]}" r="2.5" fill="${color}"/>`,
      )
      .join('');
  });
  const legend = series
    .map((entry, seriesIndex) => {
      const last = [...entry.values].reverse().find(Number.isFinite) ?? Number.NaN;
      return `<span class="legend"><i style="background:${PALETTE[seriesIndex % PALETTE.length]}"></i>${escape(entry.legend)} <b>${escape(formatValue(last, panel.unit))}</b></span>`;
    })
    .join('');
  const empty =
    series.length === 0
      ? `<text x="${width / 2}" y="${height / 2}" fill="#8e8e8e" text-anchor="middle">No data</text>`
      : '';
  return `<svg width="${width}" height="${height}">${grid.join('')}${ticks.join('')}${lines.join('')}${empty}</svg><div class="legends">${legend}</div>`;
}

/** A stat panel: the last value, large, over a faint sparkline of the first series. */
function statHtml(panel: PanelSpec, series: Series[], width: number): string {
  const first = series[0];
  const last =
    first === undefined ? Number.NaN : ([...first.values].reverse().find(Number.isFinite) ?? Number.NaN);
  const values = first?.values.map((value) => (Number.isFinite(value) ? value : 0)) ?? [];
  const max = Math.max(1e-9, ...values);
  const points = values
    .map(
      (value, index) =>
        `${((width * index) / Math.max(1, values.length - 1)).toFixed(1)},${(200 - (value / max) * 90).toFixed(1)}`,
    )
    .join(' ');
  const sparkline =
    values.length > 1
      ? `<polyline points="0,200 ${points} ${width},200" fill="rgba(115,191,105,0.15)" stroke="#73BF69" stroke-width="1.5"/>`
      : '';
  return `<svg width="${width}" height="210"><text x="${width / 2}" y="105" fill="#73BF69" font-size="52" font-weight="500" text-anchor="middle">${escape(formatValue(last, panel.unit))}</text>${sparkline}</svg>`;
}

/** Rounds up to 1, 2, 2.5 or 5 times a power of ten, for an axis' top. */
function niceCeiling(value: number): number {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return ([1, 2, 2.5, 5, 10].find((step) => step * power >= value) ?? 10) * power;
}

/** The whole dashboard as a page in Grafana's dark colours. */
function renderPage(scrapes: Scrape[]): string {
  const rows = DASHBOARD_ROWS.map((row) => {
    const panels = row.panels.map((panel) => {
      const width = Math.round(COLUMN * panel.width - 8);
      const inner = width - 20;
      const series = seriesOf(panel, scrapes);
      const body =
        panel.type === 'stat' ? statHtml(panel, series, inner) : timeseriesSvg(panel, series, scrapes, inner);
      return `<section class="panel" style="grid-column: span ${panel.width}"><h3>${escape(panel.title)}</h3>${body}</section>`;
    });
    return `<h2>${escape(row.title)}</h2><div class="grid">${panels.join('')}</div>`;
  });
  const span = `${timeLabel(scrapes[0]!.at)} – ${timeLabel(scrapes.at(-1)!.at)} UTC, ${scrapes.length} scrapes every ${SCRAPE_EVERY_MS / 1000} s`;
  return `<!doctype html><html><head><meta charset="utf-8"><style>
    body { margin: 0; padding: 12px 16px 16px; background: #111217; color: #ccccdc; font-family: Inter, Helvetica, Arial, sans-serif; width: ${PAGE_WIDTH - 32}px; }
    header { display: flex; justify-content: space-between; align-items: baseline; }
    h1 { font-size: 20px; font-weight: 500; margin: 4px 0 8px; }
    header span { color: #8e8e8e; font-size: 13px; }
    h2 { font-size: 15px; font-weight: 500; margin: 14px 0 6px; }
    .grid { display: grid; grid-template-columns: repeat(24, 1fr); gap: 8px; }
    .panel { background: #181b1f; border: 1px solid #2c3235; border-radius: 2px; padding: 6px 10px 8px; }
    .panel h3 { font-size: 13px; font-weight: 500; margin: 0 0 6px; }
    .legends { font-size: 11px; margin-top: 2px; line-height: 1.6; }
    .legend { margin-right: 12px; white-space: nowrap; }
    .legend i { display: inline-block; width: 12px; height: 3px; margin: 0 5px 3px 0; vertical-align: middle; }
    .legend b { font-weight: 500; color: #ffffff; }
  </style></head><body><header><h1>durable-agents</h1><span>${escape(span)}</span></header>${rows.join('')}</body></html>`;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
