// The acceptance check of the data half: `finetune prepare` on tinyshakespeare in concat mode, block_size 512,
// GPT-2 tokenizer, accounts for every GPT-2 token of the corpus across train, validation and the dropped tails.
//
// Independently of the pipeline: tokenize the whole file as ONE string with the Rust tokenizer; check that it is
// exactly the paragraphs' tokens separated by blank-line tokens (newlines only); then rebuild each split's
// stream (its paragraphs in order, EOS after each, the split chosen by hash(seed, index)) and check that the
// shards hold exactly its first sequences*512 tokens, in order, and the rest is the reported dropped tail.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Tokenizer } from 'tokenizers';
import { describe, expect, it } from 'vitest';
import { isValidation, loadTokenizer, type Manifest } from '../../datasets/index.js';
import { readSplit, readText, SHAKESPEARE, tmp } from './helpers.js';

const ROOT = resolve(import.meta.dirname, '../..');

/** Paragraphs: maximal runs of non-blank lines, joined by '\n' (written here independently of the readers). */
function paragraphs(text: string): string[] {
  const out: string[] = [];
  let cur: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      if (cur.length) out.push(cur.join('\n'));
      cur = [];
    } else cur.push(line);
  }
  if (cur.length) out.push(cur.join('\n'));
  return out;
}

describe.skipIf(!existsSync(SHAKESPEARE))('token accounting on tinyshakespeare', () => {
  it('every GPT-2 token is in train, validation or a dropped tail, once, in order', async () => {
    const work = tmp('acct-');
    const cfgFile = join(work, 'config.json');
    writeFileSync(
      cfgFile,
      JSON.stringify({
        data: { train: { type: 'text', path: SHAKESPEARE }, validationFraction: 0.05, splitSeed: 1234 },
        preprocess: { mode: 'concat', blockSize: 512, sequencesPerShard: 256, workers: 2 }, // the worker-thread path
        tokenizer: { type: 'gpt2' },
        storage: { root: work },
      }),
    );
    const out = join(work, 'out');
    const { stdout } = await promisify(execFile)(process.execPath, ['bin/finetune.js', 'prepare', cfgFile, '--out', out, '--json'], { cwd: ROOT, maxBuffer: 1 << 26 });
    const { manifest: m } = JSON.parse(stdout) as { manifest: Manifest };

    const tok = await loadTokenizer({ type: 'gpt2' });
    const rust = Tokenizer.fromString(tok.json);
    const enc = async (ts: string[]) => (await rust.encodeBatch(ts, { addSpecialTokens: false })).map((e) => e.getIds());
    const text = readText(SHAKESPEARE);
    const [whole] = await enc([text]);
    expect(whole!.length).toBe(338_025); // GPT-2 tokens of the file as one text

    const paras = paragraphs(text);
    const pids = await enc(paras);
    // whole = paragraph tokens, each followed by its blank-line separator: newline tokens only (198 '\n', 628 '\n\n')
    let pos = 0;
    let separators = 0;
    for (const ids of pids) {
      expect(whole!.slice(pos, pos + ids.length)).toEqual(ids);
      pos += ids.length;
      while (pos < whole!.length && (whole![pos] === 198 || whole![pos] === 628)) {
        pos++;
        separators++;
      }
    }
    expect(pos).toBe(whole!.length);

    const streams: number[][] = [[], []];
    pids.forEach((ids, i) => streams[isValidation(1234, i, 0.05) ? 1 : 0]!.push(...ids, tok.eosId));
    let total = 0;
    for (const [k, split] of [[0, 'train'], [1, 'validation']] as const) {
      const st = m.splits[split];
      const s = await readSplit(out, m, split);
      const stream = streams[k]!;
      expect(s.ids.length).toBe(st.sequences * 512);
      expect(s.ids).toEqual(stream.slice(0, s.ids.length));
      expect(s.labels).toEqual(s.ids);
      expect(st.droppedTokens).toBe(stream.length - s.ids.length);
      expect(st.droppedTokens).toBeLessThan(512);
      expect(st.sourceTokens).toBe(stream.length);
      expect(st.examples).toBe(stream.filter((t) => t === tok.eosId).length);
      total += st.tokens + st.droppedTokens;
    }
    expect(m.splits.train.shards.length).toBeGreaterThan(1);
    // corpus tokens = paragraph tokens + separators; the pipeline replaced each separator by one EOS
    const eosCount = m.splits.train.examples + m.splits.validation.examples;
    expect(total - eosCount + separators).toBe(whole!.length);
  });
});
