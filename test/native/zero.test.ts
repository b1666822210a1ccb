// The pre-flight memory estimate through the TypeScript API (native/engine/zero.h): ZeRO model-state formulas
// against hand-computed bytes for GPT-2 124M and 1.5B on 1, 2, 4, 8 devices, and the fit verdict's advice.
import { describe, expect, it } from 'vitest';
import { parseConfig, type FinetuneConfig } from '../../configs/index.js';
import { EngineError, estimateMemory } from '../../native/index.js';

const GiB = 2 ** 30;

function gpt2(size: '124M' | '1.5B', zeroStage: 0 | 1 | 2 | 3, extra: { offload?: boolean; B?: number; recompute?: 'none' | 'gelu' | 'gelu-layernorm' } = {}): FinetuneConfig {
  const arch = size === '124M' ? { nLayer: 12, nHead: 12, nEmbd: 768 } : { nLayer: 48, nHead: 25, nEmbd: 1600 };
  return parseConfig({
    preprocess: { blockSize: 1024 },
    model: { ...arch, nPositions: 1024, vocabSize: 50257 },
    training: { backend: 'cuda', precision: 'bf16', microBatchSize: extra.B ?? 4, recompute: extra.recompute ?? 'none' },
    parallelism: { zeroStage, offload: { optimizer: extra.offload ? 'cpu' : 'none' } },
  });
}

describe('estimateMemory', () => {
  // The ZeRO paper's formulas (bf16 weights and grads: 16Ψ, 4Ψ+12Ψ/N, 2Ψ+14Ψ/N, 16Ψ/N) with this engine's fp32
  // gradients (exact accumulation over micro-batches): 18Ψ, 6Ψ+12Ψ/N, 2Ψ+16Ψ/N, 18Ψ/N. The paper's own constants are
  // checked in native/test/test_zero.cpp.
  it('follows the ZeRO model-state formulas with fp32 gradients (18Ψ, 6Ψ+12Ψ/N, 2Ψ+16Ψ/N, 18Ψ/N; shards padded to 128)', () => {
    // Ψ and the padded shard S = roundup(ceil(Ψ/N), 128), computed by hand
    const cases: [size: '124M' | '1.5B', psi: number, n: number, S: number][] = [
      ['124M', 124439808, 1, 124439808], ['124M', 124439808, 2, 62219904], ['124M', 124439808, 4, 31110016],
      ['124M', 124439808, 8, 15555072], ['1.5B', 1557611200, 1, 1557611264], ['1.5B', 1557611200, 2, 778805632],
      ['1.5B', 1557611200, 4, 389402880], ['1.5B', 1557611200, 8, 194701440],
    ];
    for (const [size, psi, n, S] of cases) {
      const want = [18 * psi, 6 * psi + 12 * S, 2 * psi + 16 * S, 18 * S];
      for (const stage of [0, 1, 2, 3] as const) {
        const e = estimateMemory(gpt2(size, stage), { worldSize: n });
        const d = e.device;
        expect(e.nParams).toBe(psi);
        expect(e.shardElems).toBe(S);
        expect(d.params + d.grads + d.master + d.moments, `${size} N=${n} stage ${stage}`).toBe(want[stage]);
        expect(d.total).toBe(d.params + d.grads + d.master + d.moments + d.activations + d.buffers);
        expect(e.host).toBe(0);
      }
    }
    // spot values: GPT-2 1.5B stage 3 on 8 GPUs holds 18 * 194701440 bytes of model state (~3.3 GiB)
    expect(estimateMemory(gpt2('1.5B', 3), { worldSize: 8 }).device.moments).toBe(8 * 194701440);
  });

  it('moves master weights and moments to the host with offload, and recompute shrinks activations', () => {
    const off = estimateMemory(gpt2('1.5B', 2, { offload: true }), { worldSize: 4 });
    expect(off.device.master + off.device.moments).toBe(0);
    expect(off.device.params + off.device.grads).toBe(2 * 1557611200 + 4 * 389402880);  // bf16 weights, fp32 grad shard
    expect(off.host).toBe(18 * 389402880);  // master + m + v + fp32 grads + bf16 staging per shard element
    const none = estimateMemory(gpt2('124M', 0)).device.activations;
    const ln = estimateMemory(gpt2('124M', 0, { recompute: 'gelu-layernorm' })).device.activations;
    const N = 4 * 1024, C = 768;
    expect(none - ln).toBe(11 * N * 4 * C * 2 + 12 * 2 * N * C * 2);
  });

  it('says whether it fits and names the setting to change', () => {
    const big = estimateMemory(gpt2('1.5B', 0, { B: 8 }));
    expect(big.fits(200 * GiB)).toEqual({ ok: true, advice: '' });
    const v = big.fits(24 * GiB);
    expect(v.ok).toBe(false);
    expect(v.advice).toMatch(/^needs [\d.]+ GiB per device \(model state [\d.]+ GiB, activations [\d.]+ GiB/);
    expect(v.advice).toContain("to fit: set parallelism.offload.optimizer to 'cpu' and training.recompute to 'gelu-layernorm'");
    const four = estimateMemory(gpt2('1.5B', 0, { B: 1 }), { worldSize: 4 }).fits(20 * GiB);
    expect(four.ok).toBe(false);
    expect(four.advice).toContain('to fit: set parallelism.zeroStage to');
    const small = estimateMemory(gpt2('124M', 0, { B: 16 })).fits(5 * GiB);
    expect(small.ok).toBe(false);
    expect(small.advice).toMatch(/lower training\.microBatchSize to \d+ and raise training\.gradAccumSteps/);
    const host = estimateMemory(gpt2('1.5B', 1, { offload: true }), { worldSize: 2 }).fits(80 * GiB, 4 * GiB);
    expect(host.ok).toBe(false);
    expect(host.advice).toContain('of pinned host memory per rank');
  });

  it('rejects a bad world size', () => {
    expect(() => estimateMemory(gpt2('124M', 1), { worldSize: 0 })).toThrow(EngineError);
  });
});
