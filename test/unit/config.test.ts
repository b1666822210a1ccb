import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  ConfigError, applyOverrides, canonicalJson, describeParallelism, fingerprintOf, loadConfig, localDevices, parseConfig, rankQueuesOf,
  usesRankPath, workerLayout, worldSizeOf,
} from '../../configs/index.js';

function writeConfig(obj: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  const f = join(dir, 'config.json');
  writeFileSync(f, JSON.stringify(obj));
  return f;
}

describe('FinetuneConfig', () => {
  it('fills every default from an empty object', () => {
    const c = parseConfig({});
    expect(c.preprocess.mode).toBe('concat');
    expect(c.data.train).toEqual({ type: 'builtin', name: 'moby-dick' });
    expect(c.parallelism.zeroStage).toBe(0);
    expect(c.temporal.taskQueue).toBe('finetune');
  });

  it('loads every preset', () => {
    for (const p of ['default', 'shakespeare-gptj-ray', 'gpt2-xl-16gb', 'dolly-pythia-instruct', 'smollm-instruct', 'alpaca-llama-instruct', 'llama-chat']) {
      const c = loadConfig(`configs/presets/${p}.json`);
      expect(c.name.length).toBeGreaterThan(0);
    }
    const ray = loadConfig('configs/presets/shakespeare-gptj-ray.json');
    expect(ray.preprocess).toMatchObject({ mode: 'lines', blockSize: 512, dropSpeakerLines: true });
    expect(ray.parallelism).toMatchObject({ zeroStage: 3, offload: { optimizer: 'cpu' } });
  });

  it('has presets for the write-ups: GPT2-XL on one GPU, Dolly/Pythia and SmolLM instruction tuning', () => {
    const xl = loadConfig('configs/presets/gpt2-xl-16gb.json');
    expect(xl.model).toMatchObject({ nLayer: 48, nEmbd: 1600, nHead: 25 });
    expect(xl.parallelism).toMatchObject({ devices: 1, zeroStage: 2, offload: { optimizer: 'cpu' } });
    expect(xl.training.recompute).toBe('gelu-layernorm');
    for (const p of ['dolly-pythia-instruct', 'smollm-instruct']) {
      const c = loadConfig(`configs/presets/${p}.json`);
      expect(c.preprocess.mode).toBe('instruct');
      expect(c.model.init).toBe('pretrained');
      // the family comes from the model directory's config.json; tokenizer from the same directory
      expect(c.tokenizer).toMatchObject({ type: 'huggingface', path: c.model.path });
    }
    const dolly = loadConfig('configs/presets/dolly-pythia-instruct.json');
    expect(dolly.preprocess.instructFields).toEqual({ instruction: 'instruction', input: 'context', output: 'response' });
    // Stanford Alpaca's recipe: 128 sequences per step over 4 GPUs; the tokenizer is the model folder's own
    const alpaca = loadConfig('configs/presets/alpaca-llama-instruct.json');
    expect(alpaca.preprocess).toMatchObject({ mode: 'instruct', blockSize: 512 });
    expect(alpaca.training.microBatchSize * alpaca.training.gradAccumSteps).toBe(128);
    expect(alpaca.tokenizer).toEqual({ type: 'huggingface', path: alpaca.model.path });
    const chat = loadConfig('configs/presets/llama-chat.json');
    expect(chat.preprocess).toMatchObject({ mode: 'chat', chat: { format: 'auto', template: 'model', lossOn: 'assistant' } });
    expect(chat.tokenizer).toEqual({ type: 'huggingface', path: chat.model.path });
  });

  it('validates the parallel layout and names the field', () => {
    const ok = parseConfig({ training: { gradAccumSteps: 12 }, parallelism: { devices: [0, 2, 3], nodes: 2, zeroStage: 3, offload: { optimizer: 'cpu', delayedUpdate: true } } });
    expect(worldSizeOf(ok)).toBe(6);
    expect(usesRankPath(ok)).toBe(true);
    expect(rankQueuesOf(ok)).toEqual(['finetune-gpu-rank-0', 'finetune-gpu-rank-1']);
    expect(describeParallelism(ok)).toBe('ZeRO-3, optimizer offload to CPU (delayed update), 2 workers x 3 GPUs [0,2,3] = 6 ranks');
    expect(localDevices(ok, 4)).toEqual([0, 2, 3]);
    expect(() => localDevices(ok, 3)).toThrow(/needs CUDA ordinal 3, but this worker sees 3 GPUs/);
    expect(localDevices(parseConfig({ parallelism: { devices: 'all' } }), 2)).toEqual([0, 1]);
    const single = parseConfig({});
    expect(usesRankPath(single)).toBe(false);
    expect(worldSizeOf(single)).toBe(1);
    expect(usesRankPath(parseConfig({ temporal: { rankTaskQueues: ['gpu-host-a'] } }))).toBe(true);

    // Each worker's place in the group: its devices, the world size and its first global rank.
    expect(workerLayout(ok, { backend: 'cuda', visible: 4, rank: 1, nodes: 2 })).toEqual({ worldSize: 6, rankOffset: 3, devices: [0, 2, 3] });
    expect(workerLayout(ok, { backend: 'cuda', visible: 4 })).toEqual({ worldSize: 3, rankOffset: 0, devices: [0, 2, 3] });
    expect(workerLayout(parseConfig({ parallelism: { devices: 'all' } }), { backend: 'cuda', visible: 2 })).toEqual({ worldSize: 2, rankOffset: 0, devices: [0, 1] });
    expect(workerLayout(ok, { backend: 'cpu', visible: 0, rank: 1, nodes: 2 })).toEqual({ worldSize: 2, rankOffset: 1, devices: [0] });
    expect(workerLayout(single, { backend: 'cpu', visible: 0 })).toEqual({ worldSize: 1, rankOffset: 0, devices: [0] });
    expect(() => workerLayout(ok, { backend: 'cuda', visible: 2, rank: 0, nodes: 2 })).toThrow(/parallelism\.devices \[0,2,3\] needs CUDA ordinals 2, 3, but this worker sees 2 GPUs/);

    const bad = (input: unknown, re: RegExp) => expect(() => parseConfig(input)).toThrow(re);
    bad({ parallelism: { zeroStage: 4 } }, /parallelism\.zeroStage: .*given 4/);
    bad({ parallelism: { offload: { optimizer: 'nvme' } } }, /parallelism\.offload\.optimizer: one of "none", "cpu"; given "nvme"/);
    bad({ parallelism: { offload: { delayedUpdate: true } } }, /parallelism\.offload\.delayedUpdate: delayedUpdate .* needs offload\.optimizer 'cpu'/);
    bad({ parallelism: { devices: [0, 0] } }, /parallelism\.devices: each CUDA ordinal at most once/);
    bad({ parallelism: { devices: [] } }, /parallelism\.devices/);
    bad({ parallelism: { nodes: 2, devices: 'all' } }, /parallelism\.devices: with nodes 2 give a GPU count/);
    bad({ training: { gradAccumSteps: 5 }, parallelism: { devices: 2, nodes: 2 } }, /training\.gradAccumSteps: counts micro-batches over all 4 GPUs .* use a multiple of 4, e\.g\. 4/);
    bad({ parallelism: { nodes: 2 }, temporal: { rankTaskQueues: ['a'] } }, /temporal\.rankTaskQueues: lists 1 queue but parallelism\.nodes is 2/);
    bad({ parallelism: { nodes: 2 }, temporal: { rankTaskQueues: ['a', 'a'] } }, /temporal\.rankTaskQueues: every rank needs its own queue/);
    bad({ training: { backend: 'cpu' }, parallelism: { devices: 2 } }, /parallelism\.devices: the cpu backend trains in one process/);
    bad({ training: { backend: 'cpu', recompute: 'all' } }, /training\.recompute: one of "none", "gelu", "gelu-layernorm"; given "all"/);
  });

  it('rejects unknown keys and names them', () => {
    const f = writeConfig({ training: { learningrate: 1e-3 } });
    expect(() => loadConfig(f)).toThrow(/training\.learningrate: unknown key/);
  });

  it('names the path, what was given and what is allowed', () => {
    try {
      parseConfig({ preprocess: { mode: 'words' }, training: { learningRate: -1 } });
      expect.unreachable();
    } catch (e) {
      const err = e as ConfigError;
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toMatch(/preprocess\.mode: one of "lines", "concat", "instruct", "chat"; given "words"/);
      expect(err.message).toMatch(/training\.learningRate: .*given -1/);
    }
  });

  it('checks blockSize against the model', () => {
    expect(() => parseConfig({ preprocess: { blockSize: 512 }, model: { nPositions: 256 } })).toThrow(
      /preprocess\.blockSize: blockSize 512 exceeds the model's nPositions 256/,
    );
  });

  it('applies --set overrides with JSON values', () => {
    const f = writeConfig({ training: { maxSteps: 5 } });
    const c = loadConfig(f, ['training.maxSteps=7', 'preprocess.mode=lines', 'generation.prompts=["a","b"]']);
    expect(c.training.maxSteps).toBe(7);
    expect(c.preprocess.mode).toBe('lines');
    expect(c.generation.prompts).toEqual(['a', 'b']);
    expect(() => applyOverrides({}, ['nokey'])).toThrow(/expected key.path=value/);
    expect(() => loadConfig(f, ['training.maxSteps.x=1'])).toThrow(/maxSteps is not an object/);
  });

  it('resolves relative paths against the config file', () => {
    const f = writeConfig({ data: { train: { type: 'text', path: 'corpus.txt' } } });
    const c = loadConfig(f);
    expect(c.data.train).toMatchObject({ path: join(f, '..', 'corpus.txt') });
  });
});

