// Output stability: the exact ids and shard bytes of a fixed corpus, recorded before the pipeline's batching,
// fsync and commit steps were reorganised for speed (bench/tokenize.ts). Any change here means the same
// inputs now give different data under the same fingerprint: bump PREPARE_VERSION (fingerprint.ts) and
// re-record. The shard sha256s also pin the Parquet writer (parquet-wasm, Snappy); the id hashes do not.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { prepareData, type Manifest } from '../../datasets/index.js';
import { config, FIXTURES, readSplit } from './helpers.js';

const CORPUS = join(FIXTURES, 'shakespeare-excerpt.txt');

async function digest(dir: string, m: Manifest) {
  const out: Record<string, unknown> = {};
  for (const split of ['train', 'validation'] as const) {
    const s = await readSplit(dir, m, split);
    const h = (xs: number[]) => createHash('sha256').update(Int32Array.from(xs)).digest('hex').slice(0, 16);
    const { shards, ...stats } = m.splits[split];
    out[split] = { ...stats, ids: h(s.ids), labels: h(s.labels), mask: h(s.mask), shards: shards.map((x) => x.sha256.slice(0, 16)) };
  }
  return out;
}

const CASES = {
  concat: { preprocess: { mode: 'concat', blockSize: 128, sequencesPerShard: 64 } },
  lines: { preprocess: { mode: 'lines', blockSize: 32, sequencesPerShard: 512 } },
} as const;

describe('output is unchanged (golden)', () => {
  for (const [name, over] of Object.entries(CASES))
    for (const workers of [0, 2])
      it(`${name}, ${workers ? 'worker threads' : 'in-process'}`, async () => {
        const cfg = config({ data: { train: { type: 'text', path: CORPUS }, validationFraction: 0.1 }, ...over, preprocess: { ...over.preprocess, workers } });
        const { dir, manifest } = await prepareData(cfg);
        expect(await digest(dir, manifest)).toEqual(GOLDEN[name as keyof typeof CASES]);
      });
});

const GOLDEN: Record<keyof typeof CASES, unknown> = {
  concat: {
    train: {
      examples: 671,
      sequences: 209,
      tokens: 26752,
      paddingTokens: 0,
      lossTokens: 26752,
      truncatedExamples: 0,
      truncatedTokens: 0,
      droppedExamples: 0,
      droppedTokens: 92,
      sourceTokens: 26844,
      ids: '12bf5732144d3e93',
      labels: '12bf5732144d3e93',
      mask: 'e3b0c44298fc1c14',
      shards: [
        'e472bf0fc68163ac',
        '277268bebd3555f3',
        '79baa75d9a31397f',
        'b35778d32ff27b45'
      ]
    },
    validation: {
      examples: 70,
      sequences: 23,
      tokens: 2944,
      paddingTokens: 0,
      lossTokens: 2944,
      truncatedExamples: 0,
      truncatedTokens: 0,
      droppedExamples: 0,
      droppedTokens: 68,
      sourceTokens: 3012,
      ids: '59278d3241385059',
      labels: '59278d3241385059',
      mask: 'e3b0c44298fc1c14',
      shards: [
        '9f0c1d6c792614f9'
      ]
    }
  },
  lines: {
    train: {
      examples: 2146,
      sequences: 2143,
      tokens: 20400,
      paddingTokens: 48176,
      lossTokens: 20400,
      truncatedExamples: 0,
      truncatedTokens: 0,
      droppedExamples: 3,
      droppedTokens: 3,
      sourceTokens: 20403,
      ids: '8b9cbb27af15e5b9',
      labels: '1da68e626818635a',
      mask: 'fecfe3f47de3ea32',
      shards: [
        '50759f1df5d5a2e7',
        '4081ac1b92429531',
        '3ba3e12165cd93ef',
        '269cfe389f8850e6',
        '02d8efb403c3f5b8'
      ]
    },
    validation: {
      examples: 216,
      sequences: 216,
      tokens: 2069,
      paddingTokens: 4843,
      lossTokens: 2069,
      truncatedExamples: 0,
      truncatedTokens: 0,
      droppedExamples: 0,
      droppedTokens: 0,
      sourceTokens: 2069,
      ids: '08a999a37cc83b5d',
      labels: '8aa71de3442dd916',
      mask: '1dcdefcf554933aa',
      shards: [
        '02baa4be46b2fbb7'
      ]
    }
  },
};
