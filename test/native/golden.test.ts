// The cpu reference against golden tensors from an independent implementation (HF transformers GPT2LMHeadModel
// in PyTorch fp32, test/fixtures/golden/make_golden.py): the HF directory imports, logits, loss and every
// parameter's gradient match, three AdamW steps with clipping give the same losses, greedy decoding agrees.
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Engine } from '../../native/index.js';
import { maxAbsDiff, readSafetensors, tinyConfig } from './helpers.js';

const dir = resolve(import.meta.dirname, '../fixtures/golden');
const have = existsSync(join(dir, 'golden.safetensors')) && existsSync(join(dir, 'model/model.safetensors'));

describe.skipIf(!have)('golden tensors from PyTorch (HF GPT2LMHeadModel)', () => {
  const g: Map<string, { shape: number[]; data: Float32Array }> = have ? readSafetensors(join(dir, 'golden.safetensors')) : new Map();
  const get = (k: string) => {
    const t = g.get(k);
    if (!t) throw new Error(`golden.safetensors has no ${k}`);
    return t;
  };
  const [B, T] = have ? get('input_ids').shape : [0, 0];
  const ids = Int32Array.from(have ? get('input_ids').data : []);
  const labels = Int32Array.from(have ? get('labels').data : []);
  const cfg = (training = {}) => tinyConfig({ model: { init: 'pretrained', path: join(dir, 'model') }, preprocess: { blockSize: 16 }, training });

  it('imports the HF directory with its architecture', async () => {
    const e = await Engine.create(cfg());
    expect(e.info).toMatchObject({ nLayer: 2, nHead: 2, nEmbd: 32, nPositions: 16, vocabSize: 97 });
    e.dispose();
  });

  it('matches logits and loss', async () => {
    const e = await Engine.create(cfg());
    const logits = await e.forwardLogits(ids, B!, T!);
    // fp32 both sides, different summation orders: observed max |diff| ~1e-6 on logits of magnitude ~10
    expect(maxAbsDiff(logits, get('logits').data)).toBeLessThan(2e-5);
    const { loss } = await e.gradients(ids, labels, B!, T!);
    expect(Math.abs(loss - get('loss').data[0]!)).toBeLessThan(2e-6);
    e.dispose();
  });

  it('matches the gradient of every parameter', async () => {
    const e = await Engine.create(cfg());
    const { grads } = await e.gradients(ids, labels, B!, T!);
    for (const t of e.layout()) {
      const ref = get(`grad.${t.name}`);
      expect(ref.shape).toEqual(t.shape);
      const ours = grads.subarray(t.offset, t.offset + t.numel);
      // per tensor, relative to its largest gradient: fp32 accumulation-order noise is ~1e-6 of that
      const scale = Math.max(...Array.from(ref.data, Math.abs), 1e-8);
      const rel = maxAbsDiff(ours, ref.data) / scale;
      expect(rel, t.name).toBeLessThan(1e-4);
    }
    e.dispose();
  });

  it('takes the same AdamW steps (clipping, decoupled decay on 2-D tensors, bias correction)', async () => {
    const e = await Engine.create(cfg({ microBatchSize: B, gradAccumSteps: 1, learningRate: 1e-3, warmupSteps: 0, schedule: 'constant', weightDecay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradClip: 1.0 }));
    // one shard holding the golden batch: each step sees all B sequences (order does not change a mean)
    e.setTrainData([{ nSeq: B!, blockSize: T!, inputIds: ids, labels }]);
    const r = await e.train(3, { totalSteps: 3 });
    const ref = Array.from(get('train_losses').data);
    for (let i = 0; i < 3; i++) expect(Math.abs(r.losses[i]! - ref[i]!)).toBeLessThan(1e-5);
    // weights after 3 steps: Adam's first steps move each weight by ~lr * sign(g), so a gradient within rounding
    // of 0 can flip a weight by up to 2 lr; everything else agrees to float precision
    const params = await e.getParams();
    let worst = 0, sum = 0, n = 0;
    for (const t of e.layout()) {
      const d = get(`final.${t.name}`).data;
      for (let i = 0; i < t.numel; i++) {
        const x = Math.abs(params[t.offset + i]! - d[i]!);
        worst = Math.max(worst, x);
        sum += x;
        n++;
      }
    }
    expect(worst).toBeLessThan(6e-3);
    expect(sum / n).toBeLessThan(1e-6);
    e.dispose();
  });

  it('decodes greedily like the reference', async () => {
    const e = await Engine.create(cfg());
    const prompt = Array.from(get('prompt').data);
    const out = await e.generate([prompt], { maxNewTokens: 8, temperature: 0, topK: 0, topP: 1, seed: 0, eosId: -1 });
    expect(out[0]).toEqual(Array.from(get('greedy').data));
    e.dispose();
  });
});
