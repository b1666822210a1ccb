// Checkpoint bookkeeping on shared storage: which committed checkpoint to resume from (falling back past corrupt
// ones, which are moved aside so they never shadow a newer good one), and retention (keepLast).
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { native } from './lib/native.js';
import type { CheckpointRef } from '../common/index.js';

export interface ResumePoint {
  checkpoint: CheckpointRef | null;
  /** Newer checkpoints that failed verification, newest first, with the reason; they were quarantined. */
  skipped: { dir: string; reason: string }[];
}

/** `step-00000150`: the directory name of a checkpoint, sortable by name. */
export function checkpointDir(root: string, step: number): string {
  return join(root, `step-${String(step).padStart(8, '0')}`);
}

/** Where corrupt checkpoints go: next to the checkpoint root, kept for inspection, out of listCheckpoints' way. */
export function quarantineRoot(root: string): string {
  return join(dirname(root), 'corrupt-checkpoints');
}

/**
 * The newest committed checkpoint at or below `maxStep` that verifies. A corrupt one (bad hash, truncated file)
 * is reported and moved to quarantineRoot; the search goes on to the one before it.
 */
export async function findResumePoint(root: string, maxStep = Number.MAX_SAFE_INTEGER): Promise<ResumePoint> {
  const { listCheckpoints, verifyCheckpoint } = await native();
  const skipped: ResumePoint['skipped'] = [];
  for (const c of await listCheckpoints(root)) {
    if (c.step > maxStep) continue;
    const v = await verifyCheckpoint(c.dir);
    if (v.ok) return { checkpoint: { dir: c.dir, step: v.step }, skipped };
    skipped.push({ dir: c.dir, reason: v.reason });
    await quarantine(c.dir);
  }
  return { checkpoint: null, skipped };
}

/** Move a checkpoint that cannot be loaded out of the way (rename, so nothing is lost). */
export async function quarantine(dir: string): Promise<string> {
  const q = quarantineRoot(dirname(dir));
  await mkdir(q, { recursive: true });
  const to = join(q, `${basename(dir)}-${Date.now()}`);
  try {
    await rename(dir, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e; // another attempt moved it already
  }
  return to;
}

/** Delete committed checkpoints beyond the newest `keepLast` (never fewer than 2, so a fallback always exists). */
export async function pruneCheckpoints(root: string, keepLast: number): Promise<string[]> {
  const all = await (await native()).listCheckpoints(root);
  const old = all.slice(Math.max(2, keepLast));
  for (const c of old) await rm(c.dir, { recursive: true, force: true });
  return old.map((c) => c.dir);
}

/**
 * Commit the engine's state as checkpoint `dir` (of the engine's current step). Another attempt may commit the
 * same step at the same moment: a stale attempt that the server already replaced (its heartbeats were late: a
 * stalled or overloaded host) keeps training until it hears so, and writes the same steps as its replacement, with
 * the same bytes (training is deterministic and `extra` must hold nothing attempt-specific). The engine publishes a
 * checkpoint atomically (DONE is written into the staging directory, which one rename(2) then moves into place; a
 * rename onto a committed directory fails), so of two concurrent commits one lands and the other adopts it.
 * What remains for this layer is a committed directory of this step that does not verify (files damaged after
 * their commit, or written by a filesystem that does not honour rename and fsync): the engine refuses it as
 * BAD_CHECKPOINT; it is moved aside for inspection and the step written again.
 */
export async function commitCheckpoint(
  engine: { saveCheckpoint(dir: string, extra?: Record<string, unknown>): Promise<{ existed: boolean }> },
  dir: string,
  step: number,
  extra: Record<string, unknown>,
  log: (m: string) => void = () => {},
): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await engine.saveCheckpoint(dir, extra);
      if (r.existed) log(`checkpoint ${dir}: step ${step} was already committed (by another attempt); using it`);
      return;
    } catch (e) {
      if ((e as { code?: string }).code !== 'BAD_CHECKPOINT' || attempt >= 2) throw e;
      log(`checkpoint ${dir} is committed but does not verify (${(e as Error).message}); moving it aside and writing step ${step} again`);
      await quarantine(dir);
    }
  }
}
