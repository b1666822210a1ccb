// Llama-style tokenizers through the data pipeline: a tiny SentencePiece-derived BPE tokenizer.json with byte
// fallback (test/fixtures/golden/families/llama-tokenizer, 299 ids, fits the llama golden model's 300): both
// tokenizer libraries agree and round-trip bytes outside the vocabulary; BOS comes from the post-processor
// template (Llama adds <s>, GPT-2-style tokenizers add nothing).
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import tokenizers from 'tokenizers';
import { loadTokenizer } from '../../datasets/index.js';

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
