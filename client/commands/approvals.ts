import { z } from 'zod';
import { DEFAULT_PERMISSION_EXTENSION_S } from '../../common/constants';
import { describeZodError } from '../../common/agent-input';
import { terminalSafeJson } from '../../common/display-text';
import { requestIdSchema } from '../../common/messages';
import { workflowIdFor, type AgentsClient } from '../agents-client';
import { auditEntries } from '../audit/audit-entries';
import { cliIdentity } from '../connect';
import { AgentsError } from '../errors';
import { describeDecision, formatPending } from '../format';
import { flag, numberOption, text, withClient, type CommandContext } from './command-context';

/** The commands of permission requests: `approve`, `deny`, `extend` and `pending`. */

/**
 * Checks that the open run `name` waits on request `requestId`, so a decision is sent only when the
 * run will act on it: the run would ignore (and count) a signal for a closed or unknown request.
 * Fails with one line saying why not: the ID's form, the run's end, or what became of the request.
 * `agents mcp` decides through it too.
 */
export async function requirePending(agents: AgentsClient, name: string, requestId: string): Promise<void> {
  const form = requestIdSchema.safeParse(requestId);
  if (!form.success) {
    throw new AgentsError(
      'invalid_argument',
      `Invalid request ID '${requestId}': ${describeZodError(form.error)}`,
    );
  }
  await agents.runningHandle(name);
  const { pendingPermissions } = await agents.status(name);
  if (pendingPermissions.some((request) => request.requestId === requestId)) return;
  const waiting =
    pendingPermissions.length === 0
      ? 'none is waiting'
      : `waiting: ${pendingPermissions.map((request) => request.requestId).join(', ')}`;
  throw new AgentsError(
    'not_pending',
    `Request ${requestId} of agent ${name} is not pending: ${await whatBecameOf(agents, name, requestId)} (${waiting})`,
  );
}

/** What the run's history says became of a request that is not pending: decided, closed, or never opened. */
async function whatBecameOf(agents: AgentsClient, name: string, requestId: string): Promise<string> {
  let opened = false;
  for await (const entry of auditEntries(agents.client, workflowIdFor(name))) {
    if (entry.kind === 'permission_requested' && entry.requestId === requestId) opened = true;
    if (entry.kind === 'permission_decided' && entry.requestId === requestId) {
      return `it was already ${describeDecision(entry)}`;
    }
  }
  return opened ? 'it was closed without a decision when its iteration ended' : 'the run never opened it';
}

/** `agents approve|deny <name> <requestId> | --all [--note TEXT] [--by NAME]` */
function decideCommand(approve: boolean) {
  return async (context: CommandContext): Promise<void> => {
    const verb = approve ? 'approve' : 'deny';
    const usage = `agents ${verb} <name> <requestId> | <name> --all [--note TEXT] [--by NAME]`;
    const [name, requestId, ...extra] = context.positionals;
    if (name === undefined) throw new AgentsError('invalid_argument', `An agent name is required: ${usage}`);
    if (extra.length > 0)
      throw new AgentsError('invalid_argument', `Unexpected argument '${extra[0]}': ${usage}`);
    if ((requestId === undefined) === !flag(context, 'all')) {
      throw new AgentsError('invalid_argument', `Give a request ID or --all: ${usage}`);
    }
    const note = text(context, 'note');
    const by = text(context, 'by') ?? cliIdentity().replace(/^agents-cli /, '');
    await withClient(context, async (agents) => {
      if (requestId === undefined) await agents.runningHandle(name);
      else await requirePending(agents, name, requestId);
      const ids =
        requestId === undefined
          ? (await agents.pending(name)).map(({ request }) => request.requestId)
          : [requestId];
      if (ids.length === 0) {
        context.print(`Agent ${name} has no pending permission requests.`);
        return;
      }
      for (const id of ids) {
        await agents.decide(name, { requestId: id, approve, by, ...(note === undefined ? {} : { note }) });
        context.print(`${approve ? 'Approved' : 'Denied'} ${id} of agent ${name}.`);
      }
    });
  };
}

/** `agents approve <name> <requestId> | <name> --all`: grants pending permission requests. */
export const approveCommand = decideCommand(true);

/** `agents deny <name> <requestId> | <name> --all`: refuses pending permission requests. */
export const denyCommand = decideCommand(false);

/** `agents extend <name> <requestId> [--seconds S]` */
export async function extendCommand(context: CommandContext): Promise<void> {
  const usage = 'agents extend <name> <requestId> [--seconds S]';
  const [name, requestId, ...extra] = context.positionals;
  if (name === undefined || requestId === undefined || extra.length > 0) {
    throw new AgentsError('invalid_argument', `An agent name and a request ID are required: ${usage}`);
  }
  const seconds = numberOption(context, 'seconds', z.number().positive()) ?? DEFAULT_PERMISSION_EXTENSION_S;
  await withClient(context, async (agents) => {
    await requirePending(agents, name, requestId);
    await agents.decide(name, { requestId, extendS: seconds });
    context.print(`Gave request ${requestId} of agent ${name} ${seconds} more seconds.`);
  });
}

/** `agents pending [<name>] [--json]`: requests waiting for a decision, across all runs by default. */
export async function pendingCommand(context: CommandContext): Promise<void> {
  const [name, ...extra] = context.positionals;
  if (extra.length > 0)
    throw new AgentsError('invalid_argument', `Unexpected argument '${extra[0]}': agents pending [<name>]`);
  await withClient(context, async (agents) => {
    const pending = await agents.pending(name);
    if (flag(context, 'json')) context.print(terminalSafeJson(pending, 2));
    else context.print(formatPending(pending));
  });
}
