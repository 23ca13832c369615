import * as wf from '@temporalio/workflow';
import type { PermissionPolicy } from '../common/agent-input';
import type { ExitReason, ModelToolCall, PendingPermission } from '../common/agent-run-types';
import type { PermissionPayload } from '../common/messages';
import type { PermissionDecision as DecisionNotice } from '../common/notification';
import { FINISH_TOOL } from '../common/transcript';
import { approveSignalJson } from './current-details';
import { approvalTimerSummary } from './event-summaries';
import {
  closeRequests,
  decidePermission,
  denialResultText,
  describeToolCall,
  expireRequests,
  msUntilNextExpiry,
  newPermissionBook,
  newRequestId,
  openRequest,
  receiveDecision,
  undecidedRequests,
  type DecisionReceipt,
  type PermissionRequest,
} from './permission-policy';
import type { RunNotices } from './run-notices';

/** Why a batch of tool calls ended the run instead of going on. */
export type PermissionExit = Extract<ExitReason, 'permission_denied' | 'permission_timeout'>;

/** A verdict of the policy itself (a rule, or auto-approve) on one call, for its batch's notice. */
interface PolicyVerdict {
  kind: 'decided' | 'auto_approved';
  text: string;
  decision: DecisionNotice;
}

/** What the policy and the people made of one batch of tool calls. */
export interface GateOutcome {
  /** Calls that will not run, with what the model reads instead. */
  refused: Map<string, string>;
  /** Set when a denial or a timeout ends the run; nothing of the batch runs then. */
  exit?: PermissionExit;
}

/**
 * The run's permission requests inside the workflow: the policy's verdict on each tool call, the
 * requests it opens, the wait for `permission` signals or their timeouts, and the notices that make
 * every decision part of the audit. The rules and the request book are pure, in
 * `permission-policy.ts`; this class holds the book and does the waiting.
 */
export class RunApprovals {
  private readonly book = newPermissionBook();

  constructor(
    private readonly policy: PermissionPolicy,
    private readonly context: {
      notices: RunNotices;
      iteration: () => number;
      /** The run shows `awaiting_approval` while requests wait, and `running` once they are decided. */
      onWait: () => void;
      onDecided: () => void;
      /** A held decision that a request took after all: it no longer counts as ignored. */
      onHeldDecisionTaken: (count: number) => void;
      /**
       * One notice per kind for the policy's verdicts on a batch, not one per call; false when
       * replaying an execution recorded before.
       */
      batchNotices: boolean;
    },
  ) {}

  /** The requests waiting for a person, as `status` and the Web UI show them. */
  get pending(): PendingPermission[] {
    return undecidedRequests(this.book);
  }

  /** Applies a `permission` payload: a decision, an extension, held for later, or ignored. */
  receive(payload: PermissionPayload): DecisionReceipt {
    return receiveDecision(this.book, payload, new Date().toISOString());
  }

  /** Closes the requests a stop left undecided. */
  closeAll(): void {
    closeRequests(
      this.book,
      this.book.pending.map((request) => request.requestId),
    );
  }

  /**
   * Decides which calls of a batch may run: rules first, then the mode; calls that ask wait for a
   * person or their timeout. Returns the refusals, and the exit when a decision ends the run.
   */
  async gate(batch: Array<{ callId: string; call: ModelToolCall }>): Promise<GateOutcome> {
    const refused = new Map<string, string>();
    const asked: Array<{ callId: string; request: PendingPermission }> = [];
    const verdicts: PolicyVerdict[] = [];
    const iteration = this.context.iteration();
    for (const { callId, call } of batch) {
      if (call.tool === FINISH_TOOL) continue;
      const verdict = decidePermission(this.policy, call);
      const description = describeToolCall(call);
      if (verdict.action === 'deny') {
        refused.set(callId, `Denied by the run's permission policy (${verdict.reason})`);
        verdicts.push({
          kind: 'decided',
          text: `Denied by policy: ${description} (${verdict.reason})`,
          decision: { requestId: callId, tool: call.tool, approved: false, via: 'rule', rule: verdict.rule },
        });
      } else if (verdict.action === 'ask') {
        const requestedAt = Date.now();
        asked.push({
          callId,
          request: {
            requestId: newRequestId(Math.random),
            tool: call.tool,
            input: call.arguments,
            rationale: `${description} (${verdict.reason})`,
            iteration,
            requestedAt: new Date(requestedAt).toISOString(),
            expiresAt: new Date(requestedAt + this.policy.timeoutS * 1000).toISOString(),
          },
        });
      } else if (verdict.rule !== undefined) {
        // Which rule let a command through belongs in the audit as much as who approved one.
        verdicts.push({
          kind: 'decided',
          text: `Allowed by policy: ${description} (${verdict.reason})`,
          decision: { requestId: callId, tool: call.tool, approved: true, via: 'rule', rule: verdict.rule },
        });
      } else if (this.policy.mode === 'auto-approve') {
        verdicts.push({
          kind: 'auto_approved',
          text: `Auto-approved: ${description}`,
          decision: { requestId: callId, tool: call.tool, approved: true, via: 'auto-approve' },
        });
      }
    }
    this.sendVerdicts(verdicts, iteration);
    let exit: PermissionExit | undefined;
    if (asked.length > 0) {
      const decided = await this.awaitDecisions(asked.map(({ request }) => request));
      for (const { callId, request } of asked) {
        const decision = decided.find((entry) => entry.requestId === request.requestId)?.decision;
        if (decision?.approve === true) continue;
        refused.set(
          callId,
          decision === undefined ? 'Denied: user rejected this operation' : denialResultText(decision),
        );
        if (decision?.timedOut === true) exit = 'permission_timeout';
        else if (this.policy.onDeny === 'stop') exit ??= 'permission_denied';
      }
    }
    if (exit !== undefined) {
      for (const { callId } of batch) {
        if (!refused.has(callId)) refused.set(callId, 'Not run: the run ended on a permission decision');
      }
    }
    return exit === undefined ? { refused } : { refused, exit };
  }

