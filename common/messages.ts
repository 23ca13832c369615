import { defineQuery, defineSignal } from '@temporalio/workflow';
import { z } from 'zod';
import type { AgentStatus, IterationRecord } from './agent-run-types';

/**
 * Every signal and query of `agentRun`, defined once for the workflow, the typed client and the CLI.
 * Signals rather than updates because the Web UI and `temporal workflow signal` must reach a run
 * even when no worker is up; each takes one JSON object, exactly what the Web UI's form sends.
 */

/** A permission request's ID: `pr_` and 16 hex digits, from the workflow's deterministic random. */
export const requestIdSchema = z
  .string()
  .regex(/^pr_[0-9a-f]{16}$/, 'must be "pr_" followed by 16 hex digits');

/**
 * Decides a pending permission request, or (with `extendS` and no `approve`) gives it more time.
 * `by` names who decided, for the audit; the signal's own identity is recorded too.
 */
export const permissionPayloadSchema = z
  .object({
    requestId: requestIdSchema,
    approve: z.boolean().optional(),
    note: z.string().max(2000).optional(),
    by: z.string().max(200).optional(),
    /** Seconds to add to the request's timeout. */
    extendS: z
      .number()
      .positive()
      .max(7 * 86_400)
      .optional(),
  })
  .strict()
  .refine((payload) => payload.approve !== undefined || payload.extendS !== undefined, {
    message: 'needs "approve": true|false, or "extendS": seconds to extend the timeout',
  });
export type PermissionPayload = z.infer<typeof permissionPayloadSchema>;

/** Lifts a budget pause, optionally with new budgets for this run. */
export const resumePayloadSchema = z
  .object({
    budgets: z
      .object({
        sessionTokens: z.number().int().nonnegative().optional(),
        sessionCostUsd: z.number().nonnegative().optional(),
        dailyTokens: z.number().int().nonnegative().optional(),
        dailyCostUsd: z.number().nonnegative().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();
export type ResumePayload = z.infer<typeof resumePayloadSchema>;

/** Ends the run after the current step; wakes it from the interval wait at once. */
export const stopPayloadSchema = z.object({ reason: z.string().max(500).optional() }).strict();
export type StopPayload = z.infer<typeof stopPayloadSchema>;

/** Arguments of the `iterations` query: a window of records by iteration number. */
export const iterationsQueryArgsSchema = z
  .object({
    from: z.number().int().positive().optional(),
    limit: z.number().int().positive().max(10_000).optional(),
  })
  .strict();
export type IterationsQueryArgs = z.infer<typeof iterationsQueryArgsSchema>;

export const permissionSignal = defineSignal<[PermissionPayload]>('permission');
export const resumeSignal = defineSignal<[ResumePayload]>('resume');
export const stopSignal = defineSignal<[StopPayload]>('stop');

export const statusQuery = defineQuery<AgentStatus>('status');
export const iterationsQuery = defineQuery<IterationRecord[], [IterationsQueryArgs?]>('iterations');
