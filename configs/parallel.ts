// The parallel layout a FinetuneConfig resolves to: how many workers, which GPUs each drives, which global ranks
// they hold and which task queue each rank's worker polls. Pure functions over plain data (no zod, no node:
// imports), so the workflow bundle can import this file directly and stay deterministic.
import type { FinetuneConfig } from './schemas/index.js';

type Cfg = Pick<FinetuneConfig, 'parallelism' | 'temporal'>;

/** GPUs per worker, or null for 'all' (known only on the worker, from the GPUs it sees). */
export function devicesPerWorker(cfg: Pick<FinetuneConfig, 'parallelism'>): number | null {
  const d = cfg.parallelism.devices;
  return d === 'all' ? null : typeof d === 'number' ? d : d.length;
}

/** The CUDA ordinals a worker drives, given how many GPUs it sees (`visible`). Throws naming the field when short. */
export function localDevices(cfg: Pick<FinetuneConfig, 'parallelism'>, visible: number): number[] {
  const d = cfg.parallelism.devices;
  if (d === 'all') {
    if (visible < 1) throw new Error("parallelism.devices 'all': this worker sees no GPU");
    return Array.from({ length: visible }, (_, i) => i);
  }
  const list = typeof d === 'number' ? Array.from({ length: d }, (_, i) => i) : d;
  const missing = list.filter((o) => o >= visible);
  if (missing.length)
    throw new Error(`parallelism.devices ${JSON.stringify(d)} needs CUDA ordinal${missing.length > 1 ? 's' : ''} ${missing.join(', ')}, but this worker sees ${visible} GPU${visible === 1 ? '' : 's'}`);
  return list;
}

/** A worker's place in training: the world size (ranks over all workers), its first global rank, its devices. */
export interface WorkerLayout {
  worldSize: number;
  rankOffset: number;
  devices: number[];
}

/**
 * The layout of worker `rank` of `nodes` (default: the only worker) that sees `visible` GPUs: the cpu backend is one
 * device per worker; cuda drives parallelism.devices of this host, and every worker holds as many ranks as
 * parallelism.devices names (with 'all', one worker: the GPUs it sees). Throws naming the field when a GPU is missing.
 */
export function workerLayout(cfg: Pick<FinetuneConfig, 'parallelism'>, o: { backend: 'cpu' | 'cuda'; visible: number; rank?: number; nodes?: number }): WorkerLayout {
  const rank = o.rank ?? 0;
  const nodes = o.nodes ?? 1;
  const devices = o.backend === 'cpu' ? [0] : localDevices(cfg, o.visible);
  const per = o.backend === 'cpu' ? 1 : (devicesPerWorker(cfg) ?? devices.length);
  return { worldSize: nodes * per, rankOffset: rank * per, devices };
}

/** Global ranks (GPUs over all workers); with devices 'all' and one worker, the worker's visible GPU count. */
export function worldSizeOf(cfg: Pick<FinetuneConfig, 'parallelism'>, visible?: number): number {
  const per = devicesPerWorker(cfg) ?? visible ?? 1;
  return cfg.parallelism.nodes * per;
}

/**
 * Whether training goes through the rank path (a rendezvous on rank 0's worker, then one training activity per
 * worker on its own queue): several workers, or queues listed explicitly. Otherwise the single-worker path.
 */
export function usesRankPath(cfg: Cfg): boolean {
  return cfg.parallelism.nodes > 1 || cfg.temporal.rankTaskQueues !== undefined;
}

/** The task queue of each worker, rank 0 first. */
export function rankQueuesOf(cfg: Cfg): string[] {
  return cfg.temporal.rankTaskQueues ?? Array.from({ length: cfg.parallelism.nodes }, (_, r) => `${cfg.temporal.gpuTaskQueue}-rank-${r}`);
}

/** One line for people: `ZeRO-3, optimizer offload (delayed update), 2 workers x 4 GPUs = 8 ranks`. */
export function describeParallelism(cfg: Pick<FinetuneConfig, 'parallelism'>): string {
  const p = cfg.parallelism;
  const per = devicesPerWorker(cfg);
  const gpus = per === null ? 'all GPUs' : `${per} GPU${per === 1 ? '' : 's'}${Array.isArray(p.devices) ? ` [${p.devices.join(',')}]` : ''}`;
  const world = per === null ? '' : ` = ${p.nodes * per} rank${p.nodes * per === 1 ? '' : 's'}`;
  const offload = p.offload.optimizer === 'cpu' ? `optimizer offload to CPU${p.offload.delayedUpdate ? ' (delayed update)' : ''}` : 'no offload';
  return `ZeRO-${p.zeroStage}, ${offload}, ${p.nodes} worker${p.nodes === 1 ? '' : 's'} x ${gpus}${world}`;
}
