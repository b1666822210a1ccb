// createActivities(deps): every activity of the `finetune` workflow, bound to this worker's dependencies (its
// engine cache, backend override, and how to report live progress). Workflows import only the type.
import type { TrainProgress, TrainRankInput, TrainSegmentInput } from '../common/index.js';
import { findResumePoint } from './checkpoints.js';
import { EngineCache } from './engines.js';
import { finalizeRun } from './finalize.js';
import { evaluateModel, exportModel, generateSamples } from './model.js';
import { prepareData } from './prepare.js';
import { rendezvous } from './ranks.js';
import { train } from './train.js';
import { validateConfig } from './validate.js';

export type { PreparedData, Rendezvous, RendezvousInput, SegmentResult, SeriesPointer, TrainRankInput, TrainSegmentInput, ValidatedRun } from '../common/index.js';
export { EngineCache } from './engines.js';

export interface ActivityDeps {
  /** The worker's live-model cache; one per process (createActivities makes one when absent). */
  engines?: EngineCache;
  /** Force a backend (e.g. `finetune worker --backend cpu`); default: cfg.training.backend. */
  backend?: 'cpu' | 'cuda';
  /** Deliver live training progress to the workflow (the CLI signals it through its client). */
  signalProgress?: (workflowId: string, p: TrainProgress) => Promise<void>;
  /** Minimum interval between progress signals (each is a history event). Default 3 s. */
  progressIntervalMs?: number;
  /** The server's record of an activity's last failure (for the cause of a resume in the metrics log). */
  lastFailure?: (workflowId: string, activityId: string) => Promise<string | null>;
}

export function createActivities(deps: ActivityDeps = {}) {
  const engines = deps.engines ?? new EngineCache();
  const progressIntervalMs = deps.progressIntervalMs ?? 3000;
  const gpu = { engines, backend: deps.backend };
  const training = { ...gpu, signalProgress: deps.signalProgress, progressIntervalMs, lastFailure: deps.lastFailure };
  return {
    validateConfig,
    prepareData,
    /** The newest committed checkpoint that verifies (after a cancelled segment, or on cancellation). */
    latestCheckpoint: (root: string) => findResumePoint(root),
    // One training activity (activities/train.ts) under the two names the workflow schedules it by: a lone worker
    // on the shared GPU queue (retried by Temporal on any GPU worker), and a rank of a group on its own queue
    // (never retried alone). The names are the activity types recorded in every history and in pending activity
    // tasks, so both stay registered.
    trainSegment: (input: TrainSegmentInput) => train(training, input),
    /** Multi-worker training: `rendezvous` on rank 0's queue, then one trainRank per worker queue. */
    rendezvous,
    trainRank: (input: TrainRankInput) => train(training, input),
    exportModel: (a: Parameters<typeof exportModel>[1]) => exportModel(gpu, a),
    evaluateModel: (a: Parameters<typeof evaluateModel>[1]) => evaluateModel(gpu, a),
    generateSamples: (a: Parameters<typeof generateSamples>[1]) => generateSamples(gpu, a),
    finalizeRun,
  };
}

export type Activities = ReturnType<typeof createActivities>;
