import { appendFile, mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { PRIVATE_FILE_MODE, PRIVATE_FOLDER_MODE } from './private-files';
import type { ToolResult } from './tool-call';

/**
 * The results of every call a trajectory ran, by callId, persisted next to (not inside) its
 * workspace. A repeated callId, as a retried tool-batch activity sends after a worker crash, gets
 * the stored result or joins the execution still in flight: a command never runs twice.
 */
export class ResultStore {
  private readonly completed = new Map<string, ToolResult>();
  private readonly inFlight = new Map<string, Promise<ToolResult>>();
  private loaded: Promise<void> | undefined;

  constructor(private readonly file: string) {}

  /**
   * Returns the stored or in-flight result of `callId`, or runs `execute` once and stores what it
   * returns before anyone sees it, so a crash after the answer cannot lose the record of the run.
   */
  async runOnce(callId: string, execute: () => Promise<ToolResult>): Promise<ToolResult> {
    await this.load();
    const known = this.completed.get(callId) ?? this.inFlight.get(callId);
    if (known !== undefined) return known;
    const running = (async () => {
      const result = await execute();
      // Results hold command output: readable by the server's user only.
      await appendFile(this.file, `${JSON.stringify(result)}\n`, { mode: PRIVATE_FILE_MODE });
      this.completed.set(callId, result);
      return result;
    })();
    this.inFlight.set(callId, running);
    try {
      return await running;
    } finally {
      this.inFlight.delete(callId);
    }
  }

  private load(): Promise<void> {
    this.loaded ??= (async () => {
      await mkdir(path.dirname(this.file), { recursive: true, mode: PRIVATE_FOLDER_MODE });
      let text = '';
      try {
        text = await readFile(this.file, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
      for (const line of text.split('\n')) {
        if (line.trim() === '') continue;
        try {
          const result = JSON.parse(line) as ToolResult;
          this.completed.set(result.callId, result);
        } catch {
          // A line cut short by a crash mid-write: that call's result was never returned.
        }
      }
    })();
    return this.loaded;
  }
}
