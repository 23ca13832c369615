import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { readdir, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { ensurePrivateFolder, writePrivateFile } from '../sandbox/private-files';

const PROJECT_ROOT = path.resolve(__dirname, '..');
/** tsx's CommonJS hook, with which the child process runs this TypeScript file. */
const TSX_HOOK = path.join(PROJECT_ROOT, 'node_modules', 'tsx', 'dist', 'cjs', 'index.cjs');
/** Folders whose code ends up in the workflow bundle. */
const BUNDLED_FOLDERS = ['workflows', 'common'];
/** The OpenTelemetry workflow interceptors that only the traced bundle holds. */
const TRACING_INTERCEPTORS = path.join(PROJECT_ROOT, 'workflows', 'tracing-interceptors.ts');
/** The argument that tells the child process to build the traced bundle. */
const TRACED_FLAG = '--traced';

/** Which bundle to load. */
export interface WorkflowBundleOptions {
  /**
   * The traced bundle: the same workflows with OpenTelemetry's workflow interceptors, for a worker
   * that exports traces. A separate bundle, so an untraced worker runs no tracing code at all; both
   * make the same decisions, so runs move between them (see `workflows/tracing-interceptors.ts`).
   */
  traced?: boolean;
}

/**
 * Returns the workflow bundle's code, built with webpack once per version of the workflow source
 * and cached under `cacheDirectory`: bundling takes seconds, and every `agents worker`, `agents dev`
 * and test worker would otherwise pay it at start. It is built in a child process: webpack leaves
 * about 100 MB in the heap of the process that runs it, which a worker would carry all its life.
 */
export async function loadWorkflowBundle(
  cacheDirectory: string,
  options: WorkflowBundleOptions = {},
): Promise<{ code: string }> {
  const traced = options.traced === true;
  const key = await sourceHash(traced);
  const cached = path.join(cacheDirectory, `workflow-bundle-${key}.js`);
  try {
    return { code: await readFile(cached, 'utf8') };
  } catch {
    // Not built yet for this source: build it below.
  }
  await ensurePrivateFolder(cacheDirectory);
  await buildInChildProcess(cached, traced);
  return { code: await readFile(cached, 'utf8') };
}

/** Runs this file as a program that writes the bundle to `target`; its warnings reach stderr. */
async function buildInChildProcess(target: string, traced: boolean): Promise<void> {
  const flags = traced ? [TRACED_FLAG] : [];
  const child = spawn(process.execPath, ['--require', TSX_HOOK, __filename, target, ...flags], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  if (code !== 0) {
    throw new Error(`Bundling the workflows failed (${signal ?? `exit code ${code}`}); its error is above.`);
  }
}

/** Bundles the workflows and writes the code to `target` atomically. */
async function writeBundle(target: string, traced: boolean): Promise<void> {
  const { code } = await bundleWorkflowCode({
    workflowsPath: path.join(PROJECT_ROOT, 'workflows', 'index.ts'),
    ...(traced ? { workflowInterceptorModules: [TRACING_INTERCEPTORS] } : {}),
    preloadModules: [path.join(PROJECT_ROOT, 'workflows', 'preloaded-modules.ts')],
    // webpack's report of every module is noise to a user starting a worker; warnings still show.
    logger: new DefaultLogger('WARN'),
  });
  const temporary = `${target}.${process.pid}.tmp`;
  await writePrivateFile(temporary, code);
  await rename(temporary, target);
}

/**
 * Hash of every bundled source file, the SDK version, the lockfile and the bundler's options, the
 * choice of the traced bundle among them.
 */
async function sourceHash(traced: boolean): Promise<string> {
  const hash = createHash('sha256');
  hash.update(traced ? 'traced\n' : 'untraced\n');
  for (const folder of BUNDLED_FOLDERS) {
    const entries = await readdir(path.join(PROJECT_ROOT, folder), { recursive: true });
    for (const entry of entries.filter((name) => name.endsWith('.ts')).sort()) {
      hash.update(entry);
      hash.update(await readFile(path.join(PROJECT_ROOT, folder, entry)));
    }
  }
  hash.update(await readFile(path.join(PROJECT_ROOT, 'package-lock.json')));
  // The bundler's options are written in this file.
  hash.update(await readFile(path.join(PROJECT_ROOT, 'worker', 'workflow-bundle.ts')));
  return hash.digest('hex').slice(0, 16);
}

if (require.main === module) {
  const [target, flag] = process.argv.slice(2);
  if (target === undefined) {
    throw new Error(`usage: workflow-bundle.ts <file to write the bundle to> [${TRACED_FLAG}]`);
  }
  writeBundle(target, flag === TRACED_FLAG).catch((error: unknown) => {
    console.error(error);
    process.exitCode = 1;
  });
}
