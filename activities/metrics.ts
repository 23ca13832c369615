import {
  ApplicationFailure,
  type MetricCounter,
  type MetricGauge,
  type MetricHistogram,
  type MetricMeter,
} from '@temporalio/common';
import type { ModelSpec } from '../common/agent-input';
import { EXIT_REASONS, type ModelUsage } from '../common/agent-run-types';
import { CIRCUIT_OPEN_FAILURE } from '../common/constants';
import type { AgentNotification } from '../common/notification';
import { ModelTurnStopped, type ModelResponse } from '../models/model-provider';
import { MCP_TOOL_PREFIX, parseMcpToolName } from '../common/mcp-servers';
import type { ToolResult } from '../sandbox/tool-call';

/**
 * The agents' own metrics, recorded by the activities: model turns, tool calls, and what the run's
 * notices tell (iterations, approvals, budget pauses). Counted in activities, never in workflow
 * code, which must stay deterministic and replays its history. Exported through the Temporal
 * Runtime's meter, so with `AGENTS_METRICS` set they come out of the same Prometheus endpoint as
 * the SDK's own metrics; without it the meter is a no-op and recording costs nothing.
 */
export interface AgentMetrics {
  /** One model call that answered, failed, was stopped or was refused by its breaker. */
  modelCall(call: ModelCallMetric): void;
  /** One tool call of a batch, with its outcome and how long it took. */
  toolCall(call: ToolCallMetric): void;
  /** One notice of a run, as delivered; a notice ID already seen is not counted again. */
  notice(notification: AgentNotification): void;
}

/** What a model call records. */
export interface ModelCallMetric {
  model: ModelSpec;
  outcome: 'ok' | 'failed' | 'stopped' | 'circuit_open';
  seconds: number;
  /** Tokens the provider counted, or estimated for a stopped call; none for a failure. */
  usage?: ModelUsage;
  costUsd?: number;
  /** Whether the worker's circuit breaker of the call's provider and model is open after it. */
  breakerOpen: boolean;
}

/** What a tool call records: `lost` when no result came back (the batch failed and is retried). */
export interface ToolCallMetric {
  tool: string;
  outcome: 'success' | 'error' | 'lost';
  seconds: number;
}

/** Metrics that record nothing: for tests, and for code that runs outside a worker. */
export const noopAgentMetrics: AgentMetrics = {
  modelCall: () => {},
  toolCall: () => {},
  notice: () => {},
};

