// The tokenizer pool: worker and in-process paths give the same ids, and closing it with batches in flight (a
// cancelled or failed prepare) rejects them without unhandled rejections that would kill the worker process.
import { describe, expect, it } from 'vitest';
import { loadTokenizer } from '../../datasets/index.js';
import { EncodePool } from '../../datasets/encode-pool.js';
import { readText, SHAKESPEARE_TEXT } from './helpers.js';

describe('EncodePool', async () => {
  const tok = await loadTokenizer({ type: 'gpt2' });
  const texts = readText(SHAKESPEARE_TEXT).split('\n\n').slice(0, 2000);

  it('worker threads and the in-process tokenizer agree', async () => {
    const workers = new EncodePool(tok.json, 2);
    const here = new EncodePool(tok.json, -1);
    try {
      const [a, b] = await Promise.all([workers.encode(texts), here.encode(texts)]);
      expect(a.offsets).toEqual(b.offsets);
      expect(a.ids).toEqual(b.ids);
      expect(Array.from(a.ids.subarray(a.offsets[0]!, a.offsets[1]!))).toEqual(tok.encode(texts[0]!));
    } finally {
      await Promise.all([workers.close(), here.close()]);
    }
  });

  it('close() with batches in flight rejects them quietly', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const pool = new EncodePool(tok.json, 2);
      const inFlight = [pool.encode(texts), pool.encode(texts), pool.encode(texts)];
      await pool.close();
      await new Promise((r) => setTimeout(r, 50));
      expect(unhandled).toEqual([]);
      await expect(inFlight[0]).rejects.toThrow(/encode pool closed/);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });
});
