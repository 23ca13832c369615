import { readFile, rename } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import type { TranscriptMessage } from '../common/agent-run-types';
import { TRANSCRIPT_UNAVAILABLE } from '../common/constants';
import { ensurePrivateFolder, writePrivateFile } from '../sandbox/private-files';

/** A stored conversation: the system prompt and every message so far. */
export interface Transcript {
  /** Compactions so far; absent in transcripts stored before compaction existed (0). */
  revision?: number;
  systemPrompt: string;
  messages: TranscriptMessage[];
}

/**
 * Keeps each run's conversation next to the worker, so a model activity's input carries only the
 * new messages and the history does not grow with the transcript on every call. The workflow keeps
 * the authoritative copy (every message is in its history anyway) and resends it whole when a
 * worker does not have it: another machine, or a store that was wiped.
 */
export class TranscriptStore {
  constructor(private readonly directory: string) {}

  /**
   * Returns the transcript cut to `baseLength` messages with `append` added. A longer stored
   * transcript is what a crashed attempt left behind and is cut back; a shorter one, or one of
   * another revision (compacted since, or before), cannot be repaired here and fails with
   * `TranscriptUnavailable`, so the workflow resends it whole.
   */
  async extend(
    key: string,
    revision: number,
    baseLength: number,
    append: TranscriptMessage[],
    full?: Transcript,
  ): Promise<Transcript> {
    const stored = full ?? (await this.load(key));
    const storedRevision = full === undefined ? (stored?.revision ?? 0) : revision;
    if (stored === undefined || storedRevision !== revision || stored.messages.length < baseLength) {
      throw ApplicationFailure.nonRetryable(
        `transcript ${key} has ${stored?.messages.length ?? 0} of ${baseLength} messages of revision ${revision} on this worker`,
        TRANSCRIPT_UNAVAILABLE,
      );
    }
    return {
      systemPrompt: stored.systemPrompt,
      messages: [...stored.messages.slice(0, baseLength), ...append],
    };
  }

  /**
   * Writes atomically, so a worker killed mid-write leaves the previous transcript intact, and
   * privately: a conversation holds whatever the run read.
   */
  async save(key: string, transcript: Transcript): Promise<void> {
    const file = this.fileFor(key);
    await ensurePrivateFolder(path.dirname(file));
    const temporary = `${file}.${process.pid}.tmp`;
    await writePrivateFile(temporary, JSON.stringify(transcript));
    await rename(temporary, file);
  }

  private async load(key: string): Promise<Transcript | undefined> {
    try {
      return JSON.parse(await readFile(this.fileFor(key), 'utf8')) as Transcript;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  private fileFor(key: string): string {
    return path.join(this.directory, `${key.replace(/[^A-Za-z0-9_.-]/g, '_')}.json`);
  }
}
