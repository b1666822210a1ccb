// The engine through its TypeScript API on the cpu backend: build info, the C++ test suite, errors with codes,
// evaluation metrics checked against logits, generation, HF export/import, dispose.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { Engine, EngineError, engineAvailable } from '../../native/index.js';
import { loadFirst } from '../../native/loader.js';
import { maxAbsDiff, patternTokens, shardsFromTokens, tinyConfig, tmp } from './helpers.js';

const root = resolve(import.meta.dirname, '../..');

describe('engine build', () => {
  it('loads and reports its backends and BLAS', () => {
    const a = engineAvailable();
    expect(a.error).toBeUndefined();
    expect(a.ok).toBe(true);
    expect(a.backends).toContain('cpu');
    expect(a.blas).toMatch(/openblas|builtin-blocked/);
  });

  it('explains a broken addon with possible solutions instead of crashing', () => {
    const bogus = join(tmp('bogus'), 'finetune_engine.node');
    writeFileSync(bogus, 'not an ELF file');
    const r = loadFirst([bogus]);
    expect(r.addon).toBeUndefined();
    expect(r.error).toContain(bogus);
    expect(r.error).toMatch(/Possible solutions:[\s\S]*npm run build:native/);
    expect(loadFirst([]).error).toMatch(/No addon found/);
  });

  it('passes the C++ engine tests (gradient check, formats, checkpoints, resume)', () => {
    const cur = JSON.parse(readFileSync(join(root, 'build/native/current.json'), 'utf8')) as { name: string };
    const exe = join(root, 'build/native', cur.name, 'engine_tests');
    const r = spawnSync(exe, [], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '2', OMP_WAIT_POLICY: 'passive' }, timeout: 120_000 });
    expect(r.stdout).toMatch(/tests, 0 failed checks/);
    expect(r.status).toBe(0);
  });
});

