// CPU backend throughput on the default preset's model (configs/presets/default.json: 2 layers, width 128,
// 4 heads, T = 128, GPT-2 vocabulary, 8 x 128 tokens per step).
//   npx tsx bench/engine_cpu.ts [--steps 20] [--threads N]
// Prints tokens/s of training steps (after 2 warm-up steps), of evaluation and of KV-cache generation, and the
// ratio of the pipeline's target (150 steps within a few minutes on 2 cores = ~1,000 tokens/s) to the measurement.
// With FINETUNE_ENGINE_ADDON pointing at a second build (e.g. ENGINE_BLAS=builtin) the same numbers for a peer.
import { parseConfig } from '../configs/index.js';
import { Engine } from '../native/index.js';

const arg = (k: string, d: number) => {
  const i = process.argv.indexOf(`--${k}`);
  return i > 0 ? Number(process.argv[i + 1]) : d;
};
const steps = arg('steps', 20);
const threads = arg('threads', 0);
if (threads) process.env.FINETUNE_CPU_THREADS = String(threads);

const cfg = parseConfig({
  model: { nLayer: 2, nHead: 4, nEmbd: 128, nPositions: 128, vocabSize: 50257 },
  preprocess: { blockSize: 128 },
  training: { backend: 'cpu', microBatchSize: 8, gradAccumSteps: 1, learningRate: 1e-3, warmupSteps: 10, precision: 'fp32' },
});
const T = 128, nSeq = 64;
const ids = new Int32Array(nSeq * T);
for (let i = 0; i < ids.length; i++) ids[i] = (i * 7919 + (i >> 5)) % 50257;
const shard = { nSeq, blockSize: T, inputIds: ids, labels: ids };

const e = await Engine.create(cfg);
e.setTrainData([shard]);
await e.train(2, { totalSteps: steps + 2 });
const t0 = performance.now();
const r = await e.train(steps, { totalSteps: steps + 2 });
const trainTps = r.tokens / ((performance.now() - t0) / 1000);
const t1 = performance.now();
const ev = await e.evaluate([shard], { batchSize: 8, maxBatches: 4 });
const evalTps = (ev.sequences * T) / ((performance.now() - t1) / 1000);
const t2 = performance.now();
const gen = await e.generate([[1, 2, 3], [4, 5, 6]], { maxNewTokens: 48, temperature: 0.8, topK: 40, topP: 0.95, seed: 1, eosId: -1 });
const genTps = gen.reduce((a, g) => a + g.length, 0) / ((performance.now() - t2) / 1000);
const target = 1000;
console.log(JSON.stringify({ backend: e.info.backend, device: e.info.device, blas: e.info.blas, steps, tokensPerStep: 8 * T,
  trainTokensPerSec: Math.round(trainTps), msPerStep: Math.round(((performance.now() - t0) / steps)), evalTokensPerSec: Math.round(evalTps),
  generateTokensPerSec: Math.round(genTps), defaultRunSeconds: Math.round((150 * 8 * T) / trainTps), ratioVsTarget: +(trainTps / target).toFixed(2) }, null, 2));
e.dispose();
