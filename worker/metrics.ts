import type { TelemetryOptions } from '@temporalio/worker';
import { z } from 'zod';
import { AGENT_HISTOGRAM_BUCKETS } from '../activities/metrics';
import { describeZodError } from '../common/agent-input';
import { hostPortSchema } from '../common/host-port';

/**
 * Where a worker serves its Prometheus metrics: `AGENTS_METRICS=host:port`. The Temporal Runtime's
 * own exporter serves them (`GET /metrics`), the SDK's metrics and the agents' own (see
 * `activities/metrics.ts`) together, on one port. That exporter takes no token: bind it to loopback
 * or a network only Prometheus reaches.
 */
export interface MetricsAddress {
  host: string;
  port: number;
  /** `host:port` as the exporter binds it, IPv6 hosts in brackets. */
  bindAddress: string;
}

/** What `AGENTS_METRICS` accepts, for the message when it is wrong. */
export const METRICS_ADDRESS_FORMS = 'host:port, such as 127.0.0.1:9464, 0.0.0.0:9464 or [::1]:9464';

const metricsAddressSchema = hostPortSchema(METRICS_ADDRESS_FORMS).transform(
  ({ host, port, address }): MetricsAddress => ({ host, port, bindAddress: address }),
);

/**
 * Reads `AGENTS_METRICS` from the environment: undefined when it is unset or empty (no metrics are
 * served), the address when it parses, and otherwise the one line saying what is wrong.
 */
export function metricsAddressFromEnvironment(
  environment: NodeJS.ProcessEnv = process.env,
): { address: MetricsAddress | undefined } | { problem: string } {
  const value = environment.AGENTS_METRICS;
  if (value === undefined || value === '') return { address: undefined };
  const parsed = z.object({ AGENTS_METRICS: metricsAddressSchema }).safeParse({ AGENTS_METRICS: value });
  if (!parsed.success) return { problem: `Invalid environment: ${describeZodError(parsed.error)}` };
  return { address: parsed.data.AGENTS_METRICS };
}

/**
 * The Runtime's telemetry options that serve Prometheus metrics at `address`: durations of the
 * SDK's metrics in seconds (Prometheus' base unit), and the agents' histograms with buckets made
 * for them (the exporter's defaults are milliseconds').
 */
export function prometheusTelemetry(address: MetricsAddress): TelemetryOptions {
  return {
    metrics: {
      prometheus: {
        bindAddress: address.bindAddress,
        useSecondsForDurations: true,
        histogramBucketOverrides: AGENT_HISTOGRAM_BUCKETS,
      },
    },
  };
}
