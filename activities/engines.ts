// The per-worker engine cache: the live model stays in (GPU) memory between training segments, so a segment
// that continues on the same worker skips loading its checkpoint. An entry is keyed by the run's checkpoint root
// and the exact committed checkpoint the in-memory state equals; whoever uses it takes it out (exclusive), so two
// overlapping attempts never share one engine. One model per worker: a new run's model evicts the old one.
import type { Engine } from '../native/index.js';
import type { CheckpointRef, ResumeRecord } from '../common/index.js';

interface Entry {
  root: string;
  checkpoint: CheckpointRef;
  engine: Engine;
  /** Prepared-data directory whose train split is loaded into the engine, if any. */
  dataDir: string | null;
  /** False once evaluate/generate have run on it: their sampling may have touched the training RNG state. */
  trainable: boolean;
  /** '' for a single-worker engine; a rank's engine names its group generation (it holds a shard and a communicator). */
  key: string;
}

export class EngineCache {
  private entry: Entry | null = null;

  /** Take the engine whose state equals `checkpoint` of run `root` (removing it from the cache), or null. */
  take(root: string, checkpoint: CheckpointRef | null, opts: { forTraining: boolean; key?: string }): Omit<Entry, 'root' | 'checkpoint'> | null {
    const e = this.entry;
    if (!e || !checkpoint || e.root !== root || e.checkpoint.dir !== checkpoint.dir || e.checkpoint.step !== checkpoint.step) return null;
    if (e.key !== (opts.key ?? '')) return null;
    if (opts.forTraining && !e.trainable) return null;
    this.entry = null;
    return e;
  }

  /** The checkpoint the cached engine of `root` equals, if any (used to skip verifying it again). */
  peek(root: string, key = ''): CheckpointRef | null {
    return this.entry && this.entry.root === root && this.entry.key === key ? this.entry.checkpoint : null;
  }

  put(root: string, checkpoint: CheckpointRef, engine: Engine, dataDir: string | null, trainable: boolean, key = ''): void {
    if (this.entry && this.entry.engine !== engine) this.entry.engine.dispose();
    this.entry = { root, checkpoint, engine, dataDir, trainable, key };
  }

  /** Free the cached model (before building another one, so two never share the GPU). */
  evict(): void {
    this.entry?.engine.dispose();
    this.entry = null;
  }
}

/** Where a training attempt starts (activities/train.ts): its engine, the data it holds, the checkpoint it equals, and whether it came from disk. */
export interface Start {
  engine: Engine;
  /** Prepared-data directory already loaded into the engine (a cached engine), else null. */
  dataDir: string | null;
  start: CheckpointRef | null;
  /** A resume from disk to record (in the result and the metrics log), or null when it continued in memory. */
  resume: ResumeRecord | null;
  /** The state was built from disk or from scratch (not the cached engine): the metrics log is rewritten from it. */
  fromDisk: boolean;
}
