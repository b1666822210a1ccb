// The pretrained path as a new user takes it: a local Llama-family folder with its own tokenizer and chat template,
// chat data, validate → prepare → train (CPU) → export, in a mock activity environment. The tokenizer defaults to
// the folder's own; vocabulary and context mismatches fail at validate with the numbers; an instruct example whose
// answer blockSize cuts off is dropped (micro-batch 1 trains instead of dying on an all-masked batch); the export
// carries tokenizer_config.json (special tokens, chat template) and the source generation_config.json, bos/eos of
// the tokenizer, clean floats; "continuing the series" only for a series. With TRANSFORMERS_PYTHON set to a Python
// that has transformers, the export is also loaded with AutoTokenizer and its chat template applied
// (test/fixtures/chat/check_export.py).
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { MockActivityEnvironment } from '@temporalio/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { createActivities, type PreparedData } from '../../activities/index.js';
import { parseConfig, type FinetuneConfig } from '../../configs/index.js';
import { listCheckpoints } from '../../native/index.js';

const run = <F extends (...a: any[]) => Promise<any>>(env: MockActivityEnvironment, fn: F, ...args: Parameters<F>) => env.run(fn, ...args) as ReturnType<F>;
const FIX = resolve(import.meta.dirname, '../fixtures');
const LLAMA = join(FIX, 'golden/families/llama/model'); // vocab 300, 32 positions, bos 1 / eos 2, no tokenizer
const CHAT = join(FIX, 'chat/zephyr'); // the tiny Llama tokenizer with zephyr-7b-beta's chat template