describe('config and tokenizer files that are not valid JSON', () => {
  it('name the file and line:column', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
    const f = join(dir, 'config.json');
    writeFileSync(f, '{\n  "name": "x",\n  "training": { "maxSteps": 10, }\n}\n');
    expect(() => loadConfig(f)).toThrow(`config ${f}:3:33: not valid JSON: Expected double-quoted property name`);
    writeFileSync(f, '{\n  "name": "x"\n');
    expect(() => loadConfig(f)).toThrow(new RegExp(`^config ${f}:3:1: not valid JSON: `));
    const { loadTokenizer } = await import('../../datasets/index.js');
    const t = join(dir, 'tokenizer.json');
    writeFileSync(t, '{\n "model": {"type": "BPE",\n  "vocab": {"a": 0}\n  "merges": []}}');
    await expect(loadTokenizer({ type: 'huggingface', path: t } as never)).rejects.toThrow(`${t}:4:3`);
  });

  it('a tokenizer.json the tokenizer cannot load is named in the error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tok-'));
    const t = join(dir, 'tokenizer.json');
    // Valid JSON with an end-of-sequence token, but not a tokenizer the Rust library accepts (no decoder etc.).
    writeFileSync(t, JSON.stringify({ model: { type: 'BPE', vocab: { a: 0 }, merges: [] }, added_tokens: [{ id: 1, content: '<|endoftext|>', special: true }] }));
    writeFileSync(join(dir, 'c.txt'), 'a a a a a a a a a a a a\n\na a a a a a a a\n');
    const { prepareData } = await import('../../datasets/index.js');
    const cfg = parseConfig({ storage: { root: dir }, data: { train: { type: 'text', path: join(dir, 'c.txt') } }, tokenizer: { type: 'huggingface', path: t }, preprocess: { blockSize: 4 }, model: { vocabSize: 2 } });
    await expect(prepareData(cfg)).rejects.toThrow(new RegExp(`${t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}.*cannot load the tokenizer`));
  });
});

describe('canonical fingerprints', () => {
  it('ignores key order, not values', () => {
    expect(canonicalJson({ b: 1, a: [1, { d: 2, c: 3 }] })).toBe('{"a":[1,{"c":3,"d":2}],"b":1}');
    expect(fingerprintOf({ a: 1, b: 2 })).toBe(fingerprintOf({ b: 2, a: 1 }));
    expect(fingerprintOf({ a: 1 })).not.toBe(fingerprintOf({ a: 2 }));
    expect(fingerprintOf('ab', 'c')).not.toBe(fingerprintOf('a', 'bc'));
  });
  it('fails instead of hashing what it cannot represent', () => {
    expect(() => canonicalJson(new Map())).toThrow(/Map/);
    expect(() => canonicalJson(NaN)).toThrow(/non-finite/);
  });
});
