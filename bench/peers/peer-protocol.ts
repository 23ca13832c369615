/**
 * What the bench and its peer programs say to each other: a request of turns and counts as one
 * JSON object on the peer's stdin, and per-iteration figures as one JSON object on its stdout.
 */
import { z } from 'zod';

/** One scripted turn as the peers play it: the text and usage the model would answer with. */
export const peerTurnSchema = z.object({
  text: z.string(),
  usage: z.object({ inputTokens: z.number(), outputTokens: z.number() }),
  costUsd: z.number(),
});

/** What a peer is asked to do: `runs` loops at once, each of `iterations` turns played in a cycle. */
export const peerRequestSchema = z.object({
  turns: z.array(peerTurnSchema).min(1),
  /** The user message of the first iteration and of every later one, as the agent workflow builds them. */
  prompts: z.object({ first: z.string(), next: z.string() }),
  iterations: z.number().int().min(1),
  runs: z.number().int().min(1),
  /** Where the peer keeps its state: a SQLite file for LangGraph, a PostgreSQL URL for DBOS. */
  database: z.string().min(1),
});
/** What a peer is asked to do. */
export type PeerRequest = z.infer<typeof peerRequestSchema>;

/** What a peer answers: one sample per iteration, each a full step with its durable write. */
export const peerFiguresSchema = z.object({
  iterationMs: z.array(z.number()),
  totalIterations: z.number().int(),
  wallClockS: z.number().positive(),
  /** The peer's packages and versions, printed beside its figures. */
  version: z.string(),
});
/** What a peer answers. */
export type PeerFigures = z.infer<typeof peerFiguresSchema>;
