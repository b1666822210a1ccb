// Training through the TypeScript API on the cpu backend: loss falls on real text, resume is bit-exact,
// abort stops at a step boundary, the event loop stays free, checkpoints are atomic and corruption is caught.
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../datasets/index.js';
import { Engine, listCheckpoints, verifyCheckpoint, checkpointDirName, type StepProgress } from '../../native/index.js';
import { mobyDickText, patternTokens, shardsFromTokens, tinyConfig, tmp } from './helpers.js';

import { SHAKESPEARE } from '../datasets/helpers.js';

// GPT-2 tokens of real text, renumbered densely (the ~4k distinct ids become 0..V-1) so a CPU step is ~12x
// cheaper than with the full 50257-row head while the learning problem stays the same.
async function lossFalls(text: string, steps: number) {
  const tok = await loadTokenizer({ type: 'gpt2' });
  const raw = tok.encode(text);
  const dense = new Map<number, number>();
  const ids = raw.map((t) => dense.get(t) ?? (dense.set(t, dense.size), dense.size - 1));
  const T = 32;
  const cfg = tinyConfig({
    preprocess: { blockSize: T },
    model: { nLayer: 2, nHead: 4, nEmbd: 64, nPositions: T, vocabSize: dense.size },
    training: { microBatchSize: 16, learningRate: 3e-3, warmupSteps: 5, schedule: 'cosine' },
  });
  const shards = shardsFromTokens(ids, T, 3);
  const e = await Engine.create(cfg);
  e.setTrainData(shards);
  const r = await e.train(steps, { totalSteps: steps });
  e.dispose();
  const first = r.losses.slice(0, 3).reduce((a, b) => a + b) / 3;
  const last = r.losses.slice(-5).reduce((a, b) => a + b) / 5;
  return { first, last, r, V: dense.size };
}

describe('training on the cpu backend', () => {
  it('loss falls on Moby Dick (npm corpus, GPT-2 tokens)', async () => {
    const { first, last, r, V } = await lossFalls(mobyDickText(3, 9), 80);  // narrative chapters (not the front matter of quotations)
    expect(first).toBeGreaterThan(Math.log(V) - 0.5);  // ~ln(V) at init
    expect(last).toBeLessThan(first - 1.5);            // from ~ln(V) to well below it: it learns the text
    expect(r.tokens).toBe(80 * 16 * 32);
  });

  it.skipIf(!existsSync(SHAKESPEARE))('loss falls on tinyshakespeare', async () => {
    const { first, last } = await lossFalls(readFileSync(SHAKESPEARE, 'utf8').slice(0, 200_000), 80);
    expect(last).toBeLessThan(first - 2.5);
  });

  it('resumes bit for bit: N steps + save + load + N steps == 2N steps (weights, losses, data cursor)', async () => {
    const root = tmp('resume');
    const cfg = tinyConfig({ training: { microBatchSize: 3, gradAccumSteps: 2, shuffleSeed: 11, warmupSteps: 2 } });
    const shards = shardsFromTokens(patternTokens(40 * 16, 97, 5), 16, 3, (q, t) => (q * 3 + t) % 7 === 0);
    const N = 5;
    const a = await Engine.create(cfg);
    a.setTrainData(shards);
    const ra = await a.train(2 * N, { totalSteps: 2 * N });
    const b = await Engine.create(cfg);
    b.setTrainData(shards);
    const rb = await b.train(N, { totalSteps: 2 * N });
    const saved = await b.saveCheckpoint(join(root, checkpointDirName(N)), { note: 'resume test' });
    expect(saved.step).toBe(N);
    expect(saved.sha256).toMatch(/^[0-9a-f]{64}$/);
    const cursorAtSave = b.cursor;
    b.dispose();
    const c = await Engine.fromCheckpoint(saved.dir, cfg);
    expect(c.step).toBe(N);
    expect(c.cursor).toEqual(cursorAtSave);  // restored before setTrainData
    c.setTrainData(shards);
    const rc = await c.train(N, { totalSteps: 2 * N });
    expect([...rb.losses, ...rc.losses]).toEqual(ra.losses);
    expect(Buffer.from((await c.getParams()).buffer).equals(Buffer.from((await a.getParams()).buffer))).toBe(true);
    expect(c.cursor).toEqual(a.cursor);
    expect(c.step).toBe(2 * N);
    a.dispose();
    c.dispose();
    rmSync(root, { recursive: true, force: true });
  });

  it('aborts at a step boundary, keeps the event loop free and reports progress', async () => {
    const cfg = tinyConfig({ model: { nLayer: 2, nEmbd: 64, nHead: 4, nPositions: 64, vocabSize: 2000 }, preprocess: { blockSize: 64 }, training: { microBatchSize: 8 } });
    const e = await Engine.create(cfg);
    e.setTrainData(shardsFromTokens(patternTokens(64 * 64, 2000), 64, 2));
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const progress: StepProgress[] = [];
    const ac = new AbortController();
    const r = await e.train(10_000, {
      totalSteps: 10_000,
      signal: ac.signal,
      onProgress: (p) => {
        progress.push(p);
        if (p.step === 6) ac.abort();
      },
    });
    clearInterval(timer);
    expect(r.aborted).toBe(true);
    expect(r.step).toBeGreaterThanOrEqual(6);
    expect(r.step).toBeLessThan(20);
    expect(e.step).toBe(r.step);
    expect(progress[0]).toMatchObject({ step: 1 });
    expect(progress[0]!.lr).toBeGreaterThan(0);
    expect(progress[0]!.gradNorm).toBeGreaterThan(0);
    expect(progress[0]!.tokensPerSec).toBeGreaterThan(0);
    expect(ticks).toBeGreaterThan(3);  // the interval kept firing while native code trained
    // an already-aborted signal does no work
    const r2 = await e.train(5, { totalSteps: 5, signal: AbortSignal.abort() });
    expect(r2).toMatchObject({ aborted: true, losses: [] });
    e.dispose();
  });

  it('trains with dropout (seeded from the checkpointed RNG) and evaluates without it', async () => {
    const cfg = tinyConfig({ model: { dropout: 0.1 } });
    const shards = shardsFromTokens(patternTokens(20 * 16, 97), 16);
    const a = await Engine.create(cfg), b = await Engine.create(cfg);
    a.setTrainData(shards);
    b.setTrainData(shards);
    const ra = await a.train(4, { totalSteps: 4 }), rb = await b.train(4, { totalSteps: 4 });
    expect(ra.losses).toEqual(rb.losses);  // same seed, same masks
    const ea = await a.evaluate(shards), eb = await a.evaluate(shards);
    expect(ea.loss).toBe(eb.loss);  // no dropout in evaluation
    a.dispose();
    b.dispose();
  });

  it('dispose() during training stops it at the next step boundary and frees the engine', async () => {
    const e = await Engine.create(tinyConfig());
    e.setTrainData(shardsFromTokens(patternTokens(20 * 16, 97), 16));
    const p = e.train(100_000, { totalSteps: 100_000 });
    await new Promise((r) => setTimeout(r, 50));
    e.dispose();
    const r = await p;
    expect(r.aborted).toBe(true);
    expect(r.step).toBeLessThan(100_000);
    await expect(e.train(1, { totalSteps: 1 })).rejects.toThrow(/disposed/);
  });

  it('stops with NON_FINITE_LOSS when the loss diverges, leaving the state at the last good step', async () => {
    const cfg = tinyConfig({ training: { learningRate: 5, warmupSteps: 0, gradClip: 0, divergenceLoss: 6 } });
    const e = await Engine.create(cfg);
    e.setTrainData(shardsFromTokens(patternTokens(20 * 16, 97), 16));
    const err = await e.train(50, { totalSteps: 50 }).catch((x: unknown) => x);
    expect(err).toMatchObject({ code: 'NON_FINITE_LOSS' });
    expect((err as { step: number }).step).toBe(e.step);
    e.dispose();
  });
});

