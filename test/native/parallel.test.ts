// The multi-GPU / multi-worker surface of the TypeScript API on the cpu build CI has: ncclUniqueId() says what is
// missing, parallel options are checked before the engine sees them, the cpu backend refuses several ranks, and
// info/memoryReport carry the effective layout.
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../configs/index.js';
import { Engine, EngineError, engineAvailable, ncclUniqueId, withEstimate, type ParallelOptions } from '../../native/index.js';
import { tinyConfig } from './helpers.js';

const hasCuda = engineAvailable().backends.includes('cuda');

describe('multi-worker engine options', () => {
  it.skipIf(hasCuda)('ncclUniqueId() on a build without the cuda backend throws BAD_CONFIG naming what is missing', () => {
    const err = (() => {
      try {
        ncclUniqueId();
      } catch (e) {
        return e;
      }
    })() as EngineError;
    expect(err).toBeInstanceOf(EngineError);
    expect(err.code).toBe('BAD_CONFIG');
    expect(err.message).toMatch(/built without the cuda backend.*NCCL/);
    expect(err.hint).toMatch(/nvcc and cuBLAS/);
  });

  it('checks parallel options before the engine sees them', async () => {
    const cfg = tinyConfig();
    const bad = async (parallel: ParallelOptions, re: RegExp) => {
      const e = await Engine.create(cfg, { parallel }).catch((x: unknown) => x);
      expect(e).toBeInstanceOf(EngineError);
      expect((e as EngineError).code).toBe('BAD_CONFIG');
      expect((e as EngineError).message).toMatch(re);
    };
    await bad({ worldSize: 0, rankOffset: 0, devices: [0] }, /worldSize must be a positive integer/);
    await bad({ worldSize: 2, rankOffset: 2, devices: [0] }, /ranks 2\.\.2 do not fit worldSize 2/);
    await bad({ worldSize: 1, rankOffset: 0, devices: [] }, /devices must be CUDA ordinals/);
    await bad({ worldSize: 2, rankOffset: 0, devices: [0], ncclId: 'abc' }, /ncclId must be the 256 hex digits/);
  });

  it('the cpu backend refuses several ranks with BAD_CONFIG instead of training one', async () => {
    const e = await Engine.create(tinyConfig(), { parallel: { worldSize: 2, rankOffset: 1, devices: [0], ncclId: 'ab'.repeat(128) } }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(EngineError);
    expect((e as EngineError).code).toBe('BAD_CONFIG');
  });

  it('reports the effective layout in info and memoryReport', async () => {
    const e = await Engine.create(tinyConfig());
    try {
      expect(e.info).toMatchObject({ zeroStage: 0, worldSize: 1, rank: 0, devices: [0], offload: 'none' });
      const m = e.memoryReport();
      expect(m).toMatchObject({ zeroStage: 0, worldSize: 1 });
      expect(m.buffersBytes).toBeGreaterThanOrEqual(0);
      expect(m.totalBytes).toBe(m.paramsBytes + m.gradsBytes + m.optimizerBytes + m.activationsBytes + m.otherBytes + m.buffersBytes);
    } finally {
      e.dispose();
    }
  });

  it('a cuda OUT_OF_MEMORY carries the pre-flight estimate and what to change', () => {
    const cfg = parseConfig({ preprocess: { blockSize: 1024 }, model: { nLayer: 48, nHead: 25, nEmbd: 1600, nPositions: 1024 },
      training: { backend: 'cuda', microBatchSize: 32 } });
    const oom = () => new EngineError('OUT_OF_MEMORY', 'out of GPU memory allocating activations (12.00 GiB): 70.10 of 79.19 GiB in use on NVIDIA H100 80GB HBM3');
    let err: EngineError | undefined;
    try {
      withEstimate(oom(), cfg, 'cuda', { worldSize: 1, rankOffset: 0, devices: [0] });
    } catch (e) {
      err = e as EngineError;
    }
    expect(err?.code).toBe('OUT_OF_MEMORY');
    expect(err?.message).toMatch(/pre-flight estimate \(1[68]Ψ.*\): [\d.]+ GiB per GPU = model states [\d.]+ \+ activations [\d.]+ \+ buffers/);
    expect(err?.advice).toMatch(/79\.19 GiB available; to fit: set training\.recompute to 'gelu-layernorm'/);
    // the engine's own pre-allocation check names the GPU size differently; the advice still comes
    const pre = new EngineError('OUT_OF_MEMORY', 'the training state needs 26.11 GiB on NVIDIA A10 (ZeRO stage 0 over 1 GPU(s), 18Ψ: ...) but only 21.50 GiB of 22.49 GiB are free, before activations');
    try {
      withEstimate(pre, cfg, 'cuda', { worldSize: 1, rankOffset: 0, devices: [0] });
    } catch (e) {
      expect((e as EngineError).advice).toMatch(/22\.49 GiB available; to fit: /);
    }
        // other errors, and the cpu backend, pass through untouched
    const other = new EngineError('IO', 'disk full');
    expect(() => withEstimate(other, cfg, 'cuda', { worldSize: 1, rankOffset: 0, devices: [0] })).toThrow(/^disk full$/);
  });
});