let root: string;
let model: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'ft-pretrained-'));
  // A Llama-family model folder as Hugging Face lays it out: weights, config, generation config, tokenizer files.
  model = join(root, 'tiny-llama-chat');
  mkdirSync(model);
  for (const f of readdirSync(LLAMA)) copyFileSync(join(LLAMA, f), join(model, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(CHAT, f), join(model, f));
  const gen = JSON.parse(readFileSync(join(model, 'generation_config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(model, 'generation_config.json'), JSON.stringify({ ...gen, max_new_tokens: 77, temperature: 0.6, do_sample: true }, null, 2));
  const convs = ['hi', 'yo', 'ok', 'no'].map((w) => JSON.stringify({ messages: [{ role: 'user', content: w }, { role: 'assistant', content: w.toUpperCase() }] }));
  writeFileSync(join(root, 'chat.jsonl'), convs.join('\n'));
  const alpaca = [
    { instruction: 'Say hi.', input: '', output: 'hi' },
    { instruction: 'Describe the sea at length, with every wave and every ship that ever sailed on it. '.repeat(3), input: '', output: 'It is wide.' },
    { instruction: 'Say bye.', input: '', output: 'bye' },
  ];
  writeFileSync(join(root, 'alpaca.jsonl'), alpaca.map((r) => JSON.stringify(r)).join('\n'));
});

const base = () => ({
  name: 'chat', storage: { root },
  model: { init: 'pretrained', path: model },
  training: { backend: 'cpu', microBatchSize: 1, maxSteps: 2, warmupSteps: 0, learningRate: 1e-3, precision: 'fp32' },
  checkpoint: { everySteps: 2, everyMinutes: 0, keepLast: 2 },
});

describe('validate on the pretrained path', () => {
  it('the tokenizer defaults to the model folder’s own (GPT-2’s without a pretrained model)', () => {
    expect(parseConfig({ model: { init: 'pretrained', path: '/m' } }).tokenizer).toEqual({ type: 'huggingface', path: '/m' });
    expect(parseConfig({}).tokenizer).toEqual({ type: 'gpt2' });
    expect(parseConfig({ model: { init: 'pretrained', path: '/m' }, tokenizer: { type: 'gpt2' } }).tokenizer).toEqual({ type: 'gpt2' });
  });

  it('a tokenizer larger than the model’s vocabulary, or blockSize above its context, fails with the numbers', async () => {
    const env = new MockActivityEnvironment();
    const e1 = await run(env, createActivities().validateConfig, { ...base(), tokenizer: { type: 'gpt2' } }, 'wf').catch((e: any) => e);
    expect(e1.nonRetryable).toBe(true);
    expect(e1.type).toBe('BAD_CONFIG');
    expect(e1.message).toMatch(/gpt2 has 50257 tokens but the model at .* has vocab_size 300/);
    const e2 = await run(env, createActivities().validateConfig, { ...base(), preprocess: { blockSize: 64 } }, 'wf').catch((e: any) => e);
    expect(e2.message).toMatch(/preprocess\.blockSize: 64 exceeds the model's context of 32 positions/);
    const e3 = await run(env, createActivities().validateConfig, { ...base(), model: { init: 'pretrained', path: LLAMA } }, 'wf').catch((e: any) => e);
    expect(e3.message).toMatch(/the model folder .* has no tokenizer\.json .*set tokenizer/);
  });

  it('notes a continued series only with continueSeries', async () => {
    const env = new MockActivityEnvironment();
    const v = await run(env, createActivities().validateConfig, { ...base(), preprocess: { blockSize: 32 } }, 'wf');
    expect(v.baseModel).toBe(model);
    expect(v.continuedFrom).toBeNull();
    mkdirSync(join(root, 'series'), { recursive: true });
    writeFileSync(join(root, 'series', 'latest.json'), JSON.stringify({ modelDir: model, workflowId: 'x', step: 1, evalLoss: null, finishedAt: '' }));
    const s = await run(env, createActivities().validateConfig, { ...base(), name: 'series', model: { init: 'random', continueSeries: true }, preprocess: { blockSize: 32 }, tokenizer: { type: 'huggingface', path: model } }, 'wf');
    expect(s.continuedFrom).toBe(model);
  });
});

describe('instruct examples whose answer blockSize cuts off', () => {
  const cfgAt = (blockSize: number) =>
    parseConfig({
      name: 'alpaca', storage: { root },
      data: { train: { type: 'jsonl', path: join(root, 'alpaca.jsonl') }, validationFraction: 0 },
      preprocess: { mode: 'instruct', blockSize },
      model: { nLayer: 1, nHead: 2, nEmbd: 16, nPositions: 64 },
      training: { backend: 'cpu', microBatchSize: 1, maxSteps: 3, warmupSteps: 0, precision: 'fp32' },
      checkpoint: { everySteps: 3, everyMinutes: 0, keepLast: 2 },
    });

  it('are dropped and reported, and micro-batch 1 trains over every sequence', async () => {
    const acts = createActivities();
    const cfg = cfgAt(64);
    const data: PreparedData = await run(new MockActivityEnvironment(), acts.prepareData, cfg);
    expect(data.warnings).toEqual([
      'train: 1 of 3 examples dropped: no token of theirs would carry loss (the response starts after the first 64 tokens); raise preprocess.blockSize to keep them',
    ]);
    expect(data.train.sequences).toBe(2);
    const runDir = join(root, 'alpaca', 'run');
    const r = await run(new MockActivityEnvironment(), acts.trainSegment, { cfg, runDir, checkpointRoot: join(runDir, 'checkpoints'), dataDir: data.dataDir, fromStep: 0, toStep: 3, totalSteps: 3, resumeFrom: null });
    expect(r.checkpoint.step).toBe(3);
  });

  it('when no example keeps an answer, prepare says so and names the setting', async () => {
    const err = await run(new MockActivityEnvironment(), createActivities().prepareData, cfgAt(16)).catch((e: any) => e);
    expect(err.nonRetryable).toBe(true);
    expect(err.message).toMatch(/all 3 examples were dropped: no token of theirs would carry loss within blockSize 16; raise preprocess\.blockSize/);
  });
});

describe('chat fine-tuning of a Llama-family folder, export', () => {
  let cfg: FinetuneConfig;
  let modelDir: string;

  it('validate → prepare → train → export', async () => {
    const acts = createActivities();
    const env = () => new MockActivityEnvironment();
    const v = await run(env(), acts.validateConfig, { ...base(), data: { train: { type: 'jsonl', path: join(root, 'chat.jsonl') }, validationFraction: 0 }, preprocess: { mode: 'chat', blockSize: 32 } }, 'wf-chat');
    cfg = v.cfg;
    expect(cfg.tokenizer).toEqual({ type: 'huggingface', path: model });
    const data: PreparedData = await run(env(), acts.prepareData, cfg);
    expect(data.train.sequences).toBe(4);
    const r = await run(env(), acts.trainSegment, { cfg, runDir: v.runDir, checkpointRoot: v.checkpointRoot, dataDir: data.dataDir, fromStep: 0, toStep: 2, totalSteps: 2, resumeFrom: null });
    expect(r.checkpoint.step).toBe(2);
    const ck = (await listCheckpoints(v.checkpointRoot))[0]!;
    modelDir = v.modelDir;
    await run(env(), acts.exportModel, { cfg, checkpoint: ck, modelDir });

    const config = readFileSync(join(modelDir, 'config.json'), 'utf8');
    expect(JSON.parse(config)).toMatchObject({ model_type: 'llama', bos_token_id: 1, eos_token_id: 2, vocab_size: 300 });
    expect(config).toMatch(/"rms_norm_eps": 1e-06,/);
    expect(config).not.toMatch(/9\.99999/);
    expect(readFileSync(join(modelDir, 'tokenizer_config.json'), 'utf8')).toBe(readFileSync(join(model, 'tokenizer_config.json'), 'utf8'));
    expect(readFileSync(join(modelDir, 'generation_config.json'), 'utf8')).toBe(readFileSync(join(model, 'generation_config.json'), 'utf8'));
  });

  it('packed chat data (pad false) reports its packing and trains on the cpu backend', async () => {
    const acts = createActivities();
    const env = () => new MockActivityEnvironment();
    const v = await run(env(), acts.validateConfig, { ...base(), name: 'packed', data: { train: { type: 'jsonl', path: join(root, 'chat.jsonl') }, validationFraction: 0 }, preprocess: { mode: 'chat', blockSize: 32, pad: false } }, 'wf-packed');
    const data: PreparedData = await run(env(), acts.prepareData, v.cfg);
    expect(data.packing!.examplesPerSequence).toBeGreaterThanOrEqual(1);
    expect(data.packing!.efficiency).toBeGreaterThan(0);
    expect(data.packing!.efficiency).toBeLessThanOrEqual(1);
    const r = await run(env(), acts.trainSegment, { cfg: v.cfg, runDir: v.runDir, checkpointRoot: v.checkpointRoot, dataDir: data.dataDir, fromStep: 0, toStep: 2, totalSteps: 2, resumeFrom: null });
    expect(r.checkpoint.step).toBe(2);
  });

  it.skipIf(!process.env.TRANSFORMERS_PYTHON)('loads with AutoTokenizer: eos/bos, the chat template gives the source’s ids', () => {
    const r = spawnSync(process.env.TRANSFORMERS_PYTHON!, [join(FIX, 'chat/check_export.py'), modelDir, model], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
    expect(res).toMatchObject({ bos_token: '<s>', eos_token: '</s>', bos_token_id: 1, eos_token_id: 2, same_ids: true });
  });

  it('a GPT-2 model trained with another tokenizer exports that tokenizer’s ids, with a tokenizer_config.json and a built-in chat template', async () => {
    const acts = createActivities();
    const env = () => new MockActivityEnvironment();
    const cfg2 = parseConfig({
      name: 'gpt2-chat', storage: { root },
      data: { train: { type: 'jsonl', path: join(root, 'chat.jsonl') }, validationFraction: 0 },
      preprocess: { mode: 'chat', blockSize: 64, chat: { template: 'chatml' } },
      tokenizer: { type: 'huggingface', path: join(FIX, 'golden/families/llama-tokenizer') },
      model: { nLayer: 1, nHead: 2, nEmbd: 16, nPositions: 64, vocabSize: 300 },
      training: { backend: 'cpu', microBatchSize: 1, maxSteps: 1, warmupSteps: 0, precision: 'fp32' },
      checkpoint: { everySteps: 1, everyMinutes: 0, keepLast: 2 },
    });
    const v = await run(env(), acts.validateConfig, cfg2, 'wf-gpt2');
    const data: PreparedData = await run(env(), acts.prepareData, v.cfg);
    await run(env(), acts.trainSegment, { cfg: v.cfg, runDir: v.runDir, checkpointRoot: v.checkpointRoot, dataDir: data.dataDir, fromStep: 0, toStep: 1, totalSteps: 1, resumeFrom: null });
    const ck = (await listCheckpoints(v.checkpointRoot))[0]!;
    await run(env(), acts.exportModel, { cfg: v.cfg, checkpoint: ck, modelDir: v.modelDir });
    const config = readFileSync(join(v.modelDir, 'config.json'), 'utf8');
    expect(JSON.parse(config)).toMatchObject({ model_type: 'gpt2', bos_token_id: 1, eos_token_id: 2 });
    expect(config).toMatch(/"layer_norm_epsilon": 1e-05,/);
    expect(config).not.toMatch(/50256/);
    expect(JSON.parse(readFileSync(join(v.modelDir, 'generation_config.json'), 'utf8'))).toEqual({ bos_token_id: 1, eos_token_id: 2 });
    const tc = JSON.parse(readFileSync(join(v.modelDir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    expect(tc).toMatchObject({ tokenizer_class: 'PreTrainedTokenizerFast', bos_token: '<s>', eos_token: '</s>', model_max_length: 64 });
    expect(tc.chat_template).toMatch(/<\|im_start\|>/);
    expect(existsSync(join(v.modelDir, 'special_tokens_map.json'))).toBe(false);
  });
});
