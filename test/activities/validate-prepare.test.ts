// validateConfig and prepareData in a mock activity environment (no server): a bad config fails non-retryably
// with the field named; paths and directories derive from the workflow id and the config fingerprint; prepare
// heartbeats, returns a summary with the step plan, and a second call reuses the committed result.
import { mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { ApplicationFailure } from '@temporalio/common';
import { describe, expect, it } from 'vitest';
import { createActivities } from '../../activities/index.js';
import { planSteps } from '../../activities/prepare.js';
import { parseConfig } from '../../configs/index.js';

const acts = createActivities();
/** env.run with the activity's own types. */
const run = <F extends (...a: any[]) => Promise<any>>(env: MockActivityEnvironment, fn: F, ...args: Parameters<F>) => env.run(fn, ...args) as ReturnType<F>;

function corpus(dir: string): string {
  // 60 documents (one per record), so the held-out split gets whole documents.
  const lines: string[] = [];
  for (let i = 0; i < 60; i++) lines.push(JSON.stringify({ text: `Document ${i}: a small text about whales, ships and the sea, number ${i * 7}. `.repeat(4) }));
  const file = join(dir, 'corpus.jsonl');
  writeFileSync(file, lines.join('\n'));
  return file;
}

describe('validateConfig', () => {
  it('fails non-retryably with the zod message naming the field', async () => {
    const env = new MockActivityEnvironment();
    const err = await run(env, acts.validateConfig, { training: { learningRate: -1 } }, 'wf').catch((e: any) => e as any);
    expect(err).toBeInstanceOf(ApplicationFailure);
    expect(err.nonRetryable).toBe(true);
    expect(err.type).toBe('BAD_CONFIG');
    expect(err.message).toMatch(/training\.learningRate/);
  });

  it('rejects unknown keys and a missing corpus file', async () => {
    const env = new MockActivityEnvironment();
    const e1 = await run(env, acts.validateConfig, { trainng: {} }, 'wf').catch((e: any) => e as any);
    expect(e1.message).toMatch(/trainng: unknown key/);
    const e2 = await run(env, acts.validateConfig, { data: { train: { type: 'text', path: '/nonexistent/x.txt' } } }, 'wf').catch((e: any) => e as any);
    expect(e2.nonRetryable).toBe(true);
    expect(e2.message).toMatch(/data\.train\.path: no such file/);
  });

  it('a storage.root that cannot be written fails at validate, non-retryably, with its real cause', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ft-val-'));
    writeFileSync(join(dir, 'file'), 'x');
    const env = new MockActivityEnvironment();
    const e1 = await run(env, acts.validateConfig, { storage: { root: join(dir, 'file', 'runs') } }, 'wf').catch((e: any) => e as any);
    expect(e1).toBeInstanceOf(ApplicationFailure);
    expect([e1.type, e1.nonRetryable]).toEqual(['ENOTDIR', true]);
    expect(e1.message).toMatch(/^storage\.root: .*file\/runs is not writable: ENOTDIR: not a directory/);
    // sysfs is read-only (EPERM or EROFS by kernel): the probe file is refused even for root.
    const e2 = await run(env, acts.validateConfig, { storage: { root: '/sys/finetune-runs' } }, 'wf').catch((e: any) => e as any);
    expect(['EPERM', 'EROFS', 'EACCES']).toContain(e2.type);
    expect(e2.nonRetryable).toBe(true);
    expect(e2.message).toMatch(/^storage\.root: \/sys\/finetune-runs is not writable: E(PERM|ROFS|ACCES)/);
  });

  it('names the run directory by workflow id and fingerprint, and continues a series from latest.json', async () => {
    const root = mkdtempSync(join(tmpdir(), 'ft-validate-'));
    const env = new MockActivityEnvironment();
    const input = { name: 'series', storage: { root }, model: { continueSeries: true } };
    const a = await run(env, acts.validateConfig, input, 'finetune-series');
    const b = await run(env, acts.validateConfig, { ...input, training: { learningRate: 1e-2 } }, 'finetune-series');
    expect(a.runDir.startsWith(join(root, 'series', 'finetune-series-'))).toBe(true);
    expect(a.runDir).not.toBe(b.runDir);
    // another GPU layout resumes the same run (re-sharded checkpoints); a delayed update is different math
    const gpus = { ...input, training: { gradAccumSteps: 8 }, parallelism: { devices: 4, nodes: 2, zeroStage: 3, offload: { optimizer: 'cpu' } } };
    const c4 = await run(env, acts.validateConfig, gpus, 'finetune-series');
    const c1 = await run(env, acts.validateConfig, { ...gpus, parallelism: { devices: 1 } }, 'finetune-series');
    expect(c4.runDir).toBe(c1.runDir);
    const late = await run(env, acts.validateConfig, { ...gpus, parallelism: { offload: { optimizer: 'cpu', delayedUpdate: true } } }, 'finetune-series');
    expect(late.runDir).not.toBe(c1.runDir);
    expect(a.baseModel).toBeNull();
    const modelDir = join(root, 'series', 'some-run', 'model');
    mkdirSync(modelDir, { recursive: true });
    // validate checks the series model's shape against the data (an export always writes these)
    writeFileSync(join(modelDir, 'config.json'), JSON.stringify({ model_type: 'gpt2', vocab_size: 50257, n_positions: 1024 }));
    writeFileSync(join(root, 'series', 'latest.json'), JSON.stringify({ modelDir, workflowId: 'x', step: 3, evalLoss: 1, finishedAt: '' }));
    const c = await run(env, acts.validateConfig, input, 'finetune-series');
    expect(c.baseModel).toBe(modelDir);
    expect(a.continuedFrom).toBeNull();
    expect(c.continuedFrom).toBe(modelDir);
    expect(c.cfg.model.init).toBe('pretrained');
    expect(c.cfg.model.path).toBe(modelDir);
  });
});

describe('prepareData', () => {
  it('heartbeats, returns a summary and a step plan, and reuses its committed output', async () => {
    const root = mkdtempSync(join(tmpdir(), 'ft-prepare-'));
    const cfg = parseConfig({
      name: 'tiny', storage: { root }, data: { train: { type: 'jsonl', path: corpus(root) }, validationFraction: 0.1 },
      preprocess: { mode: 'concat', blockSize: 32 }, model: { nPositions: 32 },
      training: { microBatchSize: 4, epochs: 2 },
    });
    const env = new MockActivityEnvironment();
    const beats: unknown[] = [];
    env.on('heartbeat', (d) => beats.push(d));
    const first = await run(env, acts.prepareData, cfg);
    expect(first.reused).toBe(false);
    expect(first.train.sequences).toBeGreaterThan(10);
    expect(first.validation.sequences).toBeGreaterThan(0);
    expect(first.blockSize).toBe(32);
    expect(first.totalSteps).toBe(Math.ceil((2 * first.train.sequences) / 4));
    expect(beats.length).toBeGreaterThan(0);
    expect(JSON.stringify(first).length).toBeLessThan(4000); // a summary crosses Temporal, never the data
    const again = await run(new MockActivityEnvironment(), acts.prepareData, cfg);
    expect(again.reused).toBe(true);
    expect(again.dataDir).toBe(first.dataDir);
  });

  it('plans maxSteps when given, else epochs over the train split', () => {
    expect(planSteps(parseConfig({ training: { maxSteps: 7 } }), 1000).totalSteps).toBe(7);
    expect(planSteps(parseConfig({ training: { microBatchSize: 8, gradAccumSteps: 2, epochs: 1 } }), 100).totalSteps).toBe(7);
  });
});
