// The rank activities on the cpu engine in a mock activity environment: rendezvous (no id for one worker; a build
// without the cuda backend cannot make one, non-retryable), trainRank (collective-style checkpoints at step
// multiples, the engine cached per group generation, a corrupt start checkpoint moved aside and retried).
import { existsSync, mkdtempSync, readdirSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { createActivities, type PreparedData, type Rendezvous, type TrainRankInput } from '../../activities/index.js';
import { quarantineRoot } from '../../activities/checkpoints.js';
import { parseConfig, type FinetuneConfig } from '../../configs/index.js';
import { engineAvailable, listCheckpoints } from '../../native/index.js';

const run = <F extends (...a: any[]) => Promise<any>>(env: MockActivityEnvironment, fn: F, ...args: Parameters<F>) => env.run(fn, ...args) as ReturnType<F>;

let root: string;
let cfg: FinetuneConfig;
let data: PreparedData;
const acts = createActivities();

beforeAll(async () => {
  root = mkdtempSync(join(tmpdir(), 'ft-rank-'));
  const docs = Array.from({ length: 40 }, (_, i) => JSON.stringify({ text: `Call me Ishmael ${i}. Some years ago, never mind how long precisely, I went to sea. `.repeat(3) }));
  writeFileSync(join(root, 'c.jsonl'), docs.join('\n'));
  cfg = parseConfig({
    name: 'rank', storage: { root }, data: { train: { type: 'jsonl', path: join(root, 'c.jsonl') }, validationFraction: 0.1 },
    preprocess: { blockSize: 16 }, model: { nLayer: 1, nHead: 2, nEmbd: 16, nPositions: 16 },
    training: { backend: 'cpu', microBatchSize: 2, maxSteps: 12, logEverySteps: 2, warmupSteps: 1, learningRate: 1e-3 },
    checkpoint: { everySteps: 3, everyMinutes: 0, keepLast: 3 }, temporal: { rankTaskQueues: ['host-a'] },
  });
  data = await run(new MockActivityEnvironment(), acts.prepareData, cfg);
});

const ckroot = () => join(root, 'rank', 'run', 'checkpoints');
const group = (generation: number): Rendezvous => ({ ncclId: null, host: 'test', pid: process.pid, generation });
const input = (fromStep: number, toStep: number, generation: number, resumeFrom: TrainRankInput['resumeFrom'] = null): TrainRankInput => ({
  cfg, checkpointRoot: ckroot(), dataDir: data.dataDir, rank: 0, nodes: 1, group: group(generation), fromStep, toStep, totalSteps: 12, resumeFrom,
});

describe('rendezvous', () => {
  it('needs no NCCL id for one worker', async () => {
    const r = await run(new MockActivityEnvironment(), acts.rendezvous, { nodes: 1, generation: 3 });
    expect(r).toMatchObject({ ncclId: null, pid: process.pid, generation: 3 });
  });
  it.skipIf(engineAvailable().backends.includes('cuda'))('several workers on a build without NCCL: a non-retryable BAD_CONFIG', async () => {
    const err = await run(new MockActivityEnvironment(), acts.rendezvous, { nodes: 2, generation: 1 }).catch((e: any) => e);
    expect(err).toMatchObject({ type: 'BAD_CONFIG', nonRetryable: true });
    expect(err.message).toMatch(/rendezvous on rank 0: .*without the cuda backend/);
  });
});

describe('trainRank', () => {
  it('trains, checkpoints at step multiples, heartbeats its rank, and keeps the engine for the same generation', async () => {
    const env = new MockActivityEnvironment();
    const beats: any[] = [];
    env.on('heartbeat', (d) => beats.push(d));
    const a = await run(env, acts.trainRank, input(0, 4, 1));
    expect(a).toMatchObject({ step: 4, checkpoint: { step: 4 }, resume: null });
    expect((await listCheckpoints(ckroot())).map((c) => c.step)).toEqual([4, 3]);
    expect(beats.every((b) => b.rank === 0)).toBe(true);
    // same generation: continues in memory; a new generation (a restart) loads from disk
    const b = await run(new MockActivityEnvironment(), acts.trainRank, input(4, 6, 1, a.checkpoint));
    expect(b.resume).toBeNull();
    const c = await run(new MockActivityEnvironment(), acts.trainRank, input(6, 8, 2, b.checkpoint));
    expect(c.resume).toMatchObject({ atStep: 6, attempt: 2 });
    expect(c.step).toBe(8);
  });

  it('a corrupt start checkpoint fails the rank (retryable) and is moved aside for the restart', async () => {
    const cps = await listCheckpoints(ckroot());
    const newest = cps[0]!;
    const state = join(newest.dir, 'state.bin');
    if (existsSync(state)) truncateSync(state, 100);
    else for (const f of readdirSync(newest.dir).filter((n) => n.startsWith('rank-'))) truncateSync(join(newest.dir, f), 100);
    const err = await run(new MockActivityEnvironment(), acts.trainRank, input(newest.step, 12, 3, newest)).catch((e: any) => e);
    expect(err).toMatchObject({ type: 'BAD_CHECKPOINT', nonRetryable: false });
    expect(existsSync(newest.dir)).toBe(false);
    expect(readdirSync(quarantineRoot(ckroot())).some((n) => n.startsWith(`step-${String(newest.step).padStart(8, '0')}`))).toBe(true);
  });
});