describe('checkpoints', () => {
  it('are committed atomically and listed newest first; corrupt or partial ones are reported, never loaded', async () => {
    const root = tmp('ckpt');
    const cfg = tinyConfig();
    const e = await Engine.create(cfg);
    e.setTrainData(shardsFromTokens(patternTokens(20 * 16, 97), 16));
    await e.train(2, { totalSteps: 4 });
    const c2 = await e.saveCheckpoint(join(root, checkpointDirName(2)));
    await e.train(2, { totalSteps: 4 });
    const c4 = await e.saveCheckpoint(join(root, checkpointDirName(4)), { segment: 2 });
    expect(readdirSync(root).sort()).toEqual(['step-00000002', 'step-00000004']);  // no temp dirs left
    expect(await listCheckpoints(root)).toEqual([{ dir: c4.dir, step: 4 }, { dir: c2.dir, step: 2 }]);
    expect(await verifyCheckpoint(c4.dir)).toEqual({ ok: true, step: 4 });
    const meta = JSON.parse(readFileSync(join(c4.dir, 'meta.json'), 'utf8'));
    expect(meta).toMatchObject({ format: 'durable-finetune-checkpoint', step: 4, extra: { segment: 2 }, model: { nLayer: 2 }, config: { name: cfg.name } });

    // flip one byte of the weights
    const state = join(c4.dir, 'state.bin');
    const good = readFileSync(state);
    const bad = Buffer.from(good);
    bad[bad.length - 100] = bad[bad.length - 100]! ^ 0xff;
    writeFileSync(state, bad);
    const v = await verifyCheckpoint(c4.dir);
    expect(v.ok).toBe(false);
    expect(v.ok ? '' : v.reason).toMatch(/SHA-256/);
    await expect(Engine.fromCheckpoint(c4.dir, cfg)).rejects.toMatchObject({ code: 'BAD_CHECKPOINT' });
    // truncated
    writeFileSync(state, good.subarray(0, good.length - 4096));
    await expect(Engine.fromCheckpoint(c4.dir, cfg)).rejects.toMatchObject({ code: 'BAD_CHECKPOINT' });
    writeFileSync(state, good);
    // partial: no DONE marker -> not listed, not loadable
    rmSync(join(c4.dir, 'DONE'));
    expect(await listCheckpoints(root)).toEqual([{ dir: c2.dir, step: 2 }]);
    await expect(Engine.fromCheckpoint(c4.dir, cfg)).rejects.toMatchObject({ code: 'BAD_CHECKPOINT' });
    // resuming on other train data is refused (the cursor would point into different sequences)
    const other = await Engine.fromCheckpoint(c2.dir, cfg);
    expect(() => other.setTrainData(shardsFromTokens(patternTokens(20 * 16, 97, 77), 16))).toThrow(/train data differs/);
    other.dispose();
    // a config for a different model is refused
    await expect(Engine.fromCheckpoint(c2.dir, tinyConfig({ model: { nEmbd: 64 } }))).rejects.toMatchObject({ code: 'BAD_CONFIG' });
    const ok = await Engine.fromCheckpoint(c2.dir, cfg);
    expect(ok.step).toBe(2);
    ok.dispose();
    e.dispose();
    rmSync(root, { recursive: true, force: true });
  });
});
