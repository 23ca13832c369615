import { listTemplates } from '../templates';
import type { CommandContext } from './command-context';

/** `agents templates` */
export function templatesCommand(context: CommandContext): Promise<void> {
  for (const template of listTemplates(context.config.home)) {
    context.print(`${template.name.padEnd(22)} ${template.source.padEnd(9)} ${template.path}`);
  }
  return Promise.resolve();
}
