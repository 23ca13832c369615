import { createHash } from 'node:crypto';
import { readdir, readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { ensurePrivateFolder, writePrivateFile } from '../sandbox/private-files';

const PROJECT_ROOT = path.resolve(__dirname, '..');
/** Folders whose code ends up in the workflow bundle. */
const BUNDLED_FOLDERS = ['workflows', 'common'];

/**
 * Returns the workflow bundle's code, built with webpack once per version of the workflow source
 * and cached under `cacheDirectory`: bundling takes seconds, and every `agents worker`, `agents dev`
 * and test worker would otherwise pay it at start.
 */
export async function loadWorkflowBundle(cacheDirectory: string): Promise<{ code: string }> {
  const key = await sourceHash();
  const cached = path.join(cacheDirectory, `workflow-bundle-${key}.js`);
  try {
    return { code: await readFile(cached, 'utf8') };
  } catch {
    // Not built yet for this source: build it below.
  }
  const { code } = await bundleWorkflowCode({
    workflowsPath: path.join(PROJECT_ROOT, 'workflows', 'index.ts'),
    // webpack's report of every module is noise to a user starting a worker; warnings still show.
    logger: new DefaultLogger('WARN'),
  });
  await ensurePrivateFolder(cacheDirectory);
  const temporary = `${cached}.${process.pid}.tmp`;
  await writePrivateFile(temporary, code);
  await rename(temporary, cached);
  return { code };
}

/** Hash of every bundled source file, the SDK version and the lockfile. */
async function sourceHash(): Promise<string> {
  const hash = createHash('sha256');
  for (const folder of BUNDLED_FOLDERS) {
    const entries = await readdir(path.join(PROJECT_ROOT, folder), { recursive: true });
    for (const entry of entries.filter((name) => name.endsWith('.ts')).sort()) {
      hash.update(entry);
      hash.update(await readFile(path.join(PROJECT_ROOT, folder, entry)));
    }
  }
  hash.update(await readFile(path.join(PROJECT_ROOT, 'package-lock.json')));
  return hash.digest('hex').slice(0, 16);
}
