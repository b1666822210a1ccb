// Llama, GPT-NeoX/Pythia and GPT-J on the cpu backend against golden tensors from transformers 5.17 / PyTorch 2.11
// (fp32, CPU; test/fixtures/golden/families/make_golden_families.py): the HF directories transformers saved
// (llama sharded with an index) import with the family read from config.json; logits, loss, every gradient,
// three AdamW steps and greedy decoding match. Then per family: export -> reimport round trip, training lowers
// the loss, exact resume from a checkpoint, and configs the engine cannot run are refused before any weight.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../configs/index.js';
import { Engine, EngineError } from '../../native/index.js';
import { maxAbsDiff, patternTokens, readSafetensors, shardsFromTokens, tinyConfig, tmp } from './helpers.js';

const root = resolve(import.meta.dirname, '../fixtures/golden/families');
const VARIANTS = ['llama', 'llama_tied_llama3', 'gpt_neox', 'gpt_neox_sequential', 'gptj'] as const;
const FAMILY: Record<string, string> = { llama: 'llama', llama_tied_llama3: 'llama', gpt_neox: 'gpt_neox', gpt_neox_sequential: 'gpt_neox', gptj: 'gptj' };

function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) { ab += a[i]! * b[i]!; aa += a[i]! * a[i]!; bb += b[i]! * b[i]!; }
  return aa === 0 && bb === 0 ? 1 : ab / Math.sqrt(aa * bb);
}

for (const v of VARIANTS) {
  const dir = join(root, v);
  const have = existsSync(join(dir, 'golden.safetensors'));
  describe.skipIf(!have)(`${v}: golden tensors from transformers`, () => {
    const g = have ? readSafetensors(join(dir, 'golden.safetensors')) : new Map<string, { shape: number[]; data: Float32Array }>();
    const meta = have ? (JSON.parse(readFileSync(join(dir, 'golden.json'), 'utf8')) as { B: number; T: number; V: number }) : { B: 0, T: 0, V: 0 };
    const get = (k: string) => {
      // transformers 5 names GPT-NeoX's head lm_head in named_parameters (its files keep embed_out.weight)
      const t = g.get(k) ?? g.get(k.replace('grad.embed_out.weight', 'grad.lm_head.weight'));
      if (!t) throw new Error(`${v}/golden.safetensors has no ${k}`);
      return t;
    };
    const { B, T } = meta;
    const ids = Int32Array.from(have ? get('input_ids').data : []);
    const labels = Int32Array.from(have ? get('labels').data : []);
    const cfg = (training = {}) => tinyConfig({ model: { init: 'pretrained', path: join(dir, 'model') }, preprocess: { blockSize: T }, training });

    it('imports the directory transformers saved, family from model_type', async () => {
      const e = await Engine.create(cfg());
      expect(e.info).toMatchObject({ family: FAMILY[v], nLayer: 2, nHead: 4, nEmbd: 64, vocabSize: 300, backend: 'cpu' });
      if (v === 'llama') expect(e.info).toMatchObject({ nKvHead: 2, tieWordEmbeddings: false, bosTokenId: 1, eosTokenId: 2 });
      if (v === 'gpt_neox') expect(e.info).toMatchObject({ rotaryDim: 4, parallelResidual: true, hiddenAct: 'gelu' });
      if (v === 'gpt_neox_sequential') expect(e.info).toMatchObject({ rotaryDim: 8, parallelResidual: false });
      if (v === 'gptj') expect(e.info).toMatchObject({ rotaryDim: 8, hiddenAct: 'gelu_new' });
      e.dispose();
    });

    it('matches logits (1e-4), loss (1e-5 relative) and every gradient', async () => {
      const e = await Engine.create(cfg());
      const logits = await e.forwardLogits(ids, B, T);
      expect(maxAbsDiff(logits, get('logits').data)).toBeLessThan(1e-4);
      const { loss, grads } = await e.gradients(ids, labels, B, T);
      const ref = get('loss').data[0]!;
      expect(Math.abs(loss - ref) / ref).toBeLessThan(1e-5);
      const names = e.layout().map((t) => t.name).sort();
      expect(names).toEqual([...g.keys()].filter((k) => k.startsWith('grad.')).map((k) => k.slice(5).replace(/^lm_head/, v.startsWith('gpt_neox') ? 'embed_out' : 'lm_head')).sort());
      for (const t of e.layout()) {
        const r = get(`grad.${t.name}`);
        expect(r.shape, t.name).toEqual(t.shape);
        const ours = grads.subarray(t.offset, t.offset + t.numel);
        const scale = Math.max(...Array.from(r.data, Math.abs), 1e-8);
        expect(maxAbsDiff(ours, r.data) / scale, t.name).toBeLessThan(1e-4);
        expect(cosine(ours, r.data), t.name).toBeGreaterThanOrEqual(0.9999);
      }
      e.dispose();
    });

    it('takes the same AdamW steps and decodes greedily like transformers (KV cache)', async () => {
      const e = await Engine.create(cfg({ microBatchSize: B, learningRate: 1e-3, warmupSteps: 0, schedule: 'constant', weightDecay: 0.1, beta1: 0.9, beta2: 0.95, eps: 1e-8, gradClip: 1.0 }));
      const prompt = Array.from(get('prompt').data);
      const out = await e.generate([prompt], { maxNewTokens: 8, temperature: 0, topK: 0, topP: 1, seed: 0, eosId: -1 });
      expect(out[0]).toEqual(Array.from(get('greedy').data));
      e.setTrainData([{ nSeq: B, blockSize: T, inputIds: ids, labels }]);
      const r = await e.train(3, { totalSteps: 3 });
      const ref = Array.from(get('train_losses').data);
      for (let i = 0; i < 3; i++) expect(Math.abs(r.losses[i]! - ref[i]!) / ref[i]!).toBeLessThan(1e-5);
      e.dispose();
    });
  });
}

