/**
 * The panels of the durable-agents Grafana dashboard, defined once: `render-dashboard.ts` writes
 * them as Grafana's JSON model (docs/grafana-dashboard.json) and draws them from real scrapes
 * (docs/grafana-dashboard.png), so the picture shows exactly the queries the dashboard runs.
 */

/** One query of a panel, with Grafana's legend template (`{{label}}`). */
export interface PanelQuery {
  expr: string;
  legend: string;
}

/** A panel: a time series or a single figure (its last value), `width` of Grafana's 24 columns. */
export interface PanelSpec {
  title: string;
  description: string;
  type: 'timeseries' | 'stat';
  /** Grafana's unit id: `short`, `s`, `currencyUSD`, `bytes`, `percentunit`. */
  unit: string;
  width: number;
  queries: PanelQuery[];
}

/** A titled row of panels. */
export interface RowSpec {
  title: string;
  panels: PanelSpec[];
}

/** Height of every panel, in Grafana's grid units. */
const PANEL_HEIGHT = 8;

const rate = (metric: string) => `rate(${metric}[$__rate_interval])`;

export const DASHBOARD_ROWS: RowSpec[] = [
  {
    title: 'Runs',
    panels: [
      {
        title: 'Approvals pending',
        description: 'Tool calls waiting for a person (agents_approvals_pending, summed over workers)',
        type: 'stat',
        unit: 'short',
        width: 4,
        queries: [{ expr: 'sum(agents_approvals_pending)', legend: 'pending' }],
      },
      {
        title: 'Budget pauses (1 h)',
        description: 'Runs paused on a budget in the last hour',
        type: 'stat',
        unit: 'short',
        width: 4,
        queries: [{ expr: 'sum(increase(agents_budget_pauses_total[1h]))', legend: 'pauses' }],
      },
      {
        title: 'Iterations / min by status',
        description: 'Iterations recorded per minute: ok, error, permission (waited for a person)',
        type: 'timeseries',
        unit: 'short',
        width: 8,
        queries: [
          { expr: `sum by (status) (${rate('agents_iterations_total')}) * 60`, legend: '{{status}}' },
        ],
      },
      {
        title: 'Runs started and ended / min',
        description: 'Runs started, and runs ended by exit reason, per minute',
        type: 'timeseries',
        unit: 'short',
        width: 8,
        queries: [
          { expr: `sum(${rate('agents_runs_started_total')}) * 60`, legend: 'started' },
          {
            expr: `sum by (exit_reason) (${rate('agents_runs_stopped_total')}) * 60`,
            legend: 'ended: {{exit_reason}}',
          },
        ],
      },
    ],
  },
  {
    title: 'Models',
    panels: [
      {
        title: 'Tokens / min',
        description: 'Model tokens per minute by provider, model and type (input, output)',
        type: 'timeseries',
        unit: 'short',
        width: 8,
        queries: [
          {
            expr: `sum by (provider, model, type) (${rate('agents_model_tokens_total')}) * 60`,
            legend: '{{provider}}/{{model}} {{type}}',
          },
        ],
      },
      {
        title: 'Spend / hour',
        description: 'Model cost per hour, from the sum of the cost histogram',
        type: 'timeseries',
        unit: 'currencyUSD',
        width: 8,
        queries: [
          {
            expr: `sum by (provider, model) (${rate('agents_model_call_cost_usd_sum')}) * 3600`,
            legend: '{{provider}}/{{model}}',
          },
        ],
      },
      {
        title: 'Model calls / min by outcome',
        description: 'ok, failed, stopped (a stop mid-answer), circuit_open (refused by the breaker)',
        type: 'timeseries',
        unit: 'short',
        width: 8,
        queries: [
          {
            expr: `sum by (outcome) (${rate('agents_model_calls_total')}) * 60`,
            legend: '{{outcome}}',
          },
        ],
      },
      {
        title: 'Model call latency p95',
        description: '95th percentile of model call duration by provider and model',
        type: 'timeseries',
        unit: 's',
        width: 12,
        queries: [
          {
            expr: `histogram_quantile(0.95, sum by (le, provider, model) (${rate('agents_model_call_duration_seconds_bucket')}))`,
            legend: '{{provider}}/{{model}}',
          },
        ],
      },
      {
        title: 'Circuit breakers open',
        description: '1 while a worker’s breaker of a provider and model is open, as of its last call',
        type: 'timeseries',
        unit: 'short',
        width: 12,
        queries: [
          {
            expr: 'max by (provider, model) (agents_circuit_breaker_open)',
            legend: '{{provider}}/{{model}}',
          },
        ],
      },
    ],
  },
  {
    title: 'Tools',
    panels: [
      {
        title: 'Tool calls / min by tool and outcome',
        description: 'success, error (the result says it failed), lost (no result: the batch is retried)',
        type: 'timeseries',
        unit: 'short',
        width: 12,
        queries: [
          {
            expr: `sum by (tool, outcome) (${rate('agents_tool_calls_total')}) * 60`,
            legend: '{{tool}} {{outcome}}',
          },
        ],
      },
      {
        title: 'Tool call latency p50 / p95',
        description: 'From the batch to the result, as the worker sees it',
        type: 'timeseries',
        unit: 's',
        width: 12,
        queries: [
          {
            expr: `histogram_quantile(0.5, sum by (le) (${rate('agents_tool_call_duration_seconds_bucket')}))`,
            legend: 'p50',
          },
          {
            expr: `histogram_quantile(0.95, sum by (le) (${rate('agents_tool_call_duration_seconds_bucket')}))`,
            legend: 'p95',
          },
        ],
      },
    ],
  },
  {
    title: 'Sandbox servers',
    panels: [
      {
        title: 'Lanes in use',
        description: 'Lanes running a call, beside the lanes there are, and calls waiting for one',
        type: 'timeseries',
        unit: 'short',
        width: 8,
        queries: [
          { expr: 'sum(agents_sandbox_lanes_in_use)', legend: 'in use' },
          { expr: 'sum(agents_sandbox_lanes)', legend: 'lanes' },
          { expr: 'sum(agents_sandbox_queued_calls)', legend: 'queued' },
        ],
      },
      {
        title: 'Workspaces',
        description: 'Trajectory workspaces held, those of paused runs included',
        type: 'stat',
        unit: 'short',
        width: 4,
        queries: [{ expr: 'sum(agents_sandbox_workspaces)', legend: 'workspaces' }],
      },
      {
        title: 'Disk used',
        description: 'Bytes the workspaces take on disk (du, at most every 30 s)',
        type: 'stat',
        unit: 'bytes',
        width: 4,
        queries: [{ expr: 'sum(agents_sandbox_disk_used_bytes)', legend: 'disk' }],
      },
      {
        title: 'Sandbox call latency p95 by tool',
        description: 'From a call’s arrival on the server to its result, the wait for a lane included',
        type: 'timeseries',
        unit: 's',
        width: 8,
        queries: [
          {
            expr: `histogram_quantile(0.95, sum by (le, tool) (${rate('agents_sandbox_call_duration_seconds_bucket')}))`,
            legend: '{{tool}}',
          },
        ],
      },
    ],
  },
  {
    title: 'Temporal SDK',
    panels: [
      {
        title: 'Workflow task execution p95',
        description: 'The SDK’s own histogram (seconds): time the worker spends on a workflow task',
        type: 'timeseries',
        unit: 's',
        width: 8,
        queries: [
          {
            expr: `histogram_quantile(0.95, sum by (le) (${rate('temporal_workflow_task_execution_latency_bucket')}))`,
            legend: 'p95',
          },
        ],
      },
      {
        title: 'Activity execution p95 by type',
        description: 'The SDK’s activity execution latency, by activity type',
        type: 'timeseries',
        unit: 's',
        width: 8,
        queries: [
          {
            expr: `histogram_quantile(0.95, sum by (le, activity_type) (${rate('temporal_activity_execution_latency_bucket')}))`,
            legend: '{{activity_type}}',
          },
        ],
      },
      {
        title: 'Task slots available',
        description: 'Free slots of the worker, by kind of task',
        type: 'timeseries',
        unit: 'short',
        width: 8,
        queries: [
          {
            expr: 'sum by (worker_type) (temporal_worker_task_slots_available)',
            legend: '{{worker_type}}',
          },
        ],
      },
    ],
  },
];

