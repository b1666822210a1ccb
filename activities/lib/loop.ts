// Parts of the training activity's loop (activities/train.ts): where each group of steps ends, the divergence
// check on every loss, and throttled live progress to the workflow.
import type { FinetuneConfig } from '../../configs/index.js';
import type { CheckpointRef, TrainProgress } from '../../common/index.js';
import { divergence } from './failures.js';

/**
 * The end of the next group of steps from `step`, and the checkpoint step it may reach. Groups end on multiples of
 * training.logEverySteps and checkpoint.everySteps wherever the segment started, so a resumed run makes the same
 * engine calls as an uninterrupted one (train(n) steps do not depend on how they are grouped).
 */
export function nextGroup(cfg: FinetuneConfig, step: number, toStep: number): { end: number; checkpointAt: number } {
  const every = cfg.checkpoint.everySteps;
  const group = cfg.training.logEverySteps;
  const checkpointAt = every > 0 ? Math.min(toStep, (Math.floor(step / every) + 1) * every) : toStep;
  return { end: Math.min(checkpointAt, (Math.floor(step / group) + 1) * group), checkpointAt };
}

/** Losses of a segment: the first and the last, each checked against training.divergenceLoss as it arrives. */
export class LossLog {
  first: number | null = null;
  last: number | null = null;

  constructor(private readonly limit: number) {}

  /** The losses of one engine.train call that ended at `step`; throws DIVERGED (non-retryable) at the first bad one. */
  add(step: number, losses: number[]): void {
    for (const [i, l] of losses.entries()) {
      if (!Number.isFinite(l) || l > this.limit) throw divergence(step - losses.length + i + 1, l, this.limit);
      this.first ??= l;
      this.last = l;
    }
  }
}

/**
 * The engine's per-step progress callback, forwarding at most one TrainProgress every `intervalMs` through `send`
 * (the workflow's internal signal; absent: nothing is sent). A failed send is only logged: progress is advisory.
 */
export function progressSender(o: {
  workflowId: string;
  totalSteps: number;
  startStep: number;
  intervalMs: number;
  send?: (workflowId: string, p: TrainProgress) => Promise<void>;
  committed: () => CheckpointRef | null;
  onStep: (step: number, loss: number) => void;
  log: (m: string) => void;
}): (p: { step: number; loss: number; tokensPerSec: number }) => void {
  const t0 = Date.now();
  let last = 0;
  return (p) => {
    o.onStep(p.step, p.loss);
    const now = Date.now();
    if (!o.send || now - last < o.intervalMs) return;
    last = now;
    const stepsPerSec = (p.step - o.startStep) / Math.max(1e-3, (now - t0) / 1000);
    o.send(o.workflowId, { step: p.step, totalSteps: o.totalSteps, loss: p.loss, tokensPerSec: p.tokensPerSec, stepsPerSec, lastCheckpoint: o.committed() })
      .catch((e) => o.log(`progress signal failed: ${(e as Error).message}`));
  };
}
