import { z } from 'zod';
import { DEFAULT_PERMISSION_EXTENSION_S } from '../../common/constants';
import { terminalSafeJson } from '../../common/display-text';
import { cliIdentity } from '../connect';
import { AgentsError } from '../errors';
import { formatPending } from '../format';
import { flag, numberOption, text, withClient, type CommandContext } from './command-context';

/** The commands of permission requests: `approve`, `deny`, `extend` and `pending`. */

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
