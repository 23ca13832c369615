import { readdir } from 'node:fs/promises';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ExecutionLanes } from './lanes';
import { isSandboxTool, type ToolResult } from './tool-call';
import { measureWorkspaceBytes } from './workspace-quota';

/** Bucket bounds (seconds) of the call latency histogram: from a file read to a long build. */
const CALL_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * The disk walk is taken again at most this often, and never more often than 10 × its own
 * duration, so scrapes of a large root cost the server little.
 */
const DISK_WALK_MIN_INTERVAL_MS = 30_000;

/** What the metrics read from the server at scrape time. */
export interface SandboxMetricsSource {
  lanes: ExecutionLanes;
  /** The folder holding one folder per trajectory. */
  trajectoriesDir: string;
}

/**
 * The sandbox server's Prometheus metrics, in a registry of its own (never prom-client's global
 * one, so two servers in one process, as in tests, keep their own figures): lanes in use and
 * calls waiting for one, workspaces and the disk they take, calls by tool and outcome with their
 * latency, and the process' own figures (CPU, memory, event loop lag) under `agents_sandbox_`.
 */
export class SandboxMetrics {
  readonly registry = new Registry();
  private readonly calls: Counter<'tool' | 'outcome'>;
  private readonly duration: Histogram<'tool' | 'outcome'>;
  private disk: { bytes: number; measuredAt: number; walkMs: number } | undefined;
  private walking: Promise<void> | undefined;

  constructor(private readonly source: SandboxMetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'agents_sandbox_' });
    new Gauge({
      name: 'agents_sandbox_lanes',
      help: 'Execution lanes: calls that may run at once',
      registers,
      collect() {
        this.set(source.lanes.size);
      },
    });
    new Gauge({
      name: 'agents_sandbox_lanes_in_use',
      help: 'Execution lanes running a call now',
      registers,
      collect() {
        this.set(source.lanes.executing);
      },
    });
    new Gauge({
      name: 'agents_sandbox_queued_calls',
      help: 'Calls waiting for a free lane',
      registers,
      collect() {
        this.set(source.lanes.queued);
      },
    });
    new Gauge({
      name: 'agents_sandbox_workspaces',
      help: 'Trajectory workspaces on this server, those of paused runs included',
      registers,
      async collect() {
        this.set((await readdir(source.trajectoriesDir)).length);
      },
    });
    const diskUsedBytes = () => this.diskUsedBytes();
    new Gauge({
      name: 'agents_sandbox_disk_used_bytes',
      help: `Bytes the workspaces take on disk (du), measured at most every ${DISK_WALK_MIN_INTERVAL_MS / 1000} s`,
      registers,
      async collect() {
        this.set(await diskUsedBytes());
      },
    });
    this.calls = new Counter({
      name: 'agents_sandbox_calls_total',
      help: 'Tool calls by tool and outcome (success, error, failed: no result)',
      labelNames: ['tool', 'outcome'],
      registers,
    });
    this.duration = new Histogram({
      name: 'agents_sandbox_call_duration_seconds',
      help: 'Time from a call’s arrival to its result, the wait for a lane included',
      labelNames: ['tool', 'outcome'],
      buckets: CALL_SECONDS_BUCKETS,
      registers,
    });
  }

  /** Records the call once `result` settles; returns `result` as it is. */
  measureCall(tool: string, result: Promise<ToolResult>): Promise<ToolResult> {
    const stop = this.duration.startTimer();
    // Tool names come from the worker; anything but the sandbox's own tools is one label value.
    const label = isSandboxTool(tool) ? tool : 'other';
    const record = (outcome: string) => {
      this.calls.inc({ tool: label, outcome });
      stop({ tool: label, outcome });
    };
    result.then(
      (settled) => record(settled.success ? 'success' : 'error'),
      () => record('failed'),
    );
    return result;
  }

  /** The metrics in Prometheus' text format, with its content type. */
  async render(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }

  /** The last disk walk's figure, walked again first when it is stale. */
  private async diskUsedBytes(): Promise<number> {
    const now = Date.now();
    const interval = Math.max(DISK_WALK_MIN_INTERVAL_MS, 10 * (this.disk?.walkMs ?? 0));
    if (this.disk === undefined || now - this.disk.measuredAt >= interval) {
      this.walking ??= this.walkDisk().finally(() => {
        this.walking = undefined;
      });
      // The first scrape waits for the walk; later ones answer with the last figure meanwhile.
      if (this.disk === undefined) await this.walking;
    }
    return this.disk?.bytes ?? 0;
  }

  private async walkDisk(): Promise<void> {
    const started = Date.now();
    try {
      const bytes = await measureWorkspaceBytes(this.source.trajectoriesDir);
      this.disk = { bytes, measuredAt: Date.now(), walkMs: Date.now() - started };
    } catch {
      // No figure this time: the last one stands, and the next scrape tries again.
    }
  }
}
