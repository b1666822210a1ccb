// The engine side of the transformers parity check for the Llama / GPT-NeoX / GPT-J families: for each family
// (and variant) a small model is initialised by the engine, trained a few steps, exported as a Hugging Face
// directory, and its fp32 logits for a probe batch are saved as engine_logits.safetensors (input_ids, logits).
// test/fixtures/golden/families/make_golden_families.py --check-exports DIR loads each directory with
// transformers' AutoModelForCausalLM and compares logits.
//   npx tsx native/scripts/families-export-check.ts tmp/families-export
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseConfig, type FinetuneConfigInput } from '../../configs/index.js';
import { Engine } from '../index.js';

const out = resolve(process.argv[2] ?? 'tmp/families-export');
mkdirSync(out, { recursive: true });
const V = 300, T = 16;
const variants: Record<string, FinetuneConfigInput['model']> = {
  llama: { family: 'llama', nKvHead: 2, intermediateSize: 128 },
  llama_tied_llama3: { family: 'llama', nKvHead: 1, tieWordEmbeddings: true, ropeTheta: 500000,
    ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8 } },
  gpt_neox: { family: 'gpt_neox', rotaryPct: 0.25 },
  gpt_neox_sequential: { family: 'gpt_neox', rotaryPct: 0.5, parallelResidual: false },
  gptj: { family: 'gptj', rotaryDim: 8 },
};
const tokens = new Int32Array(64 * T);
for (let i = 0; i < tokens.length; i++) tokens[i] = (i * 7 + (i >> 4) * 3) % V;
const summary: Record<string, unknown> = {};
for (const [name, model] of Object.entries(variants)) {
  const cfg = parseConfig({
    model: { nLayer: 2, nHead: 4, nEmbd: 64, nPositions: 32, vocabSize: V, initSeed: 7, ...model },
    preprocess: { blockSize: T },
    training: { backend: 'cpu', microBatchSize: 8, learningRate: 1e-2, warmupSteps: 1, precision: 'fp32' },
  });
  const e = await Engine.create(cfg);
  e.setTrainData([{ nSeq: 64, blockSize: T, inputIds: tokens, labels: tokens }]);
  const r = await e.train(20, { totalSteps: 20 });
  const dir = join(out, name);
  await e.exportHuggingFace(dir, { eosId: 2 });
  const probe = tokens.slice(0, 2 * T);
  const logits = await e.forwardLogits(probe, 2, T);
  e.dispose();
  const header = {
    input_ids: { dtype: 'I32', shape: [2, T], data_offsets: [0, probe.byteLength] },
    logits: { dtype: 'F32', shape: [2, T, V], data_offsets: [probe.byteLength, probe.byteLength + logits.byteLength] },
  };
  let h = JSON.stringify(header);
  while ((8 + h.length) % 8) h += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  writeFileSync(join(dir, 'engine_logits.safetensors'), Buffer.concat([len, Buffer.from(h),
    Buffer.from(probe.buffer, probe.byteOffset, probe.byteLength), Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength)]));
  summary[name] = { losses: r.losses };
}
console.log(JSON.stringify({ out, summary }));
