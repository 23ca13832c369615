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

/**
 * Resolves a template the way users expect: an existing file path first, then a name in the user
 * folder (so a user can shadow a built-in), then the built-ins. An unknown name lists every
 * available one.
 */
export function loadTemplate(nameOrPath: string, home: string): TemplateRef {
  if (existsSync(nameOrPath) && statSync(nameOrPath).isFile()) {
    return {
      name: path.basename(nameOrPath).replace(/\.md$/, ''),
      source: 'file',
      content: readFileSync(nameOrPath, 'utf8'),
    };
  }
  const candidates: Array<[string, TemplateListing['source']]> = [
    [userTemplatesDir(home), 'user'],
    [BUILT_IN_TEMPLATES_DIR, 'built-in'],
  ];
  for (const [folder, source] of candidates) {
    const file = path.join(folder, `${nameOrPath}.md`);
    if (!nameOrPath.includes('/') && existsSync(file) && statSync(file).isFile()) {
      return { name: nameOrPath, source, content: readFileSync(file, 'utf8') };
    }
  }
  const available = [...new Set(listTemplates(home).map((template) => template.name))];
  throw new AgentsError(
    'unknown_template',
    `Unknown template '${nameOrPath}'. Available: ${available.join(', ') || '(none)'}; or give a path to a .md file`,
  );
}