/** Histogram names and their bucket bounds, for the Runtime's exporter (its defaults suit milliseconds). */
export const AGENT_HISTOGRAM_BUCKETS: Record<string, number[]> = {
  agents_model_call_duration_seconds: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
  agents_model_call_cost_usd: [0.0001, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
  agents_tool_call_duration_seconds: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
};

/** How many notice IDs are remembered to count a retried delivery once. */
const SEEN_NOTICES = 10_000;

/** Budget names a `paused` notice's resume hint may name. */
const BUDGET_NAMES = ['sessionTokens', 'sessionCostUsd', 'dailyTokens', 'dailyCostUsd'];

/**
 * The metrics on a Temporal `MetricMeter`: the Runtime's, created once per worker, not the
 * activity context's, whose `activity_type` tag would split one count (an iteration notice is
 * delivered by `notify` or by `modelTurn`) over two series. The meter is asked for on first use, so
 * building the worker's dependencies never installs a Runtime before the CLI has.
 */
export function createAgentMetrics(meter: () => MetricMeter): AgentMetrics {
  let instruments: ReturnType<typeof createInstruments> | undefined;
  const get = () => (instruments ??= createInstruments(meter()));
  const seen = new Set<string>();
  /** Requests whose `approval_needed` notice this worker delivered, by request ID → run key. */
  const pending = new Map<string, string>();
  return {
    modelCall(call) {
      const { models } = get();
      const tags = { provider: call.model.provider, model: modelName(call.model) };
      models.calls.add(1, { ...tags, outcome: call.outcome });
      models.duration.record(call.seconds, { ...tags, outcome: call.outcome });
      if (call.usage !== undefined) {
        models.tokens.add(call.usage.inputTokens, { ...tags, type: 'input' });
        models.tokens.add(call.usage.outputTokens, { ...tags, type: 'output' });
      }
      if (call.costUsd !== undefined) models.cost.record(call.costUsd, tags);
      models.breakerOpen.set(call.breakerOpen ? 1 : 0, tags);
    },
    toolCall(call) {
      const { tools } = get();
      tools.calls.add(1, { tool: call.tool, outcome: call.outcome });
      tools.duration.record(call.seconds, { tool: call.tool, outcome: call.outcome });
    },
    notice(notification) {
      if (seen.has(notification.id)) return;
      seen.add(notification.id);
      if (seen.size > SEEN_NOTICES) seen.delete(seen.values().next().value!);
      const { runs } = get();
      switch (notification.kind) {
        case 'started':
          runs.started.add(1);
          break;
        case 'stopped': {
          // "Stopped after 3 iterations (finished)…": the exit reason is in the text only.
          const reason = /\((\w+)\)/.exec(notification.text)?.[1] ?? '';
          runs.stopped.add(1, {
            exit_reason: (EXIT_REASONS as readonly string[]).includes(reason) ? reason : 'unknown',
          });
          // A stop ends the run's waits: its requests get no decision notice.
          for (const [requestId, runKey] of pending)
            if (runKey === notification.runKey) pending.delete(requestId);
          runs.approvalsPending.set(pending.size);
          break;
        }
        case 'iteration':
        case 'error':
          runs.iterations.add(1, { status: notification.record?.status ?? notification.kind });
          break;
        case 'approval_needed':
          if (notification.request !== undefined) {
            pending.set(notification.request.requestId, notification.runKey);
            runs.approvalRequests.add(1, { tool: notification.request.tool });
          }
          runs.approvalsPending.set(pending.size);
          break;
        case 'auto_approved':
        case 'decided':
          for (const decision of notification.decisions ?? [notification.decision]) {
            if (decision === undefined) continue;
            runs.decisions.add(1, { via: decision.via, approved: decision.approved });
            pending.delete(decision.requestId);
          }
          runs.approvalsPending.set(pending.size);
          break;
        case 'paused': {
          // The resume hint names the budget: {"budgets": {"dailyCostUsd": …}}.
          const budget = /"budgets": \{"(\w+)"/.exec(notification.text)?.[1] ?? '';
          runs.budgetPauses.add(1, { budget: BUDGET_NAMES.includes(budget) ? budget : 'unknown' });
          break;
        }
        default:
          break;
      }
    },
  };
}

function createInstruments(meter: MetricMeter) {
  const counter = (name: string, description: string): MetricCounter =>
    meter.createCounter(name, '', description);
  const histogram = (name: string, unit: string, description: string): MetricHistogram =>
    meter.createHistogram(name, 'float', unit, description);
  const gauge = (name: string, description: string): MetricGauge =>
    meter.createGauge(name, 'int', '', description);
  return {
    models: {
      calls: counter('agents_model_calls_total', 'Model calls by provider, model and outcome'),
      duration: histogram('agents_model_call_duration_seconds', 's', 'Duration of model calls'),
      tokens: counter(
        'agents_model_tokens_total',
        'Model tokens by provider, model and type (input, output)',
      ),
      cost: histogram('agents_model_call_cost_usd', 'USD', 'Cost of model calls; _sum is the spend'),
      breakerOpen: gauge(
        'agents_circuit_breaker_open',
        "1 while the worker's circuit breaker of a provider and model is open, as of its last call",
      ),
    },
    tools: {
      calls: counter('agents_tool_calls_total', 'Tool calls by tool and outcome (success, error, lost)'),
      duration: histogram(
        'agents_tool_call_duration_seconds',
        's',
        'Duration of tool calls, queueing included',
      ),
    },
    runs: {
      started: counter('agents_runs_started_total', 'Runs started'),
      stopped: counter('agents_runs_stopped_total', 'Runs ended, by exit reason'),
      iterations: counter(
        'agents_iterations_total',
        'Iterations recorded, by status (ok, error, permission)',
      ),
      approvalRequests: counter(
        'agents_approval_requests_total',
        'Tool calls that waited for a person, by tool',
      ),
      decisions: counter(
        'agents_permission_decisions_total',
        'Permission decisions by way (rule, auto-approve, signal, timeout) and verdict',
      ),
      approvalsPending: gauge(
        'agents_approvals_pending',
        'Approval requests waiting for a person, of those whose notices this worker delivered',
      ),
      budgetPauses: counter('agents_budget_pauses_total', 'Runs paused on a budget, by budget'),
    },
  };
}

/** The model's name for its label: scripted runs have none. */
function modelName(spec: ModelSpec): string {
  return spec.provider === 'scripted' ? 'scripted' : spec.model;
}

/**
 * Runs one model call and records it: its outcome, duration, tokens and cost, and its breaker's
 * state afterwards (`breakerOpen` is read once the call settled).
 */
export async function measureModelCall(
  metrics: AgentMetrics | undefined,
  model: ModelSpec,
  breakerOpen: () => boolean,
  call: () => Promise<ModelResponse>,
): Promise<ModelResponse> {
  const started = performance.now();
  const seconds = () => (performance.now() - started) / 1000;
  try {
    const response = await call();
    metrics?.modelCall({
      model,
      outcome: 'ok',
      seconds: seconds(),
      usage: response.usage,
      costUsd: response.costUsd,
      breakerOpen: breakerOpen(),
    });
    return response;
  } catch (error) {
    const stopped = error instanceof ModelTurnStopped;
    const refused = error instanceof ApplicationFailure && error.type === CIRCUIT_OPEN_FAILURE;
    metrics?.modelCall({
      model,
      outcome: stopped ? 'stopped' : refused ? 'circuit_open' : 'failed',
      seconds: seconds(),
      ...(stopped ? { usage: error.usage, costUsd: error.costUsd } : {}),
      breakerOpen: breakerOpen(),
    });
    throw error;
  }
}

/**
 * A tool's label: its name, but `mcp__<server>` for an MCP server's tools, so the servers a run
 * names (up to 256 tools each) cannot multiply the series.
 */
function toolLabel(tool: string): string {
  const named = parseMcpToolName(tool);
  return named === undefined ? tool : `${MCP_TOOL_PREFIX}${named.server}`;
}

/**
 * Waits for the calls of a tool batch, just started, and records each as it settles: `success` or
 * `error` by its result, `lost` when it threw (no result came back); its duration counts from now.
 */
export async function measureToolCalls(
  metrics: AgentMetrics | undefined,
  calls: ReadonlyArray<{ call: { tool: string } }>,
  pending: Array<Promise<ToolResult>>,
): Promise<ToolResult[]> {
  if (metrics === undefined) return Promise.all(pending);
  const started = performance.now();
  return Promise.all(
    pending.map(async (result, index) => {
      const record = (outcome: ToolCallMetric['outcome']) =>
        metrics.toolCall({
          tool: toolLabel(calls[index]!.call.tool),
          outcome,
          seconds: (performance.now() - started) / 1000,
        });
      try {
        const settled = await result;
        record(settled.success ? 'success' : 'error');
        return settled;
      } catch (error) {
        record('lost');
        throw error;
      }
    }),
  );
}
