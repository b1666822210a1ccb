// The training loop of the `finetune` workflow: segments of training.segmentSteps steps until the last step, a
// stop, or a continue-as-new (workflows/README.md, "Durability" and "Multi-worker training"). One loop for every
// layout: training runs on a group of workers, and a single worker is a group of one.
//
// Per segment, the group trains fromStep → toStep and every member returns the same committed checkpoint:
//   - one worker (the default): a `trainSegment` on the shared GPU queue. Temporal retries it on whichever GPU
//     worker polls next (it resumes from the newest checkpoint on disk that verifies), and "checkpoint now" and
//     "stop" cancel it: it commits a checkpoint before it reports, and the loop goes on from there;
//   - several workers (parallelism.nodes > 1, or temporal.rankTaskQueues): once per group generation a
//     `rendezvous` on rank 0's queue, then one `trainRank` per worker queue with the same NCCL id. A rank is never
//     retried alone; when one fails, the others are cancelled (without checkpointing: a sharded checkpoint needs
//     every rank), the workflow picks the newest committed checkpoint that verifies and restarts the whole group
//     from it with a new id, at most temporal.maxRestarts times in a row.
// Each layout schedules its own activities (names, queues, order) exactly as the committed histories record them
// (test/histories/), so runs in flight replay without a patched() branch (workflows/README.md, "Changing this
// workflow"). Deterministic: only activity results and the config decide.
import * as wf from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { CheckpointRef, PreparedData, Rendezvous, SegmentResult, TrainSummary, ValidatedRun } from '../common/index.js';
import { rankQueuesOf, usesRankPath } from '../configs/parallel.js';
import { NON_RETRYABLE, bookkeepingOptions, rankOptions, rendezvousOptions, trainOptions } from './options.js';

/** Where training stands; carried across continue-as-new. */
export interface TrainState {
  step: number;
  lastCheckpoint: CheckpointRef | null;
  /** Group restarts in a row, without a completed segment between them. */
  restarts: number;
  /** Generation of the group; a new rendezvous increments it. */
  generation: number;
}

export interface TrainEnv {
  run: ValidatedRun;
  data: PreparedData;
  summary: TrainSummary;
  notes: string[];
  stopRequested(): boolean;
  /** The running segment's scope (one worker), for "checkpoint now" and "stop"; null between segments. */
  setSegmentScope(scope: wf.CancellationScope | null): void;
  /** After each segment, done or not. */
  onSegment(state: TrainState): void;
}

/**
 * Train until the last step or a stop ('done'), or until the history asks for a continue-as-new. When the run is
 * cancelled, the running segment has checkpointed (WAIT_CANCELLATION_COMPLETED): the notes record where it stands.
 */
export async function trainLoop(env: TrainEnv, s: TrainState): Promise<'done' | 'continue-as-new'> {
  try {
    return await segments(env, s);
  } catch (err) {
    if (wf.isCancellation(err)) {
      await wf.CancellationScope.nonCancellable(async () => {
        const latest = await wf.proxyActivities<Activities>({ ...bookkeepingOptions(env.run.cfg.temporal), summary: 'find the latest checkpoint' })
          .latestCheckpoint(env.run.checkpointRoot);
        env.notes.push(`cancelled at step ${latest.checkpoint?.step ?? s.step}; last checkpoint ${latest.checkpoint?.dir ?? 'none'}`);
        wf.setCurrentDetails(`**cancelled** at step ${latest.checkpoint?.step ?? s.step}`);
      });
    }
    throw err;
  }
}

async function segments(env: TrainEnv, s: TrainState): Promise<'done' | 'continue-as-new'> {
  const { cfg } = env.run;
  const total = env.data.totalSteps;
  const group = usesRankPath(cfg) ? new Ranks(env, s) : new OneWorker(env, s);
  while (s.step < total && !env.stopRequested()) {
    const toStep = Math.min(total, s.step + cfg.training.segmentSteps);
    try {
      const results = await group.segment(toStep);
      const r0 = results[0]!;
      s.step = r0.step;
      s.lastCheckpoint = r0.checkpoint;
      const sum = env.summary;
      if (sum.firstLoss === null && r0.firstLoss !== null) sum.firstLoss = r0.firstLoss;
      if (r0.lastLoss !== null) sum.lastLoss = r0.lastLoss;
      sum.tokens += results.reduce((a, r) => a + r.tokens, 0);
      sum.tokensPerSec = results.reduce((a, r) => a + r.tokensPerSec, 0) || sum.tokensPerSec;
      // A start loaded from disk that the group did not already record as a restart: a retry, another worker.
      if (r0.resume && !group.restarted) {
        sum.resumes.push(r0.resume);
        sum.resumedFromSteps.push(r0.resume.atStep);
        for (const k of r0.resume.skipped) env.notes.push(`fell back past ${k.dir}: ${k.reason}`);
        env.notes.push(`resumed at step ${r0.resume.atStep} (${group.attemptName} ${r0.resume.attempt})${r0.resume.cause ? `: ${r0.resume.cause}` : ''}`);
      }
      group.restarted = false;
      s.restarts = 0; // progress: the budget is for restarts in a row, as Temporal's retries are per activity
    } catch (err) {
      if (wf.CancellationScope.current().consideredCancelled) throw err; // the run itself was cancelled
      await group.recover(err);
    }
    env.onSegment(s);
    if (s.step < total && !env.stopRequested() && (wf.workflowInfo().continueAsNewSuggested || wf.workflowInfo().historyLength > cfg.temporal.continueAsNewAfterEvents))
      return 'continue-as-new';
  }
  return 'done';
}

