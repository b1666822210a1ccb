// Multi-worker training (parallelism.nodes > 1, or temporal.rankTaskQueues set): Temporal is the rendezvous.
//   rendezvous   runs on rank 0's worker queue and returns a fresh NCCL unique id (it names a bootstrap socket of
//                that process, which is why rank 0 trains there too);
//   trainRank    one per worker, on that worker's own queue: joins the group with (worldSize, rankOffset, id),
//                trains the segment in lockstep with the others and commits sharded checkpoints collectively.
// A rank never retries alone (a lone rank cannot rejoin a communicator): the workflow cancels every rank when one
// fails and restarts the whole group, with a new id, from the checkpoint IT chose (so all ranks load the same one).
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { devicesPerWorker, localDevices, type FinetuneConfig } from '../configs/index.js';
import type { Engine, ParallelOptions } from '../native/index.js';
import type { CheckpointRef, ResumeRecord, TrainProgress } from '../workflows/messages.js';
import { checkpointDir, pruneCheckpoints, quarantine } from './checkpoints.js';
import type { EngineCache } from './engines.js';
import { loadSplit } from './lib/data.js';
import { classify } from './lib/failures.js';
import { LossLog, nextGroup, progressSender } from './lib/loop.js';
import { appendMetrics, startMetrics, stepRecords } from './lib/metrics.js';
import { native } from './lib/native.js';
import type { SegmentResult } from './train.js';

export interface RendezvousInput {
  /** Workers in the group; one needs no NCCL id (its engine makes its own communicator for its GPUs). */
  nodes: number;
  /** Increases with every (re)start of the group; logged so operators can follow restarts. */
  generation: number;
}

export interface Rendezvous {
  /** NCCL unique id (256 hex digits), null for a single worker. */
  ncclId: string | null;
  /** Where rank 0 runs (for the notes and the logs). */
  host: string;
  pid: number;
  generation: number;
}

/** On rank 0's worker: a fresh NCCL unique id for this generation of the group. */
export async function rendezvous(input: RendezvousInput): Promise<Rendezvous> {
  const ctx = Context.current();
  try {
    const ncclId = input.nodes > 1 ? (await native()).ncclUniqueId() : null;
    ctx.log.info(`rendezvous: generation ${input.generation}, ${input.nodes} worker(s), rank 0 on ${hostname()} pid ${process.pid}`);
    return { ncclId, host: hostname(), pid: process.pid, generation: input.generation };
  } catch (e) {
    throw classify(e, 'rendezvous on rank 0');
  }
}

export interface TrainRankInput {
  cfg: FinetuneConfig;
  checkpointRoot: string;
  dataDir: string;
  /** Worker index (0 = the one that made the NCCL id). */
  rank: number;
  nodes: number;
  group: Rendezvous;
  fromStep: number;
  toStep: number;
  totalSteps: number;
  /** The checkpoint every rank starts from, chosen by the workflow (null: the initial model). */
  resumeFrom: CheckpointRef | null;
}

export interface RankDeps {
  engines: EngineCache;
  backend?: 'cpu' | 'cuda';
  signalProgress?: (workflowId: string, p: TrainProgress) => Promise<void>;
  progressIntervalMs: number;
}

/** How long a cancelled rank waits for its engine to stop before it reports anyway (a collective may hang). */
const ABORT_GRACE_MS = 30_000;

/** This worker's place in the group: its GPUs and global ranks. */
async function layout(deps: RankDeps, input: TrainRankInput): Promise<ParallelOptions> {
  const { cfg, rank, nodes, group } = input;
  const { engineAvailable } = await native();
  const backend = deps.backend ?? cfg.training.backend;
  const visible = engineAvailable().cudaDevices ?? 0;
  let devices: number[];
  if (backend === 'cpu' || (backend === 'auto' && visible === 0)) devices = [0];
  else {
    try {
      devices = localDevices(cfg, visible);
    } catch (e) {
      throw ApplicationFailure.create({ message: `rank ${rank} on ${hostname()}: ${(e as Error).message}`, type: 'BAD_CONFIG', nonRetryable: true });
    }
  }
  const per = devicesPerWorker(cfg) ?? devices.length;
  return { worldSize: nodes * per, rankOffset: rank * per, devices, ...(group.ncclId ? { ncclId: group.ncclId } : {}) };
}

/** The engine of this rank: the cached one when it is this group's state at `resumeFrom`, else loaded or built. */
async function startEngine(deps: RankDeps, input: TrainRankInput, par: ParallelOptions): Promise<{ engine: Engine; dataDir: string | null; loaded: boolean }> {
  const { cfg, checkpointRoot: root, resumeFrom } = input;
  const key = groupKey(input);
  const cached = resumeFrom ? deps.engines.take(root, resumeFrom, { forTraining: true, key }) : null;
  if (cached) return { engine: cached.engine, dataDir: cached.dataDir, loaded: false };
  deps.engines.evict();
  const { Engine } = await native();
  const opts = { backend: deps.backend, parallel: par };
  if (!resumeFrom) return { engine: await Engine.create(cfg, opts), dataDir: null, loaded: true };
  try {
    return { engine: await Engine.fromCheckpoint(resumeFrom.dir, cfg, opts), dataDir: null, loaded: true };
  } catch (e) {
    // Corrupt content (not a passing I/O error): move it aside, so the group's restart picks the one before it.
    if ((e as { code?: string }).code === 'BAD_CHECKPOINT') await quarantine(resumeFrom.dir);
    throw e;
  }
}

/** Cache key: an engine belongs to one generation of one group (its communicator dies with the generation). */
function groupKey(input: TrainRankInput): string {
  return `rank ${input.rank}/${input.nodes} generation ${input.group.generation} ${input.group.ncclId ?? input.group.pid}`;
}

