// Training on several workers (parallelism.nodes > 1, or temporal.rankTaskQueues set): Temporal is the rendezvous.
//   rendezvous   runs on rank 0's worker queue and returns a fresh NCCL unique id (it names a bootstrap socket of
//                that process, which is why rank 0 trains there too);
//   trainRank    one per worker, on that worker's own queue: the training activity (activities/train.ts) as one
//                rank of the group, joined with (worldSize, rankOffset, id).
// A rank never retries alone (a lone rank cannot rejoin a communicator): the workflow cancels every rank when one
// fails and restarts the whole group, with a new id, from the checkpoint IT chose (so all ranks load the same one).
// This file holds what only a rank needs: the rendezvous, joining the group, and a bounded wait on cancellation.
import { hostname } from 'node:os';
import { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import type { Rendezvous, RendezvousInput, TrainRankInput } from '../common/index.js';
import { workerLayout } from '../configs/index.js';
import { quarantine } from './checkpoints.js';
import type { EngineCache, Start } from './engines.js';
import { classify } from './lib/failures.js';
import { native } from './lib/native.js';

export type { Rendezvous, RendezvousInput } from '../common/index.js';

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

/** How long a cancelled rank waits for its engine to stop before it reports anyway (a collective may hang). */
const ABORT_GRACE_MS = 30_000;

/** Cache key: an engine belongs to one generation of one group (its communicator dies with the generation). */
export function groupKey(input: TrainRankInput): string {
  return `rank ${input.rank}/${input.nodes} generation ${input.group.generation} ${input.group.ncclId ?? input.group.pid}`;
}

/**
 * This rank's engine: the cached one when it is this group's state at `resumeFrom`, else loaded from exactly that
 * checkpoint (or built fresh) with this worker's place in the group. Throws BAD_CHECKPOINT when the checkpoint
 * holds another step than the workflow expected.
 */
export async function joinGroup(deps: { engines: EngineCache; backend?: 'cpu' | 'cuda' }, input: TrainRankInput, where: string): Promise<Start> {
  const { cfg, checkpointRoot: root, resumeFrom, rank, nodes, group } = input;
  const key = groupKey(input);
  const cached = resumeFrom ? deps.engines.take(root, resumeFrom, { forTraining: true, key }) : null;
  if (cached) return { engine: cached.engine, dataDir: cached.dataDir, start: resumeFrom, resume: null, fromDisk: false };
  deps.engines.evict();
  const { Engine, engineAvailable } = await native();
  const backend = deps.backend ?? cfg.training.backend;
  const visible = engineAvailable().cudaDevices ?? 0;
  let layout;
  try {
    layout = workerLayout(cfg, { backend: backend === 'cpu' || (backend === 'auto' && visible === 0) ? 'cpu' : 'cuda', visible, rank, nodes });
  } catch (e) {
    throw ApplicationFailure.create({ message: `rank ${rank} on ${hostname()}: ${(e as Error).message}`, type: 'BAD_CONFIG', nonRetryable: true });
  }
  const opts = { backend: deps.backend, parallel: { ...layout, ...(group.ncclId ? { ncclId: group.ncclId } : {}) } };
  let engine;
  try {
    engine = resumeFrom ? await Engine.fromCheckpoint(resumeFrom.dir, cfg, opts) : await Engine.create(cfg, opts);
  } catch (e) {
    // Corrupt content (not a passing I/O error): move it aside, so the group's restart picks the one before it.
    if (resumeFrom && (e as { code?: string }).code === 'BAD_CHECKPOINT') await quarantine(resumeFrom.dir);
    throw e;
  }
  if (resumeFrom && engine.step !== resumeFrom.step) {
    const held = engine.step;
    engine.dispose();
    throw ApplicationFailure.create({ message: `${where}: checkpoint ${resumeFrom.dir} holds step ${held}, the workflow expected ${resumeFrom.step}`, type: 'BAD_CHECKPOINT' });
  }
  const resume = resumeFrom
    ? { atStep: resumeFrom.step, attempt: group.generation, from: resumeFrom, skipped: [], cause: `the group (generation ${group.generation}) started from the committed checkpoint` }
    : null;
  return { engine, dataDir: null, start: resumeFrom, resume, fromDisk: true };
}

/**
 * The engine call, unless the activity is cancelled and the call has not returned ABORT_GRACE_MS later: a rank
 * whose peer died can sit in a collective, and the group must restart without waiting for it.
 */
export function boundedByCancel<T>(call: Promise<T>, signal: AbortSignal, where: string, log: (m: string) => void): Promise<T> {
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