describe('Engine', () => {
  it('reports the effective configuration', async () => {
    const e = await Engine.create(tinyConfig());
    expect(e.info).toMatchObject({ backend: 'cpu', precision: 'fp32', family: 'gpt2', nLayer: 2, nHead: 2, nEmbd: 32, vocabSize: 97, nPositions: 32 });
    // wte 97*32 + wpe 32*32 + 2 blocks * (12*32^2 + 13*32) + ln_f 2*32
    expect(e.info.nParams).toBe(97 * 32 + 32 * 32 + 2 * (12 * 32 * 32 + 13 * 32) + 64);
    expect(e.info.blas).toBeTruthy();
    expect(e.step).toBe(0);
    expect(e.memoryReport().paramsBytes).toBe(e.info.nParams * 4);
    e.dispose();
  });

  it('rejects what it cannot honour with coded errors that keep the JS stack', async () => {
    await expect(Engine.create(tinyConfig({ parallelism: { zeroStage: 1 } }))).rejects.toMatchObject({ code: 'BAD_CONFIG' });
    if (!engineAvailable().backends.includes('cuda'))
      await expect(Engine.create(tinyConfig(), { backend: 'cuda' })).rejects.toMatchObject({ code: 'BAD_CONFIG' });
    const e = await Engine.create(tinyConfig());
    const bad = shardsFromTokens(Int32Array.from({ length: 64 }, (_, i) => (i === 5 ? 500 : i % 97)), 16);
    e.setTrainData(bad);
    const err = await e.train(1, { totalSteps: 1 }).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(EngineError);
    const ee = err as EngineError;
    expect(ee.code).toBe('BAD_SHAPE');
    expect(ee.nativeFile).toMatch(/\.cpp$/);
    expect(ee.message).toMatch(/500 at position \d+ is outside \[0, 97\)/);
    expect(ee.stack).toMatch(/engine\.test\.ts/);  // the caller's frames survive the native hop
    expect(e.step).toBe(0);  // the failed step did not happen
    // activations that cannot fit in RAM: a coded error, not an overcommitted allocation that gets the process killed
    const huge = await Engine.create(tinyConfig({ model: { vocabSize: 50257, nPositions: 1024 }, preprocess: { blockSize: 1024 } }));
    await expect(huge.evaluate([{ nSeq: 1, blockSize: 1024, inputIds: new Int32Array(1024), labels: new Int32Array(1024) }], { batchSize: 100_000 }))
      .resolves.toMatchObject({ sequences: 1 });  // the batch is only as large as the data
    const big = new Int32Array(4096 * 1024);
    await expect(huge.gradients(big, big, 4096, 1024)).rejects.toMatchObject({ code: 'OUT_OF_MEMORY', message: expect.stringMatching(/GiB/) });
    huge.dispose();
    // shape mismatch between ids and nSeq*blockSize is a TypeError -> BAD_CONFIG, before any native work
    expect(() => e.setTrainData([{ nSeq: 3, blockSize: 16, inputIds: new Int32Array(10), labels: new Int32Array(10) }])).toThrow(EngineError);
    e.dispose();
    expect(e.disposed).toBe(true);
    expect(() => e.step).toThrow(/disposed/);
    await expect(e.generate([[1]], { maxNewTokens: 1, temperature: 0, topK: 0, topP: 1, seed: 0, eosId: -1 })).rejects.toThrow(/disposed/);
  });

  it('evaluates mean loss, perplexity and next-token accuracy over shifted, unmasked targets', async () => {
    const e = await Engine.create(tinyConfig());
    const T = 16;
    const toks = patternTokens(6 * T, 97, 3);
    const shards = shardsFromTokens(toks, T, 2, (q, t) => (q + t) % 5 === 0);  // some labels masked
    const r = await e.evaluate(shards, { batchSize: 4, maxBatches: 0 });
    // recompute from the logits: predict labels[t+1] from position t
    let loss = 0, n = 0, hit = 0;
    for (const s of shards) {
      const logits = await e.forwardLogits(s.inputIds, s.nSeq, T);
      for (let q = 0; q < s.nSeq; q++)
        for (let t = 0; t + 1 < T; t++) {
          const tgt = s.labels[q * T + t + 1]!;
          if (tgt === -100) continue;
          const row = logits.subarray((q * T + t) * 97, (q * T + t + 1) * 97);
          let max = -Infinity, arg = 0;
          row.forEach((v, i) => { if (v > max) { max = v; arg = i; } });
          const lse = Math.log(row.reduce((acc, v) => acc + Math.exp(v - max), 0)) + max;
          loss += lse - row[tgt]!;
          n++;
          hit += arg === tgt ? 1 : 0;
        }
    }
    expect(r.tokens).toBe(n);
    expect(r.sequences).toBe(6);
    expect(r.loss).toBeCloseTo(loss / n, 5);
    expect(r.perplexity).toBeCloseTo(Math.exp(loss / n), 3);
    expect(r.accuracy).toBeCloseTo(hit / n, 10);
    // maxBatches limits the work
    const r1 = await e.evaluate(shards, { batchSize: 2, maxBatches: 1 });
    expect(r1.sequences).toBe(2);
    e.dispose();
  });

  it('generates reproducibly from a seed, honours maxNewTokens, EOS and greedy decoding', async () => {
    const e = await Engine.create(tinyConfig());
    const prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9]];
    const o = { maxNewTokens: 12, temperature: 0.9, topK: 20, topP: 0.9, seed: 7, eosId: -1 };
    const a = await e.generate(prompts, o);
    const b = await e.generate(prompts, o);
    expect(a).toEqual(b);
    expect(a.map((x) => x.length)).toEqual([12, 12, 12]);
    const c = await e.generate(prompts, { ...o, seed: 8 });
    expect(c).not.toEqual(a);
    // a prompt's sample does not depend on the other prompts in the batch (its RNG stream is (seed, index))
    const alone = await e.generate([prompts[0]!], o);
    expect(alone[0]).toEqual(a[0]);
    // greedy = argmax of the full forward's last logits, token by token
    const g = await e.generate([[1, 2, 3]], { ...o, temperature: 0, maxNewTokens: 4 });
    const seq = [1, 2, 3];
    for (let k = 0; k < 4; k++) {
      const logits = await e.forwardLogits(Int32Array.from(seq), 1, seq.length);
      const last = logits.subarray((seq.length - 1) * 97);
      let arg = 0;
      last.forEach((v, i) => { if (v > last[arg]!) arg = i; });
      expect(g[0]![k]).toBe(arg);
      seq.push(arg);
    }
    // stops at EOS (make the greedy first token the EOS id)
    const eos = g[0]![0]!;
    const s = await e.generate([[1, 2, 3]], { ...o, temperature: 0, eosId: eos });
    expect(s[0]).toEqual([eos]);
    // stops when the context (nPositions 32) is full: 30 prompt tokens leave positions 30 and 31 to feed, so the
    // last token predicted is the one after position 31 (3 new tokens)
    const long = await e.generate([Array.from({ length: 30 }, (_, i) => i)], { ...o, maxNewTokens: 10 });
    expect(long[0]!.length).toBe(3);
    await expect(e.generate([Array.from({ length: 40 }, () => 1)], o)).rejects.toMatchObject({ code: 'BAD_SHAPE' });
    e.dispose();
  });

  it('exports a Hugging Face directory that imports back to the same logits', async () => {
    const dir = tmp('hf');
    const cfg = tinyConfig();
    const e = await Engine.create(cfg);
    e.setTrainData(shardsFromTokens(patternTokens(8 * 16, 97), 16));
    await e.train(3, { totalSteps: 3 });
    const tokJson = join(dir, 'tokenizer-src.json');
    (await import('node:fs')).writeFileSync(tokJson, '{"model": {}}');
    await e.exportHuggingFace(join(dir, 'export'), { tokenizerJson: tokJson });
    expect(readdirSync(join(dir, 'export')).sort()).toEqual(['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json']);
    const hfCfg = JSON.parse(readFileSync(join(dir, 'export/config.json'), 'utf8'));
    expect(hfCfg).toMatchObject({ model_type: 'gpt2', n_layer: 2, n_head: 2, n_embd: 32, n_positions: 32, vocab_size: 97, activation_function: 'gelu_new', architectures: ['GPT2LMHeadModel'] });
    const f = await Engine.create(tinyConfig({ model: { init: 'pretrained', path: join(dir, 'export') } }));
    const ids = patternTokens(2 * 16, 97, 9);
    expect(maxAbsDiff(await e.forwardLogits(ids, 2, 16), await f.forwardLogits(ids, 2, 16))).toBe(0);
    expect(f.info.nParams).toBe(e.info.nParams);
    // a directory without weights is an IO error naming it
    await expect(Engine.create(tinyConfig({ model: { init: 'pretrained', path: dir } }))).rejects.toMatchObject({ code: 'IO' });
    e.dispose();
    f.dispose();
    expect(existsSync(join(dir, 'export/model.safetensors'))).toBe(true);
  });
});
