// Training on several workers with Temporal as the rendezvous (workflows/README.md, "Multi-worker training").
// Per segment: (once per group generation) `rendezvous` on rank 0's queue → one `trainRank` per worker queue, all
// with the same NCCL id → every rank returns the same committed checkpoint. When any rank fails, the others are
// cancelled (they stop without checkpointing: a sharded checkpoint needs every rank), the workflow picks the newest
// committed checkpoint that verifies, and the whole group restarts from it with a new id. Deterministic: only
// activity results and the config decide what happens.
import * as wf from '@temporalio/workflow';
import { rankQueuesOf } from '../configs/parallel.js';
import type { Activities, PreparedData, Rendezvous, SegmentResult, ValidatedRun } from '../activities/index.js';
import type { CheckpointRef, TrainSummary } from './messages.js';
import { NON_RETRYABLE, bookkeepingOptions, rankOptions, rendezvousOptions } from './options.js';

export interface RankLoop {
  step: number;
  lastCheckpoint: CheckpointRef | null;
  /** Group restarts in a row, without a completed segment between them (carried across continue-as-new). */
  restarts: number;
  /** Generation of the group; a new rendezvous increments it. */
  generation: number;
}

export interface RankLoopEnv {
  run: ValidatedRun;
  data: PreparedData;
  summary: TrainSummary;
  notes: string[];
  stopRequested(): boolean;
  /** After each segment: true when the workflow should continue as new now. */
  shouldContinueAsNew(step: number): boolean;
  onSegment(step: number): void;
}

/** Train on every rank until done, stopped or due for continue-as-new; failures restart the whole group. */
export async function trainRanks(env: RankLoopEnv, s: RankLoop): Promise<'done' | 'continue-as-new'> {
  const { cfg } = env.run;
  const queues = rankQueuesOf(cfg);
  const q = cfg.temporal;
  const cpu = wf.proxyActivities<Activities>({ ...bookkeepingOptions(q), summary: 'find the latest checkpoint' });
  let group: Rendezvous | null = null;
  let restarted = false; // the next segment loads from disk because of a restart (already recorded)
  while (s.step < env.data.totalSteps && !env.stopRequested()) {
    const toStep = Math.min(env.data.totalSteps, s.step + cfg.training.segmentSteps);
    try {
      if (!group) {
        s.generation++;
        group = await wf.proxyActivities<Activities>({ ...rendezvousOptions(q, queues[0]!), summary: `rendezvous, generation ${s.generation}` })
          .rendezvous({ nodes: queues.length, generation: s.generation })
          .catch((err: unknown) => {
            if (wf.isCancellation(err)) throw err;
            if (nonRetryable(err))
              throw wf.ApplicationFailure.create({ message: `rendezvous on ${queues[0]}: ${describe(err)}`, type: typeOf(err), nonRetryable: true, cause: err as Error });
            throw new GroupFailure(0, `rendezvous on ${queues[0]}: ${describe(err)}`);
          });
        env.notes.push(`group generation ${group.generation}: ${queues.length} worker${queues.length > 1 ? 's' : ''}, rank 0 on ${group.host} (pid ${group.pid})`);
      }
      const results = await runGroup(env, queues, group, s, toStep);
      const r0 = results[0]!;
      s.step = r0.step;
      s.lastCheckpoint = r0.checkpoint;
      const sum = env.summary;
      if (sum.firstLoss === null && r0.firstLoss !== null) sum.firstLoss = r0.firstLoss;
      if (r0.lastLoss !== null) sum.lastLoss = r0.lastLoss;
      sum.tokens += results.reduce((a, r) => a + r.tokens, 0);
      sum.tokensPerSec = results.reduce((a, r) => a + r.tokensPerSec, 0) || sum.tokensPerSec;
      // A segment that loaded its start from disk without a restart: a worker was replaced between segments.
      if (r0.resume && !restarted) {
        sum.resumes.push(r0.resume);
        sum.resumedFromSteps.push(r0.resume.atStep);
        env.notes.push(`rank 0 had no live engine and loaded checkpoint step ${r0.resume.atStep} from disk`);
      }
      restarted = false;
      s.restarts = 0; // progress: the budget is for restarts in a row, as Temporal's retries are per activity
    } catch (err) {
      if (wf.CancellationScope.current().consideredCancelled) throw err; // the run itself was cancelled
      if (!(err instanceof GroupFailure)) throw err; // a non-retryable rank failure, or a bug
      group = null;
      restarted = true;
      s.restarts++;
      const why = err.message;
      if (s.restarts > q.maxRestarts)
        throw wf.ApplicationFailure.nonRetryable(`multi-worker training failed ${s.restarts} times in a row (temporal.maxRestarts ${q.maxRestarts}); last: ${why}`, 'RANKS_FAILED');
      const latest = await cpu.latestCheckpoint(env.run.checkpointRoot);
      for (const k of latest.skipped) env.notes.push(`fell back past ${k.dir}: ${k.reason}`);
      s.step = latest.checkpoint?.step ?? 0;
      s.lastCheckpoint = latest.checkpoint;
      env.summary.resumes.push({ atStep: s.step, attempt: s.restarts, from: latest.checkpoint, skipped: latest.skipped });
      env.summary.resumedFromSteps.push(s.step);
      env.notes.push(`restart ${s.restarts}/${q.maxRestarts} of all ${queues.length} rank${queues.length > 1 ? 's' : ''} from ${latest.checkpoint ? `checkpoint step ${s.step}` : 'the initial model'}: ${why}`);
      await wf.sleep(Math.min(60_000, 1000 * 2 ** (s.restarts - 1)));
    }
    env.onSegment(s.step);
    if (s.step < env.data.totalSteps && !env.stopRequested() && env.shouldContinueAsNew(s.step)) return 'continue-as-new';
  }
  return 'done';
}