export async function trainRank(deps: RankDeps, input: TrainRankInput): Promise<SegmentResult> {
  const ctx = Context.current();
  const { cfg, toStep, totalSteps, checkpointRoot, rank } = input;
  const signal = ctx.cancellationSignal;
  const workflowId = ctx.info.workflowExecution?.workflowId ?? '';
  const where = `rank ${rank}/${input.nodes} (generation ${input.group.generation}) train steps ${input.fromStep}→${toStep}`;
  let committed: CheckpointRef | null = input.resumeFrom;
  let step = committed?.step ?? 0;
  let loss: number | null = null;
  const beat = () => ctx.heartbeat({ kind: 'train', committed, step, loss, rank });
  const keepalive = setInterval(beat, Math.max(200, (ctx.info.heartbeatTimeoutMs ?? 60_000) / 4));
  let engine: Engine | null = null;
  try {
    beat();
    const par = await layout(deps, input);
    const s = await startEngine(deps, input, par);
    engine = s.engine;
    step = engine.step;
    if (input.resumeFrom && step !== input.resumeFrom.step)
      throw ApplicationFailure.create({ message: `${where}: checkpoint ${input.resumeFrom.dir} holds step ${step}, the workflow expected ${input.resumeFrom.step}`, type: 'BAD_CHECKPOINT' });
    if (s.dataDir !== input.dataDir) engine.setTrainData(await loadSplit(input.dataDir, 'train', signal));
    // Rank 0 keeps the run's metrics log (every rank sees the same global loss); runDir holds checkpoints/.
    const runDir = dirname(checkpointRoot);
    const build = (await native()).engineBuild();
    const resume: ResumeRecord | null = s.loaded && input.resumeFrom
      ? { atStep: input.resumeFrom.step, attempt: input.group.generation, from: input.resumeFrom, skipped: [], cause: `the group (generation ${input.group.generation}) started from the committed checkpoint` }
      : null;
    if (rank === 0) await startMetrics(runDir, { kind: 'start', step, attempt: input.group.generation, time: new Date().toISOString(), workflowId, resume, build }, s.loaded);
    beat();

    // Checkpoints are collective (every rank writes its shard, then one manifest commits them), so ranks must
    // decide to save at the same step: only step-based triggers here (checkpoint.everyMinutes would differ per rank).
    const save = async () => {
      const dir = checkpointDir(checkpointRoot, step);
      // Nothing generation-specific in `extra`: a stale rank of the previous generation that commits the same step
      // before its cancellation lands writes the same bytes (workflows/README.md, "Exact resume").
      await engine!.saveCheckpoint(dir, { workflowId, totalSteps, engine: build });
      committed = { dir, step };
      beat();
      if (rank === 0) await pruneCheckpoints(checkpointRoot, cfg.checkpoint.keepLast);
    };
    const losses = new LossLog(cfg.training.divergenceLoss);
    let tokens = 0;
    const t0 = Date.now();
    const onProgress = progressSender({
      workflowId, totalSteps, startStep: step, intervalMs: deps.progressIntervalMs,
      send: rank === 0 ? deps.signalProgress : undefined, // one progress stream per run: rank 0's (all see the same loss)
      committed: () => committed, onStep: (at, l) => ((step = at), (loss = l), beat()), log: (m) => ctx.log.debug(m),
    });
    while (step < toStep) {
      if (signal.aborted) break;
      const { end, checkpointAt } = nextGroup(cfg, step, toStep);
      const from = step;
      const g0 = Date.now();
      const r = await boundedByCancel(engine.train(end - step, { totalSteps, signal, onProgress }), signal, where, (m) => ctx.log.error(m));
      step = r.step;
      tokens += r.tokens;
      losses.add(step, r.losses);
      if (rank === 0) await appendMetrics(runDir, stepRecords(from, r, new Map(), Date.now() - g0));
      loss = losses.last;
      if (r.aborted) break;
      if (step === checkpointAt && step < toStep) await save();
    }
    // Cancelled: another rank failed or the run was cancelled. No checkpoint: a collective save needs every rank,
    // and the workflow restarts the group from the last committed one.
    if (signal.aborted) throw new CancelledFailure(`${where}: cancelled at step ${step}; the group restarts from ${committed?.dir ?? 'the initial model'}`);
    if (committed?.step !== step || !committed) await save();
    const elapsed = (Date.now() - t0) / 1000;
    deps.engines.put(checkpointRoot, committed!, engine, input.dataDir, true, groupKey(input));
    engine = null; // owned by the cache now
    return {
      step, checkpoint: committed!, firstLoss: losses.first, lastLoss: loss, tokens,
      tokensPerSec: elapsed > 0 ? Math.round(tokens / elapsed) : 0,
      resume,
    };
  } catch (e) {
    throw classify(e, where);
  } finally {
    clearInterval(keepalive);
    engine?.dispose(); // a call still running (stuck) frees the model when it returns
  }
}

/**
 * The engine call, unless the activity is cancelled and the call has not returned ABORT_GRACE_MS later: a rank
 * whose peer died can sit in a collective, and the group must restart without waiting for it.
 */
function boundedByCancel<T>(call: Promise<T>, signal: AbortSignal, where: string, log: (m: string) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      timer = setTimeout(() => {
        log(`${where}: the engine did not stop within ${ABORT_GRACE_MS / 1000} s of the cancellation (a collective waiting for a dead rank?); reporting the cancellation anyway`);
        reject(new CancelledFailure(`${where}: cancelled; the engine was still running after ${ABORT_GRACE_MS / 1000} s`));
      }, ABORT_GRACE_MS);
      timer.unref();
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    call.then(resolve, reject).finally(() => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    });
  });
}
