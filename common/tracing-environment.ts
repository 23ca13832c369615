/**
 * Whether the environment asks for traces: an OTLP endpoint variable is set. The cheap test made
 * before anything of tracing loads, so a process that does not trace never loads OpenTelemetry's
 * SDK, and a CLI command never loads the worker's tracing module.
 */
export function tracingRequested(environment: Record<string, string | undefined>): boolean {
  return Boolean(environment.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || environment.OTEL_EXPORTER_OTLP_ENDPOINT);
}
