// Bounded memory: prepare streams. A child `finetune prepare` with a 48 MB V8 heap handles a corpus eight times
// that size, and its peak RSS does not grow with the corpus (16 MiB vs 400 MiB of text).
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { rmSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { Manifest } from '../../datasets/index.js';
// @ts-expect-error plain .mjs fixture without type declarations
import { writeCorpus } from '../fixtures/datasets/gen-corpus.mjs';
import { FIXTURES, tmp } from './helpers.js';

const ROOT = resolve(import.meta.dirname, '../..');
const HEAP_MB = 48;

/** Run `finetune prepare` in a child with a small heap; returns its manifest and peak RSS (bytes). */
async function prepareInChild(work: string, corpus: string): Promise<{ manifest: Manifest; rss: number }> {
  const cfgFile = join(work, `${corpus}.json`);
  writeFileSync(
    cfgFile,
    JSON.stringify({ data: { train: { type: 'text', path: join(work, corpus) } }, preprocess: { mode: 'concat', blockSize: 256, workers: 2 }, storage: { root: work } }), // same (worker) path for both sizes
  );
  // async: a synchronous spawn would block this vitest worker's RPC for a minute
  const r = await promisify(execFile)(
    process.execPath,
    [`--max-old-space-size=${HEAP_MB}`, '--import', join(FIXTURES, 'report-rss.mjs'), 'bin/finetune.js', 'prepare', cfgFile, '--out', join(work, `${corpus}.out`), '--json'],
    { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 26 },
  );
  return {
    manifest: (JSON.parse(r.stdout.toString()) as { manifest: Manifest }).manifest,
    rss: Number(/MAXRSS_KB (\d+)/.exec(r.stderr.toString())![1]) * 1024,
  };
}

describe('bounded memory', () => {
  it(`a corpus 8x the heap (${HEAP_MB} MB) streams through; peak RSS does not grow with the corpus`, async () => {
    const work = tmp('mem-');
    onTestFinished(() => rmSync(work, { recursive: true, force: true })); // ~0.6 GB of corpus and shards
    writeCorpus(join(work, 'small.txt'), 16);
    writeCorpus(join(work, 'big.txt'), 400);
    expect(statSync(join(work, 'big.txt')).size).toBeGreaterThan(8 * HEAP_MB * 2 ** 20);
    const rss: number[] = [];
    for (const corpus of ['small.txt', 'big.txt']) {
      const { manifest: m, rss: peak } = await prepareInChild(work, corpus);
      const t = m.splits.train;
      const v = m.splits.validation;
      expect(t.tokens + t.droppedTokens).toBe(t.sourceTokens);
      expect(t.sequences).toBe(t.shards.reduce((a, s) => a + s.sequences, 0));
      // ~10 bytes per token in this corpus: everything was read
      expect(t.sourceTokens + v.sourceTokens).toBeGreaterThan(statSync(join(work, corpus)).size / 12);
      rss.push(peak);
    }
    console.log(`peak RSS: 16 MiB corpus ${(rss[0]! / 2 ** 20).toFixed(0)} MiB, 400 MiB corpus ${(rss[1]! / 2 ** 20).toFixed(0)} MiB`);
    // Keeping any O(corpus) state would cost more than 128 MiB here: the extra 384 MiB of text itself, or its ~160 MB
    // of token ids. What does vary between runs is allocator and GC slack (V8 heaps are capped, but the Rust
    // tokenizers' native buffers are freed only when their JS wrappers are collected, and glibc keeps an arena
    // per thread): seen here from 15 to 35 MiB, and 64 MiB once on a loaded CI machine with a 144 MiB corpus,
    // so a bound at the size of that noise failed. This one sits between the noise and a real leak.
    expect(rss[1]! - rss[0]!).toBeLessThan(128 * 2 ** 20);
  }, 600_000); // 420 MB through the tokenizer on 2 cores: about a minute alone, several when the machine is busy
});