/** One segment on every rank; the first failure cancels the others, and is thrown once all have settled. */
async function runGroup(env: RankLoopEnv, queues: string[], group: Rendezvous, s: RankLoop, toStep: number): Promise<SegmentResult[]> {
  const { cfg } = env.run;
  const scope = new wf.CancellationScope();
  let first: { rank: number; err: unknown } | null = null;
  const settled = await scope.run(() => {
    const ranks = queues.map((queue, rank) =>
      wf.proxyActivities<Activities>({ ...rankOptions(cfg.temporal, queue), summary: `rank ${rank}: train steps ${s.step}→${toStep}` }).trainRank({
        cfg, checkpointRoot: env.run.checkpointRoot, dataDir: env.data.dataDir, rank, nodes: queues.length, group,
        fromStep: s.step, toStep, totalSteps: env.data.totalSteps, resumeFrom: s.lastCheckpoint,
      }),
    );
    ranks.forEach((p, rank) =>
      p.catch((err) => {
        if (first) return;
        first = { rank, err };
        scope.cancel();
      }),
    );
    return Promise.allSettled(ranks);
  });
  const failed = first as { rank: number; err: unknown } | null;
  if (failed) {
    if (wf.CancellationScope.current().consideredCancelled) throw failed.err; // the run was cancelled: not a failure
    // Prefer a failure no restart can fix (bad config, out of memory, divergence) over the cancellations it caused.
    const fatalRank = settled.findIndex((r) => r.status === 'rejected' && nonRetryable(r.reason));
    if (fatalRank >= 0) {
      const err = (settled[fatalRank] as PromiseRejectedResult).reason;
      throw wf.ApplicationFailure.create({ message: `rank ${fatalRank}: ${describe(err)}`, type: typeOf(err), nonRetryable: true, cause: err as Error });
    }
    throw new GroupFailure(failed.rank, describe(failed.err));
  }
  const results = settled.map((r) => (r as PromiseFulfilledResult<SegmentResult>).value);
  const steps = new Set(results.map((r) => `${r.step}:${r.checkpoint.dir}`));
  if (steps.size !== 1)
    throw wf.ApplicationFailure.retryable(`ranks disagree on where the segment ended: ${[...steps].join(', ')}`, 'RANKS_DIVERGED');
  return results;
}

/** A rank failed in a way a restart of the group may fix (dead worker, device or I/O error, rendezvous lost). */
class GroupFailure extends Error {
  constructor(readonly rank: number, why: string) {
    super(`rank ${rank}: ${why}`);
  }
}

function typeOf(err: unknown): string {
  const c = err instanceof wf.ActivityFailure ? err.cause : err;
  return c instanceof wf.ApplicationFailure && c.type ? c.type : 'RANK_FAILED';
}

function nonRetryable(err: unknown): boolean {
  const c = err instanceof wf.ActivityFailure ? err.cause : err;
  return c instanceof wf.ApplicationFailure && (c.nonRetryable || NON_RETRYABLE.includes(c.type ?? ''));
}

function describe(err: unknown): string {
  const e = err as { message?: string; cause?: { message?: string; cause?: { message?: string } } };
  return e.cause?.cause?.message ?? e.cause?.message ?? e.message ?? String(err);
}