  /**
   * The notices of the policy's verdicts on a batch: one per kind for the whole batch (each verdict
   * a line, every decision in `decisions`), so an answer of many calls costs a notice, not a notice
   * per call; one per call when replaying an execution recorded before.
   */
  private sendVerdicts(verdicts: PolicyVerdict[], iteration: number): void {
    if (!this.context.batchNotices) {
      for (const { kind, text, decision } of verdicts) {
        this.context.notices.send(kind, text, iteration, { decision });
      }
      return;
    }
    for (const kind of new Set(verdicts.map((verdict) => verdict.kind))) {
      const ofKind = verdicts.filter((verdict) => verdict.kind === kind);
      const heading =
        kind === 'auto_approved'
          ? `Auto-approved ${ofKind.length} calls`
          : `Policy decisions on ${ofKind.length} calls`;
      const text =
        ofKind.length === 1
          ? ofKind[0]!.text
          : [`${heading}:`, ...ofKind.map((verdict) => `- ${verdict.text}`)].join('\n');
      this.context.notices.send(kind, text, iteration, {
        decisions: ofKind.map((verdict) => verdict.decision),
      });
    }
  }

  /**
   * Waits until a person decides each request with a `permission` signal, its timeout denies it, or
   * a stop cancels the wait. Returns the requests with their decisions.
   */
  private async awaitDecisions(requests: PendingPermission[]): Promise<PermissionRequest[]> {
    const ids = requests.map((request) => request.requestId);
    const ours = () => this.book.pending.filter((request) => ids.includes(request.requestId));
    const iteration = this.context.iteration();
    for (const request of requests) {
      // Payloads that arrived before their request opened were counted as ignored; it takes them now.
      this.context.onHeldDecisionTaken(
        this.book.early.filter((early) => early.requestId === request.requestId).length,
      );
      openRequest(this.book, request);
      this.context.notices.send(
        'approval_needed',
        `Approval needed: ${request.rationale}. Request ${request.requestId} expires ${request.expiresAt}; approve with signal permission ${approveSignalJson(request.requestId)}`,
        iteration,
        { request },
      );
    }
    this.context.onWait();
    const undecided = () => ours().filter((request) => request.decision === undefined);
    while (undecided().length > 0) {
      const decidedAll = () => undecided().length === 0;
      const waitMs = msUntilNextExpiry(this.book, Date.now());
      // The timer says which requests it would time out, and when: the Web UI shows it.
      await (waitMs === undefined
        ? wf.condition(decidedAll)
        : wf.condition(decidedAll, waitMs, {
            summary: approvalTimerSummary(
              undecided().map((request) => request.requestId),
              waitMs,
            ),
          }));
      expireRequests(this.book, new Date().toISOString());
    }
    const decided = closeRequests(this.book, ids);
    for (const request of decided) {
      const decision = request.decision;
      if (decision === undefined) continue;
      const notice: DecisionNotice = {
        requestId: request.requestId,
        tool: request.tool,
        approved: decision.approve,
        via: decision.timedOut ? 'timeout' : 'signal',
        ...(decision.by === undefined ? {} : { by: decision.by }),
        ...(decision.note === undefined ? {} : { note: decision.note }),
      };
      const verb = decision.timedOut ? 'Timed out, denied' : decision.approve ? 'Approved' : 'Denied';
      const by = decision.by === undefined ? '' : ` by ${decision.by}`;
      this.context.notices.send('decided', `${verb}${by}: ${request.rationale}`, iteration, {
        decision: notice,
      });
    }
    this.context.onDecided();
    return decided;
  }
}
