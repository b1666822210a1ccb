// Heartbeat details, parsed with zod on the retry. They name the last COMMITTED checkpoint, never just the current
// step: heartbeats are throttled, so the retry sees the last recorded value, which may lag the worker that died.
// An unknown or missing shape means "start from the newest DONE marker on disk", never a crash.
import { z } from 'zod';

export const CheckpointRefSchema = z.object({ dir: z.string().min(1), step: z.number().int().nonnegative() });

export const TrainHeartbeat = z.object({
  kind: z.literal('train'),
  committed: CheckpointRefSchema.nullable(),
  step: z.number().int().nonnegative(),
  loss: z.number().nullable(),
});
export type TrainHeartbeat = z.infer<typeof TrainHeartbeat>;

export const PrepareHeartbeat = z.object({
  kind: z.literal('prepare'),
  stage: z.string(),
  bytes: z.number(),
  totalBytes: z.number().nullable(),
  sequences: z.number(),
});
export type PrepareHeartbeat = z.infer<typeof PrepareHeartbeat>;

/** Details of the previous attempt, or null when there were none or they do not parse. */
export function previousDetails<T>(schema: z.ZodType<T>, details: unknown): T | null {
  const r = schema.safeParse(details);
  return r.success ? r.data : null;
}
