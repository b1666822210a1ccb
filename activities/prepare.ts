// prepareData: load the corpus, tokenize it into blockSize sequences and write Parquet shards, through
// datasets/prepareData, which names its output by a fingerprint of the inputs, reuses a finished result and
// commits atomically behind a DONE marker, so a retry after a killed worker reuses or redoes the work and never
// sees a half-written directory. Returns a manifest summary and the step plan, never the data.
import { Context } from '@temporalio/activity';
import { join } from 'node:path';
import type { FinetuneConfig } from '../configs/index.js';
import { prepareData as prepare } from '../datasets/index.js';
import { classify } from './lib/failures.js';
import type { PrepareHeartbeat } from './lib/heartbeat.js';
import type { PreparedData, SplitSummary } from '../common/index.js';

export type { PreparedData, SplitSummary } from '../common/index.js';

/** Where prepared data lives: content-addressed under the storage root, shared by every run that matches. */
export function dataRoot(cfg: FinetuneConfig): string {
  return join(cfg.storage.root, 'data');
}

export function planSteps(cfg: FinetuneConfig, trainSequences: number): { totalSteps: number; tokensPerStep: number } {
  const t = cfg.training;
  // gradAccumSteps counts micro-batches over all GPUs (each rank takes every world-size-th), so a step sees the
  // same sequences whatever the world size.
  const seqPerStep = t.microBatchSize * t.gradAccumSteps;
  const totalSteps = t.maxSteps > 0 ? t.maxSteps : Math.max(1, Math.ceil((t.epochs * trainSequences) / seqPerStep));
  return { totalSteps, tokensPerStep: seqPerStep * cfg.preprocess.blockSize };
}

export async function prepareData(cfg: FinetuneConfig): Promise<PreparedData> {
  const ctx = Context.current();
  const stageMs: Record<string, number> = {};
  let stage = '';
  let since = Date.now();
  const onProgress = (p: { stage: string; bytes: number; totalBytes?: number; sequences: number }) => {
    if (p.stage !== stage) {
      if (stage) stageMs[stage] = (stageMs[stage] ?? 0) + Date.now() - since;
      stage = p.stage;
      since = Date.now();
    }
    const hb: PrepareHeartbeat = { kind: 'prepare', stage: p.stage, bytes: p.bytes, totalBytes: p.totalBytes ?? null, sequences: p.sequences };
    ctx.heartbeat(hb);
  };
  ctx.heartbeat({ kind: 'prepare', stage: 'start', bytes: 0, totalBytes: null, sequences: 0 } satisfies PrepareHeartbeat);
  try {
    const r = await prepare(cfg, { outRoot: dataRoot(cfg), onProgress, signal: ctx.cancellationSignal });
    if (stage) stageMs[stage] = (stageMs[stage] ?? 0) + Date.now() - since;
    const m = r.manifest;
    const split = (s: (typeof m.splits)['train']): SplitSummary =>
      ({ sequences: s.sequences, tokens: s.tokens, shards: s.shards.length, ...(s.heldOutFromTrain ? { heldOutFromTrain: s.heldOutFromTrain } : {}) });
    const train = split(m.splits.train);
    if (train.sequences === 0)
      throw classify(Object.assign(new Error(`the train split is empty after preprocessing (${r.dir}); check data.train and preprocess.blockSize`), { name: 'DataError', code: 'BAD_INPUT' }), 'prepare');
    return {
      dataDir: r.dir, fingerprint: m.fingerprint, reused: r.reused, blockSize: m.blockSize,
      train, validation: split(m.splits.validation), ...planSteps(cfg, train.sequences), stageMs, warnings: m.warnings,
      ...(m.splits.train.packing ? { packing: m.splits.train.packing } : {}),
    };
  } catch (e) {
    throw classify(e, 'prepare data');
  }
}
