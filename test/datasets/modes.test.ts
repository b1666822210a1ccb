// Exact token ids, labels and masks in every preprocessing mode, on fixtures small enough to check by hand.
// GPT-2 ids used: "Hello" 15496, " world" 995, "<|endoftext|>" 50256 (also the pad id).
import { describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { alpacaPrompt, loadTokenizer, prepareData, readShard } from '../../datasets/index.js';
import { config, FIXTURES, readSplit, tmp } from './helpers.js';

const H = 15496, W = 995, EOS = 50256, X = -100;

describe('preprocessing modes', () => {
  it('concat: documents joined with EOS, cut into blocks, tail reported', async () => {
    // hello.txt: two paragraphs "Hello world" → H W EOS H W EOS → one block of 4, 2 dropped
    const cfg = config({ data: { train: { type: 'text', path: `${FIXTURES}/hello.txt` }, validationFraction: 0 }, preprocess: { mode: 'concat', blockSize: 4 } });
    const { dir, manifest: m } = await prepareData(cfg);
    const s = await readSplit(dir, m, 'train');
    expect(s.ids).toEqual([H, W, EOS, H]);
    expect(s.labels).toEqual([H, W, EOS, H]); // not shifted: labels[t] is the token at t
    expect(s.mask).toEqual([]); // no padding, no attention_mask column
    expect(m.columns).toEqual(['input_ids', 'labels']);
    expect(m.splits.train).toMatchObject({ examples: 2, sequences: 1, tokens: 4, droppedTokens: 2, sourceTokens: 6, paddingTokens: 0, lossTokens: 4 });
    expect(m.splits.validation.sequences).toBe(0);
  });

  it('a one-document corpus: the tail of its sequences is held out for validation, and the manifest says so', async () => {
    // One paragraph of text, and one JSONL record (one long line): no document can be drawn for validation.
    const dir0 = tmp();
    const text = Array.from({ length: 200 }, (_, i) => `word${i % 17} and the sea`).join(' ');
    writeFileSync(join(dir0, 'one.txt'), text);
    writeFileSync(join(dir0, 'one.jsonl'), JSON.stringify({ text }) + '\n');
    for (const train of [{ type: 'text', path: join(dir0, 'one.txt') }, { type: 'jsonl', path: join(dir0, 'one.jsonl') }] as const) {
      const cfg = config({ data: { train, validationFraction: 0.1 }, preprocess: { mode: 'concat', blockSize: 16 } });
      const whole = await prepareData(config({ ...cfg, storage: { root: tmp() }, data: { ...cfg.data, validationFraction: 0 } }));
      const { dir, manifest: m } = await prepareData(cfg);
      const n = whole.manifest.splits.train.sequences;
      const held = Math.round(0.1 * n);
      expect(held).toBeGreaterThan(0);
      expect(m.splits.validation).toMatchObject({ sequences: held, heldOutFromTrain: held, examples: 0 });
      expect(m.splits.train.sequences).toBe(n - held);
      // The same sequences, split at the tail: train + validation = the whole train split, in order.
      const all = await readSplit(whole.dir, whole.manifest, 'train');
      const tr = await readSplit(dir, m, 'train');
      const va = await readSplit(dir, m, 'validation');
      expect([...tr.ids, ...va.ids]).toEqual(all.ids);
      expect([...tr.labels, ...va.labels]).toEqual(all.labels);
      expect(m.splits.train.tokens + m.splits.validation.tokens).toBe(whole.manifest.splits.train.tokens);
      expect(m.splits.train.lossTokens + m.splits.validation.lossTokens).toBe(whole.manifest.splits.train.lossTokens);
      expect(m.splits.train.sourceTokens + m.splits.validation.sourceTokens).toBe(whole.manifest.splits.train.sourceTokens);
    }
  });

  it('concat reads JSONL and CSV rows as documents', async () => {
    for (const train of [
      { type: 'jsonl', path: `${FIXTURES}/hello.jsonl`, field: 'text' },
      { type: 'csv', path: `${FIXTURES}/hello.csv`, column: 'body' },
    ] as const) {
      const cfg = config({ data: { train, validationFraction: 0 }, preprocess: { mode: 'concat', blockSize: 3 } });
      const { dir, manifest: m } = await prepareData(cfg);
      expect((await readSplit(dir, m, 'train')).ids).toEqual([H, W, EOS, H, W, EOS]);
    }
  });

  it('lines: stripped, speaker and empty lines dropped, padded with labels -100 and mask 0', async () => {
    // lines.txt: "Hello world" / "FOO:" / "" / "  Hello world  "
    const cfg = config({ data: { train: { type: 'text', path: `${FIXTURES}/lines.txt` }, validationFraction: 0 }, preprocess: { mode: 'lines', blockSize: 4 } });
    const { dir, manifest: m } = await prepareData(cfg);
    const s = await readSplit(dir, m, 'train');
    expect(s.ids).toEqual([H, W, EOS, EOS, H, W, EOS, EOS]);
    expect(s.labels).toEqual([H, W, X, X, H, W, X, X]); // no loss on padding although pad == EOS
    expect(s.mask).toEqual([1, 1, 0, 0, 1, 1, 0, 0]);
    expect(m.splits.train).toMatchObject({ examples: 2, sequences: 2, tokens: 4, paddingTokens: 4, lossTokens: 4 });
  });

  it('lines: keeps speaker lines when asked, truncates long lines and counts them', async () => {
    const cfg = config({
      data: { train: { type: 'text', path: `${FIXTURES}/lines.txt` }, validationFraction: 0 },
      preprocess: { mode: 'lines', blockSize: 2, dropSpeakerLines: false },
    });
    const { dir, manifest: m } = await prepareData(cfg);
    const s = await readSplit(dir, m, 'train');
    const tok = await loadTokenizer({ type: 'gpt2' });
    const foo = tok.encode('FOO:');
    expect(foo.length).toBeGreaterThan(1);
    expect(s.ids).toEqual([H, W, ...foo.slice(0, 2), H, W]);
    expect(m.splits.train).toMatchObject({ examples: 3, truncatedExamples: foo.length > 2 ? 1 : 0, droppedTokens: Math.max(0, foo.length - 2) });
  });

  it('lines, packed (pad: false): whole lines with EOS packed greedily, rest padded', async () => {
    const cfg = config({ data: { train: { type: 'text', path: `${FIXTURES}/lines.txt` }, validationFraction: 0 }, preprocess: { mode: 'lines', blockSize: 4, pad: false } });
    const { dir, manifest: m } = await prepareData(cfg);
    const s = await readSplit(dir, m, 'train');
    // "H W EOS" fits; the second "H W EOS" does not fit in the 1 slot left: pad, new block. Each example's first
    // label is -100 (never a target within its example) and position ids restart per example.
    expect(s.ids).toEqual([H, W, EOS, EOS, H, W, EOS, EOS]);
    expect(s.labels).toEqual([X, W, EOS, X, X, W, EOS, X]);
    expect(s.mask).toEqual([1, 1, 1, 0, 1, 1, 1, 0]);
    const sh = await readShard(join(dir, m.splits.train.shards[0]!.path));
    expect(Array.from(sh.positionIds!)).toEqual([0, 1, 2, 0, 0, 1, 2, 0]);
    expect(m.splits.train.packing).toEqual({ examplesPerSequence: 1, efficiency: 0.75 });
  });

  it('instruct: Alpaca prompt, loss only on the response and its EOS', async () => {
    const tok = await loadTokenizer({ type: 'gpt2' });
    const p1 = tok.encode(alpacaPrompt('Say hello.', ''));
    const p2 = tok.encode(alpacaPrompt('Repeat the input.', 'Hello world'));
    expect(alpacaPrompt('Say hello.', '')).toBe(
      'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nSay hello.\n\n### Response:',
    );
    expect(alpacaPrompt('Repeat the input.', 'Hello world')).toContain('paired with an input that provides further context.');
    const T = 128;
    const cfg = config({ data: { train: { type: 'jsonl', path: `${FIXTURES}/alpaca.jsonl` }, validationFraction: 0 }, preprocess: { mode: 'instruct', blockSize: T } });
    const { dir, manifest: m } = await prepareData(cfg);
    const s = await readSplit(dir, m, 'train');
    const expectRow = (row: number, prompt: number[]) => {
      const ids = [...prompt, H, W, EOS];
      const pad = T - ids.length;
      expect(s.ids.slice(row * T, (row + 1) * T)).toEqual([...ids, ...Array(pad).fill(EOS)]);
      expect(s.labels.slice(row * T, (row + 1) * T)).toEqual([...prompt.map(() => X), H, W, EOS, ...Array(pad).fill(X)]);
      expect(s.mask.slice(row * T, (row + 1) * T)).toEqual([...ids.map(() => 1), ...Array(pad).fill(0)]);
    };
    expectRow(0, p1);
    expectRow(1, p2);
    expect(m.splits.train.lossTokens).toBe(6);
  });

  it('instruct, packed: two examples share a block, prompts masked', async () => {
    const tok = await loadTokenizer({ type: 'gpt2' });
    const p1 = tok.encode(alpacaPrompt('Say hello.', ''));
    const p2 = tok.encode(alpacaPrompt('Repeat the input.', 'Hello world'));
    const T = 256;
    const cfg = config({ data: { train: { type: 'jsonl', path: `${FIXTURES}/alpaca.jsonl` }, validationFraction: 0 }, preprocess: { mode: 'instruct', blockSize: T, pad: false } });
    const { dir, manifest: m } = await prepareData(cfg);
    const s = await readSplit(dir, m, 'train');
    const real = [...p1, H, W, EOS, ...p2, H, W, EOS];
    expect(m.splits.train.sequences).toBe(1);
    expect(s.ids.slice(0, real.length)).toEqual(real);
    expect(s.labels.slice(0, real.length)).toEqual([...p1.map(() => X), H, W, EOS, ...p2.map(() => X), H, W, EOS]);
    expect(s.labels.slice(real.length).every((l) => l === X)).toBe(true);
  });
});
