import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { TemplateRef } from '../common/agent-input';
import { AgentsError } from './errors';

/** The templates shipped with durable-agents. */
export const BUILT_IN_TEMPLATES_DIR = path.resolve(__dirname, '..', 'templates');

/** A template that can be named at start. */
export interface TemplateListing {
  name: string;
  source: 'built-in' | 'user';
  path: string;
}

/** Where users keep their own templates: `$AGENTS_HOME/templates`. */
export function userTemplatesDir(home: string): string {
  return path.join(home, 'templates');
}

function listFolder(folder: string, source: TemplateListing['source']): TemplateListing[] {
  if (!existsSync(folder)) return [];
  return readdirSync(folder)
    .filter((file) => file.endsWith('.md'))
    .sort()
    .map((file) => ({ name: file.slice(0, -'.md'.length), source, path: path.join(folder, file) }));
}

/** Every template by name (not recursive): built-ins first, then the user's. */
export function listTemplates(home: string): TemplateListing[] {
  return [...listFolder(BUILT_IN_TEMPLATES_DIR, 'built-in'), ...listFolder(userTemplatesDir(home), 'user')];
}

/** A file's text, refused when it is not text: a NUL byte, or bytes that are not UTF-8. */
function readTemplateFile(file: string, shown: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (error) {
    const reason =
      (error as NodeJS.ErrnoException).code === 'EACCES' ? 'permission denied' : (error as Error).message;
    throw new AgentsError('unknown_template', `Cannot read template '${shown}': ${reason}`, { cause: error });
  }
  try {
    if (bytes.includes(0)) throw new Error('NUL byte');
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new AgentsError(
      'unknown_template',
      `Template '${shown}' is not a text file: a template is a Markdown task program in UTF-8`,
    );
  }
}

function isFile(file: string): boolean {
  return existsSync(file) && statSync(file).isFile();
}

/**
 * Resolves a template the way users expect: an existing file path first, then a name in the user
 * folder (so a user can shadow a built-in), then the built-ins. An unknown name lists every
 * available one; a path (with a '/' or ending in `.md`) that names no file says so. A file that is
 * not UTF-8 text is refused: its bytes would go into the prompt.
 */
export function loadTemplate(nameOrPath: string, home: string): TemplateRef {
  if (isFile(nameOrPath)) {
    return {
      name: path.basename(nameOrPath).replace(/\.md$/, ''),
      source: 'file',
      content: readTemplateFile(nameOrPath, nameOrPath),
    };
  }
  const candidates: Array<[string, TemplateListing['source']]> = [
    [userTemplatesDir(home), 'user'],
    [BUILT_IN_TEMPLATES_DIR, 'built-in'],
  ];
  for (const [folder, source] of candidates) {
    const file = path.join(folder, `${nameOrPath}.md`);
    if (!nameOrPath.includes('/') && isFile(file)) {
      return { name: nameOrPath, source, content: readTemplateFile(file, nameOrPath) };
    }
  }
  const available = [...new Set(listTemplates(home).map((template) => template.name))].join(', ') || '(none)';
  if (nameOrPath.includes('/') || nameOrPath.endsWith('.md')) {
    const problem = existsSync(nameOrPath) ? 'is a folder, not a file' : 'no such file';
    throw new AgentsError(
      'unknown_template',
      `Template '${nameOrPath}': ${problem}. Give a path to a .md file, or a template name: ${available}`,
    );
  }
  throw new AgentsError(
    'unknown_template',
    `Unknown template '${nameOrPath}'. Available: ${available}; or give a path to a .md file`,
  );
}
