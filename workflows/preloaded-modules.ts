/**
 * The modules every workflow execution of a worker shares: the worker evaluates them once, before
 * any workflow runs, and freezes them, instead of once per execution in its workflow cache. zod is
 * the one here: it keeps no state of a workflow's own, and evaluated per execution it was about
 * 40 % of what each cached run costs. The schemas built with it stay per execution: zod binds
 * their methods on first use, which a frozen schema refuses. `worker/workflow-bundle.ts` names
 * this module to the bundler.
 */
import { z } from 'zod';

/**
 * Built and used once here, before zod is frozen: the first schema sets zod's defaults (the locale
 * of its messages, the memoizer of its parses) in its shared configuration, which frozen refuses.
 */
const FIRST_SCHEMA = z.object({ text: z.string().min(1), count: z.number().int() });
FIRST_SCHEMA.safeParse({ text: '', count: 0.5 });

/** Referenced so the bundler keeps zod, which declares itself free of side effects. */
export const PRELOADED = [z];
