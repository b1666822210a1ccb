// Packed sequences on the cpu backend: several examples in one row with position ids that restart per example
// (Batch::positions) give every example exactly what it gets alone: the same logits, so the same per-example
// losses, and gradients that add up to the examples' own (GPT-2 with learned positions; Llama with rotary
// positions and grouped-query attention). Then packed shards from prepare train and evaluate.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../configs/index.js';
import { prepareData, readShard } from '../../datasets/index.js';
import { Engine } from '../../native/index.js';
import { maxAbsDiff, patternTokens, tinyConfig, tmp } from './helpers.js';
import { resolve } from 'node:path';

const LLAMA = resolve(import.meta.dirname, '../fixtures/golden/families/llama/model');
const T = 16;
// Three examples (lengths 5, 7, 3) packed into one row of 16; the last position is padding (its own segment).
const LENS = [5, 7, 3];

function examples(V: number) {
  const toks = patternTokens(LENS.reduce((a, b) => a + b), V, 7);
  let at = 0;
  return LENS.map((n) => {
    const ids = Array.from(toks.subarray(at, at + n));
    at += n;
    // labels: every token but the first carries loss (as prepare writes packed examples)
    return { ids, labels: ids.map((id, i) => (i === 0 ? -100 : id)) };
  });
}

function packedRow(ex: { ids: number[]; labels: number[] }[], pad: number) {
  const ids: number[] = [], labels: number[] = [], pos: number[] = [];
  for (const e of ex) {
    e.ids.forEach((id, i) => {
      ids.push(id);
      labels.push(e.labels[i]!);
      pos.push(i);
    });
  }
  for (let k = 0; ids.length < T; k++) {
    ids.push(pad);
    labels.push(-100);
    pos.push(k);
  }
  return { ids: Int32Array.from(ids), labels: Int32Array.from(labels), pos: Int32Array.from(pos) };
}

function aloneRow(e: { ids: number[]; labels: number[] }, pad: number) {
  const ids = [...e.ids], labels = [...e.labels];
  while (ids.length < T) {
    ids.push(pad);
    labels.push(-100);
  }
  return { ids: Int32Array.from(ids), labels: Int32Array.from(labels) };
}

/** Mean cross-entropy of the next-token predictions of one example from its logits rows. */
function exampleLoss(logits: Float32Array, V: number, start: number, e: { labels: number[] }): number {
  let sum = 0, n = 0;
  for (let t = 0; t + 1 < e.labels.length; t++) {
    const target = e.labels[t + 1]!;
    if (target === -100) continue;
    const row = logits.subarray((start + t) * V, (start + t + 1) * V);
    let max = -Infinity;
    for (const x of row) max = Math.max(max, x);
    let z = 0;
    for (const x of row) z += Math.exp(x - max);
    sum += max + Math.log(z) - row[target]!;
    n++;
  }
  return sum / n;
}

const CASES = [
  { name: 'gpt2 (learned positions)', cfg: () => tinyConfig({ preprocess: { blockSize: T } }), V: 97 },
  { name: 'llama (rotary, grouped-query attention)', cfg: () => tinyConfig({ model: { init: 'pretrained', path: LLAMA }, preprocess: { blockSize: T } }), V: 300 },
];