describe.each(VARIANTS)('%s: export, training, resume', (v) => {
  const model = join(root, v, 'model');
  const have = existsSync(join(root, v, 'golden.safetensors'));
  const T = 16, V = 300;
  const cfg = (path: string, training = {}) => tinyConfig({ model: { init: 'pretrained', path }, preprocess: { blockSize: T },
    training: { microBatchSize: 4, learningRate: 3e-3, warmupSteps: 1, schedule: 'constant', ...training } });
  const data = shardsFromTokens(patternTokens(64 * T, V, 3), T);

  it.skipIf(!have)('exports a directory that reimports to the same weights and logits; training lowers the loss', async () => {
    const e = await Engine.create(cfg(model));
    e.setTrainData(data);
    const r = await e.train(12, { totalSteps: 12 });
    const first = r.losses.slice(0, 3).reduce((a, b) => a + b) / 3, last = r.losses.slice(-3).reduce((a, b) => a + b) / 3;
    expect(last).toBeLessThan(first - 0.05);
    const ev = await e.evaluate(data, { maxBatches: 2, batchSize: 4 });
    expect(ev.loss).toBeGreaterThan(0);
    expect(ev.tokens).toBe(2 * 4 * (T - 1));
    const out = join(tmp(`fam-${v}`), 'hf');
    await e.exportHuggingFace(out);
    const hf = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { model_type: string; architectures: string[] };
    expect(hf.model_type).toBe(FAMILY[v]);
    expect(existsSync(join(out, 'generation_config.json'))).toBe(true);
    const back = await Engine.create(cfg(out));
    expect(back.info.family).toBe(e.info.family);
    expect(back.info.nParams).toBe(e.info.nParams);
    expect(maxAbsDiff(await back.getParams(), await e.getParams())).toBe(0);
    const probe = data[0]!.inputIds.subarray(0, 2 * T);
    expect(maxAbsDiff(await back.forwardLogits(probe, 2, T), await e.forwardLogits(probe, 2, T))).toBe(0);
    e.dispose();
    back.dispose();
  });

  it.skipIf(!have)('resumes exactly from a checkpoint', async () => {
    const c = cfg(model);
    const a = await Engine.create(c);
    a.setTrainData(data);
    await a.train(2, { totalSteps: 4 });
    const ck = join(tmp(`fam-ck-${v}`), 'step-00000002');
    await a.saveCheckpoint(ck);
    const rest = await a.train(2, { totalSteps: 4 });
    const b = await Engine.fromCheckpoint(ck, c);
    expect(b.info.family).toBe(FAMILY[v]);
    b.setTrainData(data);
    const again = await b.train(2, { totalSteps: 4 });
    expect(again.losses).toEqual(rest.losses);
    expect(maxAbsDiff(await b.getParams(), await a.getParams())).toBe(0);
    a.dispose();
    b.dispose();
  });
});

