// trainSegment and the stages after it, on the CPU backend in a mock activity environment (no server): checkpoint
// schedule, the per-worker engine cache, resume on a new worker, fallback past a corrupt checkpoint,
// cancellation that commits before it reports, non-retryable divergence, export/evaluate/generate.
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { createActivities, type PreparedData, type TrainSegmentInput } from '../../activities/index.js';
import { quarantineRoot } from '../../activities/checkpoints.js';
import { reportFromMetrics } from '../../activities/finalize.js';
import { readMetrics } from '../../activities/lib/metrics.js';
import { parseConfig, type FinetuneConfig } from '../../configs/index.js';
import { listCheckpoints } from '../../native/index.js';

const run = <F extends (...a: any[]) => Promise<any>>(env: MockActivityEnvironment, fn: F, ...args: Parameters<F>) => env.run(fn, ...args) as ReturnType<F>;

let root: string;
let cfg: FinetuneConfig;
let data: PreparedData;

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'ft-train-'));
  const docs = Array.from({ length: 40 }, (_, i) => JSON.stringify({ text: `Call me Ishmael ${i}. Some years ago, never mind how long precisely, I went to sea. `.repeat(3) }));
  writeFileSync(join(root, 'c.jsonl'), docs.join('\n'));
  cfg = parseConfig({
    name: 'unit', storage: { root }, data: { train: { type: 'jsonl', path: join(root, 'c.jsonl') }, validationFraction: 0.1 },
    preprocess: { blockSize: 16 }, model: { nLayer: 1, nHead: 2, nEmbd: 16, nPositions: 16 },
    training: { backend: 'cpu', microBatchSize: 2, maxSteps: 15, logEverySteps: 2, warmupSteps: 1, learningRate: 1e-3 },
    checkpoint: { everySteps: 3, everyMinutes: 0, keepLast: 3 }, evaluation: { maxBatches: 2, batchSize: 2 },
    generation: { prompts: ['Call me'], maxNewTokens: 4, temperature: 0 },
  });
  data = await run(new MockActivityEnvironment(), createActivities().prepareData, cfg);
});

const ckroot = () => join(root, 'unit', 'run', 'checkpoints');
const seg = (fromStep: number, toStep: number): TrainSegmentInput => ({
  cfg, runDir: join(root, 'unit', 'run'), checkpointRoot: ckroot(), dataDir: data.dataDir, fromStep, toStep, totalSteps: 15, resumeFrom: null,
});