for (const c of CASES)
  describe(`packed vs one by one: ${c.name}`, () => {
    it('same logits and per-example losses; gradients add up to the examples’ own', async () => {
      const e = await Engine.create(c.cfg());
      const ex = examples(c.V);
      const packed = packedRow(ex, 0);
      const logitsPacked = await e.forwardLogits(packed.ids, 1, T, packed.pos);
      const g = await e.gradients(packed.ids, packed.labels, 1, T, packed.pos);
      const nTargets = (labels: ArrayLike<number>) => Array.from(labels).slice(1).filter((x) => x !== -100).length;
      const sum = new Float64Array(g.grads.length);
      let start = 0;
      for (const x of ex) {
        const alone = aloneRow(x, 0);
        const logitsAlone = await e.forwardLogits(alone.ids, 1, T);
        const V = c.V;
        // the example's rows of the packed logits are its logits alone
        expect(maxAbsDiff(logitsPacked.subarray(start * V, (start + x.ids.length) * V), logitsAlone.subarray(0, x.ids.length * V))).toBeLessThan(2e-5);
        expect(exampleLoss(logitsPacked, V, start, x)).toBeCloseTo(exampleLoss(logitsAlone, V, 0, x), 5);
        const ga = await e.gradients(alone.ids, alone.labels, 1, T);
        const n = nTargets(alone.labels);
        for (let i = 0; i < sum.length; i++) sum[i]! += ga.grads[i]! * n;
        start += x.ids.length;
      }
      // grads of the packed mean loss x its targets == the sum of each example's summed-loss grads
      const n = nTargets(packed.labels);
      let worst = 0, scale = 0;
      for (let i = 0; i < sum.length; i++) {
        worst = Math.max(worst, Math.abs(g.grads[i]! * n - sum[i]!));
        scale = Math.max(scale, Math.abs(sum[i]!));
      }
      expect(worst / scale).toBeLessThan(1e-5);
      // and without the position ids the examples do attend to each other: the check above can fail
      const unmasked = await e.forwardLogits(packed.ids, 1, T);
      expect(maxAbsDiff(unmasked.subarray(LENS[0]! * c.V, T * c.V), logitsPacked.subarray(LENS[0]! * c.V, T * c.V))).toBeGreaterThan(1e-3);
      e.dispose();
    });

    it('refuses position ids that do not restart at 0 or count up by one', async () => {
      const e = await Engine.create(c.cfg());
      const p = packedRow(examples(c.V), 0);
      const bad = Int32Array.from(p.pos);
      bad[3] = 7;
      await expect(e.forwardLogits(p.ids, 1, T, bad)).rejects.toThrow(/position id 7/);
      e.dispose();
    });
  });

describe('packed shards from prepare', () => {
  it('lines with pad false: position ids, per-example labels, packing efficiency; they train and evaluate', async () => {
    const lines = Array.from({ length: 60 }, (_, i) => `Line ${i} of a small corpus: ${'word '.repeat(1 + (i % 5))}end.`);
    const dir = tmp('packed-');
    const file = join(dir, 'lines.txt');
    (await import('node:fs')).writeFileSync(file, lines.join('\n'));
    const cfg = parseConfig({ storage: { root: dir }, data: { train: { type: 'text', path: file }, validationFraction: 0.1 }, preprocess: { mode: 'lines', blockSize: 64, pad: false } });
    const { dir: out, manifest: m } = await prepareData(cfg);
    expect(m.columns).toEqual(['input_ids', 'labels', 'attention_mask', 'position_ids']);
    const t = m.splits.train;
    expect(t.packing!.examplesPerSequence).toBeGreaterThan(2);
    expect(t.packing!.efficiency).toBeCloseTo(t.tokens / (t.sequences * 64), 4);
    const s = await readShard(join(out, t.shards[0]!.path));
    const pos = s.positionIds!;
    for (let r = 0; r < s.nSeq; r++)
      for (let k = 0; k < 64; k++) {
        const i = r * 64 + k;
        if (k === 0) expect(pos[i]).toBe(0);
        else expect(pos[i] === 0 || pos[i] === pos[i - 1]! + 1).toBe(true);
        if (pos[i] === 0) expect(s.labels[i]).toBe(-100); // an example's first token is never a target
      }
    const e = await Engine.create(tinyConfig({ preprocess: { blockSize: 64 }, model: { nPositions: 64, vocabSize: 50257 }, training: { microBatchSize: 2 } }));
    e.setTrainData([s]);
    const r = await e.train(2, { totalSteps: 2 });
    expect(r.losses.every(Number.isFinite)).toBe(true);
    const v = await e.evaluate([await readShard(join(out, m.splits.validation.shards[0]!.path))]);
    expect(Number.isFinite(v.loss)).toBe(true);
    e.dispose();
  });
});
