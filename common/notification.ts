import type { NotificationSinks } from './agent-input';
import type { IterationRecord, PendingPermission } from './agent-run-types';

/** What a notice is about; sinks and the audit export tell them apart by this. */
export const NOTIFICATION_KINDS = [
  'started',
  'iteration',
  'error',
  'warning',
  'auto_approved',
  'approval_needed',
  'decided',
  'paused',
  'resumed',
  'stopped',
] as const;
export type NotificationKind = (typeof NOTIFICATION_KINDS)[number];

/** How a permission request was decided. */
export interface PermissionDecision {
  requestId: string;
  tool: string;
  approved: boolean;
  /** `signal`: a person's `permission` signal; `rule`: the policy; `timeout`: nobody answered in time. */
  via: 'signal' | 'rule' | 'auto-approve' | 'timeout';
  by?: string;
  note?: string;
  rule?: string;
}

/**
 * One notice of a run, sent by the workflow through the `notify` activity. Every notice is an
 * activity input, so the history keeps it for the audit whichever sinks are on.
 */
export interface AgentNotification {
  /** `<runKey>:<sequence>`: the same on a retry, so a sink can deliver it once. */
  id: string;
  agent: string;
  /** The run's key across continue-as-new (workflow ID and first run ID). */
  runKey: string;
  kind: NotificationKind;
  /** The notice as a person reads it: what the console and the webhook show. */
  text: string;
  /** Workflow time, ISO 8601. */
  at: string;
  iteration: number;
  /** The iteration's record, on `iteration` and `error` notices. */
  record?: IterationRecord;
  /** The request, on `approval_needed` notices. */
  request?: PendingPermission;
  /** The decision, on `decided` notices of a person's decision or a timeout. */
  decision?: PermissionDecision;
  /**
   * The policy's decisions on a whole batch of tool calls, on the one `auto_approved` notice and
   * the one `decided` notice (rules) a batch sends: one notice per batch, not per call. Runs
   * recorded before that carry one `decision` per call instead.
   */
  decisions?: PermissionDecision[];
  sinks: NotificationSinks;
}