describe('families: random init and refusals', () => {
  it('builds each family from model.family with per-family defaults, and generation is seeded', async () => {
    for (const [family, extra] of [['llama', { nKvHead: 2 }], ['gpt_neox', {}], ['gptj', {}]] as const) {
      const e = await Engine.create(tinyConfig({ model: { family, nHead: 4, nEmbd: 32, ...extra } }));
      expect(e.info.family).toBe(family);
      if (family === 'llama') expect(e.info).toMatchObject({ nKvHead: 2, headDim: 8, rotaryDim: 8, tieWordEmbeddings: false, intermediateSize: 128 });
      if (family === 'gpt_neox') expect(e.info).toMatchObject({ rotaryDim: 2, parallelResidual: true, hiddenAct: 'gelu', intermediateSize: 128 });
      if (family === 'gptj') expect(e.info).toMatchObject({ rotaryDim: 8, hiddenAct: 'gelu_new' });
      const opts = { maxNewTokens: 6, temperature: 1, topK: 20, topP: 0.9, seed: 5, eosId: -1 };
      const x = await e.generate([[1, 2, 3], [4]], opts), y = await e.generate([[1, 2, 3], [4]], opts);
      expect(x).toEqual(y);
      e.dispose();
    }
  });

  it('a model larger than RAM is OUT_OF_MEMORY before anything is allocated', async () => {
    const err = await Engine.create(tinyConfig({ model: { family: 'llama', nLayer: 100, nHead: 64, nEmbd: 8192 } })).catch((e: unknown) => e);
    expect((err as EngineError).code).toBe('OUT_OF_MEMORY');
    expect((err as EngineError).message).toMatch(/GiB/);
  });

  it('validates the family fields in the config schema', () => {
    expect(() => parseConfig({ model: { family: 'llama', nHead: 4, nKvHead: 3 } })).toThrow(/nKvHead/);
    expect(() => parseConfig({ model: { family: 'gpt_neox', nHead: 4, nKvHead: 2 } })).toThrow(/llama option/);
    expect(parseConfig({ model: { family: 'llama', nHead: 4, nKvHead: 2, ropeScaling: { type: 'llama3', factor: 8 } } }).model.ropeScaling)
      .toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  });

  it("an empty prompt starts from the model's BOS (llama <s> = 1)", async () => {
    const e = await Engine.create(tinyConfig({ model: { init: 'pretrained', path: join(root, 'llama', 'model') } }));
    const opts = { maxNewTokens: 5, temperature: 0, topK: 0, topP: 1, seed: 0, eosId: -1 };
    expect(await e.generate([[]], opts)).toEqual(await e.generate([[1]], opts));
    expect(await e.generate([[]], opts)).not.toEqual(await e.generate([[2]], opts));
    e.dispose();
  });

  it("refuses the cuda backend for non-gpt2 families with BAD_CONFIG", async () => {
    const err = await Engine.create(tinyConfig({ model: { family: 'llama' }, training: { backend: 'cuda' } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('BAD_CONFIG');
    expect((err as EngineError).message).toMatch(/llama.*cuda|cuda.*llama/);
  });

  it('accepts the config.json of real checkpoints (then wants their weights)', async () => {
    // abridged from the Hub: SmolLM-135M, Llama-3.2-1B, Pythia-70m / Dolly v2 (transformers 4 keys), GPT-J-6B
    const real: Record<string, unknown>[] = [
      { model_type: 'llama', architectures: ['LlamaForCausalLM'], hidden_size: 576, intermediate_size: 1536, num_attention_heads: 9,
        num_hidden_layers: 30, num_key_value_heads: 3, max_position_embeddings: 2048, rms_norm_eps: 1e-5, rope_theta: 10000.0,
        rope_scaling: null, tie_word_embeddings: true, vocab_size: 49152, hidden_act: 'silu', bos_token_id: 0, eos_token_id: 0,
        pretraining_tp: 1, attention_bias: false, mlp_bias: false },
      { model_type: 'llama', hidden_size: 2048, intermediate_size: 8192, num_attention_heads: 32, num_hidden_layers: 16,
        num_key_value_heads: 8, head_dim: 64, max_position_embeddings: 131072, rms_norm_eps: 1e-5, rope_theta: 500000.0,
        rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
        tie_word_embeddings: true, vocab_size: 128256, bos_token_id: 128000, eos_token_id: [128001, 128008, 128009], torch_dtype: 'bfloat16' },
      { model_type: 'gpt_neox', architectures: ['GPTNeoXForCausalLM'], hidden_size: 512, intermediate_size: 2048, num_attention_heads: 8,
        num_hidden_layers: 6, max_position_embeddings: 2048, rotary_pct: 0.25, rotary_emb_base: 10000, use_parallel_residual: true,
        layer_norm_eps: 1e-5, hidden_act: 'gelu', vocab_size: 50304, tie_word_embeddings: false, bos_token_id: 0, eos_token_id: 0,
        rope_scaling: null, attention_dropout: 0.0, hidden_dropout: 0.0 },
      { model_type: 'gptj', architectures: ['GPTJForCausalLM'], n_embd: 4096, n_head: 16, n_layer: 28, n_positions: 2048, rotary_dim: 64,
        n_inner: null, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, vocab_size: 50400, tie_word_embeddings: false,
        bos_token_id: 50256, eos_token_id: 50256, resid_pdrop: 0.0, embd_pdrop: 0.0, attn_pdrop: 0.0 },
    ];
    for (const c of real) {
      const d = join(tmp('fam-real'), 'm');
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'config.json'), JSON.stringify(c));
      const err = await Engine.create(tinyConfig({ model: { init: 'pretrained', path: d } })).catch((e: unknown) => e) as EngineError;
      expect(err.code, `${String(c.model_type)}: ${err.message}`).toBe('IO');  // the config passed; no safetensors here
      expect(err.message).toMatch(/neither model.safetensors nor model.safetensors.index.json/);
    }
  });

  it('refuses unsupported config.json options before reading weights, naming the field', async () => {
    const base = JSON.parse(readFileSync(join(root, 'llama/model/config.json'), 'utf8')) as Record<string, unknown>;
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ model_type: 'qwen2' }, /model_type 'qwen2'/],
      [{ attention_bias: true }, /attention_bias/],
      [{ rope_parameters: { rope_type: 'yarn', factor: 4, rope_theta: 10000 } }, /rope_type 'yarn'/],
      [{ hidden_act: 'gelu' }, /hidden_act 'gelu'/],
      [{ num_key_value_heads: 3 }, /nKvHead/],
    ];
    for (const [patch, re] of cases) {
      const d = join(tmp('fam-bad'), 'm');
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'config.json'), JSON.stringify({ ...base, ...patch }));  // no weights at all
      const err = await Engine.create(tinyConfig({ model: { init: 'pretrained', path: d } })).catch((e: unknown) => e);
      expect((err as EngineError).code, JSON.stringify(patch)).toBe('BAD_CONFIG');
      expect((err as EngineError).message).toMatch(re);
      expect((err as EngineError).message).toContain('config.json');
    }
  });
});
