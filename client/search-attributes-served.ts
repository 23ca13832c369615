import { setTimeout as sleep } from 'node:timers/promises';
import type { Connection } from '@temporalio/client';
import { SEARCH_ATTRIBUTES } from '../common/search-attributes';

/**
 * On SQL visibility (PostgreSQL, MySQL) a namespace learns search attributes added to it from the
 * frontend's namespace cache, refreshed every few seconds, so for a while after `agents setup` the
 * server refuses a start that sets them and a query that names them. The dev server never does.
 * This long is waited for them, then the refusal is the user's to see.
 */
export const SEARCH_ATTRIBUTES_SERVED_TIMEOUT_MS = 30_000;

const NOT_SERVED_PATTERN =
  /no mapping defined for search attribute|invalid search attribute|is not a valid search attribute/i;

/** Whether `error` is that refusal: `INVALID_ARGUMENT: Namespace … has no mapping defined for search attribute …`. */
export function isSearchAttributeNotServedYet(error: unknown): boolean {
  const cause = (error as { cause?: unknown } | undefined)?.cause;
  return NOT_SERVED_PATTERN.test(`${String(error)} ${String(cause)}`);
}

/**
 * Runs `attempt`, again while the server refuses it because the namespace does not serve the
 * search attributes yet, for up to {@link SEARCH_ATTRIBUTES_SERVED_TIMEOUT_MS}; `onWait` hears once why.
 */
export async function retryWhileSearchAttributesNotServed<T>(
  namespace: string,
  attempt: () => Promise<T>,
  onWait: (line: string) => void,
): Promise<T> {
  const deadline = Date.now() + SEARCH_ATTRIBUTES_SERVED_TIMEOUT_MS;
  let told = false;
  for (let delayMs = 250; ; delayMs = Math.min(delayMs * 2, 2_000)) {
    try {
      return await attempt();
    } catch (error) {
      if (!isSearchAttributeNotServedYet(error) || Date.now() + delayMs > deadline) throw error;
      if (!told) {
        onWait(
          `Namespace ${namespace} does not serve the agents' search attributes yet (added moments ago?): retrying for up to ${SEARCH_ATTRIBUTES_SERVED_TIMEOUT_MS / 1000} s`,
        );
        told = true;
      }
      await sleep(delayMs);
    }
  }
}

/**
 * Resolves once `namespace` serves every search attribute of the agents: a visibility query naming
 * them all is answered. `agents setup` waits for it, so a start right after it is not refused.
 */
export async function waitForSearchAttributesServed(
  connection: Connection,
  namespace: string,
  onWait: (line: string) => void,
): Promise<void> {
  const query = SEARCH_ATTRIBUTES.map(({ name, type }) => `${name} = ${type === 'Int' ? '0' : "''"}`).join(
    ' AND ',
  );
  await retryWhileSearchAttributesNotServed(
    namespace,
    () => connection.workflowService.countWorkflowExecutions({ namespace, query }),
    onWait,
  );
}