/** The newest committed checkpoint that verifies, with a note for each corrupt one moved aside. */
async function latestCheckpoint(env: TrainEnv): Promise<{ checkpoint: CheckpointRef | null; skipped: { dir: string; reason: string }[] }> {
  const latest = await wf.proxyActivities<Activities>({ ...bookkeepingOptions(env.run.cfg.temporal), summary: 'find the latest checkpoint' })
    .latestCheckpoint(env.run.checkpointRoot);
  for (const k of latest.skipped) env.notes.push(`fell back past ${k.dir}: ${k.reason}`);
  return latest;
}

interface Group {
  /** The segment's results, one per member, rank 0 first. */
  segment(toStep: number): Promise<SegmentResult[]>;
  /** After a failed or cancelled segment: rethrow, or set the state to go on from. */
  recover(err: unknown): Promise<void>;
  /** The next segment's start was recorded as a restart already. */
  restarted: boolean;
  /** What a resume's `attempt` counts. */
  readonly attemptName: string;
}

/** One worker: a trainSegment on the shared GPU queue, retried by Temporal, cancelled by "checkpoint now" and "stop". */
class OneWorker implements Group {
  restarted = false;
  readonly attemptName = 'attempt';

  constructor(private readonly env: TrainEnv, private readonly s: TrainState) {}

  async segment(toStep: number): Promise<SegmentResult[]> {
    const { env, s } = this;
    const scope = new wf.CancellationScope();
    env.setSegmentScope(scope);
    try {
      const seg = await scope.run(() =>
        wf.proxyActivities<Activities>({ ...trainOptions(env.run.cfg.temporal), summary: `train steps ${s.step}→${toStep}` }).trainSegment({
          cfg: env.run.cfg, runDir: env.run.runDir, checkpointRoot: env.run.checkpointRoot, dataDir: env.data.dataDir,
          fromStep: s.step, toStep, totalSteps: env.data.totalSteps, resumeFrom: s.lastCheckpoint,
        }),
      );
      return [seg];
    } finally {
      env.setSegmentScope(null);
    }
  }

  async recover(err: unknown): Promise<void> {
    // A segment cancelled by "checkpoint now" or "stop" has committed a checkpoint; training goes on from it.
    // Anything else failed after Temporal's retries: the run fails.
    if (!wf.isCancellation(err)) throw err;
    const { checkpoint } = await latestCheckpoint(this.env);
    if (checkpoint) {
      this.s.step = checkpoint.step;
      this.s.lastCheckpoint = checkpoint;
    }
  }
}

/** Several workers: a rendezvous per generation, one trainRank per worker queue; a failure restarts them all. */
class Ranks implements Group {
  restarted = false;
  readonly attemptName = 'generation';
  private group: Rendezvous | null = null;
  private readonly queues: string[];

  constructor(private readonly env: TrainEnv, private readonly s: TrainState) {
    this.queues = rankQueuesOf(env.run.cfg);
  }

  async segment(toStep: number): Promise<SegmentResult[]> {
    const { env, s, queues } = this;
    const q = env.run.cfg.temporal;
    if (!this.group) {
      s.generation++;
      this.group = await wf.proxyActivities<Activities>({ ...rendezvousOptions(q, queues[0]!), summary: `rendezvous, generation ${s.generation}` })
        .rendezvous({ nodes: queues.length, generation: s.generation })
        .catch((err: unknown) => {
          if (wf.isCancellation(err)) throw err;
          if (nonRetryable(err))
            throw wf.ApplicationFailure.create({ message: `rendezvous on ${queues[0]}: ${describe(err)}`, type: typeOf(err), nonRetryable: true, cause: err as Error });
          throw new GroupFailure(0, `rendezvous on ${queues[0]}: ${describe(err)}`);
        });
      env.notes.push(`group generation ${this.group.generation}: ${queues.length} worker${queues.length > 1 ? 's' : ''}, rank 0 on ${this.group.host} (pid ${this.group.pid})`);
    }
    return this.runRanks(this.group, toStep);
  }

  /** One segment on every rank; the first failure cancels the others, and is thrown once all have settled. */
  private async runRanks(group: Rendezvous, toStep: number): Promise<SegmentResult[]> {
    const { env, s, queues } = this;
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
    const ends = new Set(results.map((r) => `${r.step}:${r.checkpoint.dir}`));
    if (ends.size !== 1)
      throw wf.ApplicationFailure.retryable(`ranks disagree on where the segment ended: ${[...ends].join(', ')}`, 'RANKS_DIVERGED');
    return results;
  }

  async recover(err: unknown): Promise<void> {
    if (!(err instanceof GroupFailure)) throw err; // a non-retryable rank failure, or a bug
    const { env, s, queues } = this;
    const q = env.run.cfg.temporal;
    this.group = null;
    this.restarted = true;
    s.restarts++;
    if (s.restarts > q.maxRestarts)
      throw wf.ApplicationFailure.nonRetryable(`multi-worker training failed ${s.restarts} times in a row (temporal.maxRestarts ${q.maxRestarts}); last: ${err.message}`, 'RANKS_FAILED');
    const { checkpoint: latest, skipped } = await latestCheckpoint(env);
    s.step = latest?.step ?? 0;
    s.lastCheckpoint = latest;
    env.summary.resumes.push({ atStep: s.step, attempt: s.restarts, from: latest, skipped });
    env.summary.resumedFromSteps.push(s.step);
    env.notes.push(`restart ${s.restarts}/${q.maxRestarts} of all ${queues.length} rank${queues.length > 1 ? 's' : ''} from ${latest ? `checkpoint step ${s.step}` : 'the initial model'}: ${err.message}`);
    await wf.sleep(Math.min(60_000, 1000 * 2 ** (s.restarts - 1)));
  }
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