describe('trainSegment', () => {
  const worker1 = createActivities();

  it('trains a fresh segment, checkpointing every 3 steps and at the end; heartbeats name committed checkpoints', async () => {
    const env = new MockActivityEnvironment();
    const beats: any[] = [];
    env.on('heartbeat', (d) => beats.push(d));
    const r = await run(env, worker1.trainSegment, seg(0, 7));
    expect(r.step).toBe(7);
    expect(r.checkpoint.step).toBe(7);
    expect(r.resume).toBeNull();
    expect(r.firstLoss).toBeGreaterThan(0);
    expect((await listCheckpoints(ckroot())).map((c) => c.step)).toEqual([7, 6, 3]);
    const committed = beats.filter((b) => b?.committed).map((b) => b.committed.step);
    expect(committed).toContain(3);
    expect(committed).toContain(6);
  });

  it('continues in memory on the same worker, and resumes from disk on a new one', async () => {
    const r1 = await run(new MockActivityEnvironment(), worker1.trainSegment, { ...seg(7, 9), resumeFrom: { dir: join(ckroot(), 'step-00000007'), step: 7 } });
    expect(r1.resume).toBeNull();
    expect(r1.step).toBe(9);
    const worker2 = createActivities();
    const r2 = await run(new MockActivityEnvironment({ attempt: 2 }), worker2.trainSegment, seg(9, 12));
    expect(r2.resume).toMatchObject({ atStep: 9, attempt: 2, skipped: [] });
    expect(r2.step).toBe(12);
    expect((await listCheckpoints(ckroot())).map((c) => c.step)).toEqual([12, 9, 7]); // keepLast 3
  });

  it('falls back past a corrupt newest checkpoint, quarantining it, and says so', async () => {
    const newest = join(ckroot(), 'step-00000012');
    const files = readdirSync(newest).map((f) => join(newest, f)).filter((f) => statSync(f).isFile());
    const big = files.sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
    truncateSync(big, Math.floor(statSync(big).size / 2));
    const r = await run(new MockActivityEnvironment({ attempt: 2 }), createActivities().trainSegment, seg(12, 13));
    expect(r.resume?.atStep).toBe(9);
    expect(r.resume?.skipped[0]?.dir).toBe(newest);
    expect(r.step).toBe(13);
    expect(readdirSync(quarantineRoot(ckroot())).some((d) => d.startsWith('step-00000012'))).toBe(true);
    // The retrained step 12 is committed again under its own name; the corrupt copy no longer shadows it.
    expect((await listCheckpoints(ckroot())).map((c) => c.step)).toEqual([13, 12, 9]);
  });

  it('cancellation stops at a step boundary, commits a checkpoint, then reports the cancellation', async () => {
    const env = new MockActivityEnvironment();
    let cancelled = false;
    env.on('heartbeat', (d: any) => {
      if (!cancelled && d?.step >= 14) {
        cancelled = true;
        env.cancel();
      }
    });
    const err = await run(env, createActivities().trainSegment, seg(13, 15)).catch((e: any) => e as any);
    expect(err).toBeInstanceOf(CancelledFailure);
    const newest = (await listCheckpoints(ckroot()))[0]!;
    expect(newest.step).toBeGreaterThanOrEqual(14);
    expect(err.message).toContain(newest.dir);
  });

  it('checkpoints record the engine build; a resume from another build\'s checkpoint is logged and noted in the report', async () => {
    const { Engine, engineBuild } = await import('../../native/index.js');
    const runA = join(root, 'buildA'), runB = join(root, 'buildB');
    const segIn = (runDir: string, fromStep: number, toStep: number): TrainSegmentInput => ({ ...seg(fromStep, toStep), runDir, checkpointRoot: join(runDir, 'checkpoints') });
    await run(new MockActivityEnvironment(), createActivities().trainSegment, segIn(runA, 0, 3));
    const metaA = JSON.parse(readFileSync(join(runA, 'checkpoints/step-00000003/meta.json'), 'utf8'));
    expect(metaA.extra.engine).toEqual(engineBuild());
    // The same state, committed by the engine with metadata naming another build (another BLAS).
    const other = { id: 'linux-x64-cpu-00000000@000000000000', backends: 'cpu', blas: 'openblas', node: '20.0.0' };
    const e = await Engine.fromCheckpoint(join(runA, 'checkpoints/step-00000003'), cfg, { backend: 'cpu' });
    try {
      await e.saveCheckpoint(join(runB, 'checkpoints/step-00000003'), { ...metaA.extra, engine: other });
    } finally {
      e.dispose();
    }
    const r = await run(new MockActivityEnvironment({ attempt: 2 }), createActivities().trainSegment, segIn(runB, 3, 6));
    expect(r.resume).toMatchObject({ atStep: 3, attempt: 2, checkpointBuild: other });
    expect(r.resume!.cause).toMatch(/^retry \(attempt 2\) after attempt 1 ended/);
    const log = (await readMetrics(runB))!;
    expect(log.starts.map((x) => [x.step, x.build?.id, x.resume?.checkpointBuild?.id])).toEqual([[3, engineBuild().id, other.id]]);
    const report = await reportFromMetrics({
      workflowId: 'w', name: 'unit', runDir: runB, modelDir: null, dataDir: data.dataDir, baseModel: null, eval: null, samples: [], stageMs: {}, notes: [],
      train: { steps: 6, totalSteps: 15, firstLoss: null, lastLoss: null, resumedFromSteps: [], resumes: [], tokens: 0, tokensPerSec: 0, stoppedEarly: false, lastCheckpoint: r.checkpoint },
    });
    expect(report.notes.join('\n')).toContain(`step 3 resumed on another engine build than the one that wrote its checkpoint (${other.id}, BLAS openblas)`);
    expect(existsSync(report.lossCurve!)).toBe(true);
  });

  it('divergence is non-retryable, with advice', async () => {
    const bad = { ...cfg, training: { ...cfg.training, divergenceLoss: 0.5 } };
    const err = await run(new MockActivityEnvironment(), createActivities().trainSegment, { ...seg(0, 2), cfg: bad, checkpointRoot: join(root, 'diverge') }).catch((e: any) => e as any);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(['DIVERGED', 'NON_FINITE_LOSS']).toContain(err.type); // the engine checks the threshold itself; the activity checks again
    expect(err.nonRetryable).toBe(true);
    expect(err.message).toMatch(/learningRate/);
  });
});

describe('export, evaluate, generate', () => {
  it('export is atomic and idempotent; evaluate and generate read the same checkpoint', async () => {
    const acts = createActivities();
    const ck = (await listCheckpoints(ckroot()))[0]!;
    const modelDir = join(root, 'unit', 'run', 'model');
    const e1 = await run(new MockActivityEnvironment(), acts.exportModel, { cfg, checkpoint: ck, modelDir });
    expect(e1.reused).toBe(false);
    expect(existsSync(join(modelDir, 'model.safetensors'))).toBe(true);
    expect(existsSync(join(modelDir, 'config.json'))).toBe(true);
    expect(existsSync(join(modelDir, 'tokenizer.json'))).toBe(true);
    const e2 = await run(new MockActivityEnvironment(), acts.exportModel, { cfg, checkpoint: ck, modelDir });
    expect(e2.reused).toBe(true);
    const m = await run(new MockActivityEnvironment(), acts.evaluateModel, { cfg, checkpoint: ck, dataDir: data.dataDir });
    expect(m!.loss).toBeGreaterThan(0);
    expect(m!.sequences).toBeGreaterThan(0);
    const s1 = await run(new MockActivityEnvironment(), acts.generateSamples, { cfg, checkpoint: ck });
    const s2 = await run(new MockActivityEnvironment(), createActivities().generateSamples, { cfg, checkpoint: ck });
    expect(s1).toHaveLength(1);
    expect(s1).toEqual(s2); // same checkpoint and seed: same text, cached engine or freshly loaded
  });
});
