// The built-in GPT-2 tokenizer against token ids known from GPT-2's published vocabulary, agreement between the
// two libraries that load it, and the safe cutting of long texts.
import { Tokenizer } from 'tokenizers';
import { describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../datasets/index.js';
import { safePieces } from '../../datasets/pieces.js';
import { readText, SHAKESPEARE_TEXT } from './helpers.js';

describe('gpt2 tokenizer', async () => {
  const tok = await loadTokenizer({ type: 'gpt2' });
  const rust = Tokenizer.fromString(tok.json);
  const rustIds = async (t: string) => (await rust.encode(t, null, { addSpecialTokens: false })).getIds();

  it('gives GPT-2 ids', async () => {
    const known: [string, number[]][] = [
      ['Hello world', [15496, 995]],
      ['Hello, world!', [15496, 11, 995, 0]],
      [' the', [262]],
      ['The', [464]],
      ['\n', [198]],
      ['<|endoftext|>', [50256]],
      [' The quick brown fox', [383, 2068, 7586, 21831]],
    ];
    for (const [text, ids] of known) {
      expect(tok.encode(text), text).toEqual(ids);
      expect(await rustIds(text), text).toEqual(ids);
    }
    expect(tok.eosId).toBe(50256);
    expect(tok.padId).toBe(50256);
    expect(tok.vocabSize).toBe(50257);
    expect(tok.sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('decodes back to the text', () => {
    const text = 'First Citizen:\nBefore we proceed any further, hear me speak.\n\nÀ bientôt — 東京 🐋';
    expect(tok.decode(tok.encode(text))).toBe(text);
  });

  it('pure-JS and Rust agree on a thousand lines of Shakespeare', async () => {
    const lines = readText(SHAKESPEARE_TEXT).split('\n').slice(0, 1000).filter((l) => l.trim());
    const batch = await rust.encodeBatch(lines, { addSpecialTokens: false });
    lines.forEach((l, i) => expect(tok.encode(l)).toEqual(batch[i]!.getIds()));
  });

  it('cutting at safe boundaries does not change the ids', async () => {
    const text = readText(SHAKESPEARE_TEXT).slice(0, 60_000);
    const whole = await rustIds(text);
    const pieces = [...safePieces(text, 777)];
    expect(pieces.length).toBeGreaterThan(50);
    expect(pieces.join('')).toBe(text);
    const cut = (await rust.encodeBatch(pieces, { addSpecialTokens: false })).flatMap((e) => e.getIds());
    expect(cut).toEqual(whole);
    // one line with no newline: cut at spaces
    const line = 'word '.repeat(5000) + 'end';
    const lp = [...safePieces(line, 500)];
    expect(lp.every((p) => p.length <= 500)).toBe(true);
    expect((await rust.encodeBatch(lp, { addSpecialTokens: false })).flatMap((e) => e.getIds())).toEqual(await rustIds(line));
    // the synchronous encode cuts long input itself and still agrees
    expect(tok.encode(text)).toEqual(whole);
  });

  it('loads a Hugging Face tokenizer.json by path, and names a missing one', async () => {
    const hf = await loadTokenizer({ type: 'huggingface', path: tok.tokenizerJsonPath });
    expect(hf.encode('Hello world')).toEqual([15496, 995]);
    expect(hf.sha256).toBe(tok.sha256);
    await expect(loadTokenizer({ type: 'huggingface', path: '/nonexistent/tok' })).rejects.toThrow(/\/nonexistent\/tok.*cannot read tokenizer.json/);
  });
});
