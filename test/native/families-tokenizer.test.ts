// Llama-style tokenizers through the data pipeline: a tiny SentencePiece-derived BPE tokenizer.json with byte
// fallback (test/fixtures/golden/families/llama-tokenizer, 299 ids, fits the llama golden model's 300): both
// tokenizer libraries agree and round-trip bytes outside the vocabulary; BOS comes from the post-processor
// template (Llama adds <s>, GPT-2-style tokenizers add nothing), and the pipeline starts every document / line /
// example with it, with EOS between documents as before.
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import tokenizers from 'tokenizers';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { alpacaPrompt, loadTokenizer, prepareData, readShard } from '../../datasets/index.js';
import { Engine } from '../../native/index.js';
import { tinyConfig, tmp } from './helpers.js';
import { config, FIXTURES, readSplit } from '../datasets/helpers.js';

const TOK = resolve(import.meta.dirname, '../fixtures/golden/families/llama-tokenizer/tokenizer.json');

describe('llama-style tokenizer.json (byte-fallback BPE)', () => {
  it('finds BOS from the template and EOS </s>; GPT-2 has no BOS', async () => {
    const t = await loadTokenizer({ type: 'huggingface', path: TOK });
    expect(t).toMatchObject({ bosId: 1, eosId: 2, vocabSize: 299 });
    expect((await loadTokenizer({ type: 'gpt2' })).bosId).toBeUndefined();
  });

  it('byte fallback: the Rust and JS tokenizers agree and decode back to the text', async () => {
    const t = await loadTokenizer({ type: 'huggingface', path: TOK });
    const text = 'The cat sat on the mat. Ça coûte 5€ — 猫';
    const ids = t.encode(text);
    expect(ids.some((i) => i >= 3 && i < 259)).toBe(true);  // <0xNN> byte tokens
    expect(t.decode(ids)).toBe(text);
    const { Tokenizer } = tokenizers as unknown as { Tokenizer: { fromFile(p: string): { encodeBatch(t: string[], o: object): Promise<{ getIds(): number[] }[]> } } };
    const rust = Tokenizer.fromFile(TOK);
    const [plain] = await rust.encodeBatch([text], { addSpecialTokens: false });
    expect(plain!.getIds()).toEqual(ids);
    const [withSpecial] = await rust.encodeBatch([text], { addSpecialTokens: true });
    expect(withSpecial!.getIds()).toEqual([1, ...ids]);  // what HF's tokenizer(text) gives: the pipeline's BOS
  });
});

describe('BOS/EOS placement in the data pipeline for a Llama-style tokenizer', () => {
  const BOS = 1, EOS = 2, X = -100;
  const tokenizer = { type: 'huggingface' as const, path: TOK };

  it('concat: every document starts with BOS and ends with EOS', async () => {
    const tok = await loadTokenizer(tokenizer);
    const hw = tok.encode('Hello world');
    const doc = [BOS, ...hw, EOS];
    // hello.txt: two paragraphs "Hello world"
    const cfg = config({ tokenizer, data: { train: { type: 'text', path: `${FIXTURES}/hello.txt` }, validationFraction: 0 },
      preprocess: { mode: 'concat', blockSize: doc.length } });
    const { dir, manifest: m } = await prepareData(cfg);
    const s = await readSplit(dir, m, 'train');
    expect(s.ids).toEqual([...doc, ...doc]);
    expect(s.labels).toEqual([...doc, ...doc]);
  });

  it('lines: each line starts with BOS; padding carries no loss', async () => {
    const tok = await loadTokenizer(tokenizer);
    const hw = tok.encode('Hello world');
    const T = hw.length + 3;
    const cfg = config({ tokenizer, data: { train: { type: 'text', path: `${FIXTURES}/lines.txt` }, validationFraction: 0 },
      preprocess: { mode: 'lines', blockSize: T } });
    const { dir, manifest: m } = await prepareData(cfg);
    const s = await readSplit(dir, m, 'train');
    const row = [BOS, ...hw, EOS, EOS];  // padded with the pad id (= EOS here)
    expect(s.ids).toEqual([...row, ...row]);
    expect(s.labels).toEqual([BOS, ...hw, X, X, BOS, ...hw, X, X]);
  });

  it('instruct: BOS opens the prompt (masked), EOS closes the response (trained)', async () => {
    const tok = await loadTokenizer(tokenizer);
    const p1 = tok.encode(alpacaPrompt('Say hello.', ''));
    const r = tok.encode('Hello world');
    const T = 1 + p1.length + r.length + 1;
    const cfg = config({ tokenizer, data: { train: { type: 'jsonl', path: `${FIXTURES}/alpaca.jsonl` }, validationFraction: 0 },
      preprocess: { mode: 'instruct', blockSize: T + 64 } });
    const { dir, manifest: m } = await prepareData(cfg);
    const s = await readSplit(dir, m, 'train');
    expect(s.ids.slice(0, T)).toEqual([BOS, ...p1, ...r, EOS]);
    expect(s.labels.slice(0, T)).toEqual([X, ...p1.map(() => X), ...r, EOS]);
  });
});

describe('a Llama model fine-tuned on data from its own tokenizer', () => {
  const model = resolve(import.meta.dirname, '../fixtures/golden/families/llama/model');
  it.skipIf(!existsSync(join(model, 'config.json')))('prepares, trains, and exports with the tokenizer.json', async () => {
    const tokenizer = { type: 'huggingface' as const, path: TOK };
    const text = resolve(import.meta.dirname, '../fixtures/datasets/lines.txt');
    const cfg = config({ tokenizer, data: { train: { type: 'text', path: text }, validationFraction: 0 },
      preprocess: { mode: 'concat', blockSize: 8 } });
    const { dir, manifest: m } = await prepareData(cfg);
    const shards = await Promise.all(m.splits.train.shards.map((s) => readShard(join(dir, s.path))));
    expect(shards[0]!.inputIds[0]).toBe(1);  // the document opens with <s>
    const e = await Engine.create(tinyConfig({ model: { init: 'pretrained', path: model }, preprocess: { blockSize: 8 },
      training: { microBatchSize: 1, learningRate: 1e-3, warmupSteps: 0 } }));
    e.setTrainData(shards.map((s) => ({ nSeq: s.nSeq, blockSize: s.blockSize, inputIds: s.inputIds, labels: s.labels })));
    const r = await e.train(2, { totalSteps: 2 });
    expect(r.losses.every(Number.isFinite)).toBe(true);
    const out = join(tmp('fam-tok'), 'hf');
    await e.exportHuggingFace(out, { tokenizerJson: TOK });
    expect(readFileSync(join(out, 'tokenizer.json'), 'utf8')).toBe(readFileSync(TOK, 'utf8'));
    const gen = JSON.parse(readFileSync(join(out, 'generation_config.json'), 'utf8')) as { bos_token_id: number; eos_token_id: number };
    expect(gen).toMatchObject({ bos_token_id: 1, eos_token_id: 2 });  // the model's own ids, not GPT-2's
    e.dispose();
  });
});
