import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ensurePrivateFolder, tightenPrivateFile, writePrivateFile } from './private-files';

/**
 * The sandbox server's bearer token: `AGENTS_SANDBOX_TOKEN` when set (several machines share
 * one), otherwise the one stored in `file`, generated on first use and readable by its owner only
 * (a file an earlier version left wider is tightened before it is read).
 */
export async function loadOrCreateToken(file: string, fromEnvironment: string | undefined): Promise<string> {
  if (fromEnvironment !== undefined && fromEnvironment !== '') return fromEnvironment;
  try {
    await tightenPrivateFile(file);
    const stored = (await readFile(file, 'utf8')).trim();
    if (stored !== '') return stored;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const token = randomBytes(32).toString('hex');
  await ensurePrivateFolder(path.dirname(file));
  await writePrivateFile(file, `${token}\n`);
  return token;
}