/** The dashboard as Grafana's JSON model, its queries on a Prometheus data source chosen at import. */
export function grafanaDashboard(rows: RowSpec[] = DASHBOARD_ROWS): Record<string, unknown> {
  const datasource = { type: 'prometheus', uid: '${datasource}' };
  const panels: Array<Record<string, unknown>> = [];
  let id = 1;
  let y = 0;
  for (const row of rows) {
    panels.push({
      id: id++,
      type: 'row',
      title: row.title,
      collapsed: false,
      gridPos: { h: 1, w: 24, x: 0, y },
      panels: [],
    });
    y += 1;
    let x = 0;
    for (const panel of row.panels) {
      if (x + panel.width > 24) {
        x = 0;
        y += PANEL_HEIGHT;
      }
      panels.push({
        id: id++,
        type: panel.type,
        title: panel.title,
        description: panel.description,
        datasource,
        gridPos: { h: PANEL_HEIGHT, w: panel.width, x, y },
        targets: panel.queries.map((query, index) => ({
          refId: String.fromCharCode(65 + index),
          datasource,
          expr: query.expr,
          legendFormat: query.legend,
          range: panel.type === 'timeseries',
          instant: panel.type === 'stat',
        })),
        fieldConfig: { defaults: { unit: panel.unit, min: 0 }, overrides: [] },
        options:
          panel.type === 'stat'
            ? {
                reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
                colorMode: 'value',
                graphMode: 'area',
                textMode: 'value',
              }
            : {
                legend: { displayMode: 'list', placement: 'bottom', showLegend: true },
                tooltip: { mode: 'multi', sort: 'desc' },
              },
      });
      x += panel.width;
    }
    y += PANEL_HEIGHT;
  }
  return {
    title: 'durable-agents',
    uid: 'durable-agents',
    description:
      'Workers (agents_* and the Temporal SDK’s temporal_*) and sandbox servers (agents_sandbox_*)',
    tags: ['durable-agents', 'temporal'],
    editable: true,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    refresh: '30s',
    time: { from: 'now-1h', to: 'now' },
    timepicker: {},
    templating: {
      list: [
        {
          name: 'datasource',
          label: 'Prometheus',
          type: 'datasource',
          query: 'prometheus',
          current: {},
          hide: 0,
          refresh: 1,
          options: [],
        },
      ],
    },
    annotations: { list: [] },
    links: [],
    panels,
  };
}
