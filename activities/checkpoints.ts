// Checkpoint bookkeeping on shared storage: which committed checkpoint to resume from (falling back past corrupt
// ones, which are moved aside so they never shadow a newer good one), and retention (keepLast).
import { mkdir, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { native } from './lib/native.js';
import type { CheckpointRef } from '../workflows/messages.js';

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
 * Commit the engine's state as checkpoint `dir` (of the engine's current step), safe against another attempt
 * committing the same step at the same moment: a stale attempt that the server already replaced (its heartbeats
 * were late: a stalled or overloaded host) keeps training until it hears so, and writes the same steps as its
 * replacement. Both write the same bytes (training is deterministic and `extra` must hold nothing
 * attempt-specific), but the engine's commit is not atomic against a concurrent one: it replaces a directory that
 * has no DONE yet (which may be the other attempt's, between its rename and its DONE), then writes DONE. So a
 * commit that fails is checked: a checkpoint of this step that verifies is kept; one that does not (files
 * deleted under the other writer's DONE: the engine refuses it as BAD_CHECKPOINT) is moved aside and written
 * again. The engine verifies a step it finds committed; a commit that wrote alone is not re-read (verifying
 * hashes the whole state: costly for big models).
 */
export async function commitCheckpoint(
  engine: { saveCheckpoint(dir: string, extra?: Record<string, unknown>): Promise<unknown> },
  dir: string,
  step: number,
  extra: Record<string, unknown>,
  log: (m: string) => void = () => {},
): Promise<void> {
  const { verifyCheckpoint } = await native();
  for (let attempt = 1; ; attempt++) {
    let failure: unknown = null;
    try {
      await engine.saveCheckpoint(dir, extra); // a step committed already is verified by the engine and kept
      return;
    } catch (e) {
      failure = e;
      if ((e as { code?: string }).code !== 'IO' && (e as { code?: string }).code !== 'BAD_CHECKPOINT') throw e;
      // The other writer may be between its rename and its DONE: give it a moment before looking.
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
    const v = await verifyCheckpoint(dir);
    if (v.ok && v.step === step) {
      if (failure) log(`checkpoint ${dir}: committed by another attempt while this one was saving it (${(failure as Error).message}); using it`);
      return;
    }
    if (attempt >= 3) throw failure ?? new Error(`checkpoint ${dir} does not verify after it was committed: ${v.ok ? `step ${v.step}` : v.reason}`);
    log(`checkpoint ${dir} was broken by a concurrent commit of the same step (${v.ok ? `step ${v.step}` : v.reason}); writing it again`);
    if (!v.ok && !/never committed|no DONE/i.test(v.reason)) await quarantine(dir);
  }
}
