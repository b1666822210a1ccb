// `finetune estimate`: the per-GPU breakdown, the verdict for a GPU size (exit 2 when it does not fit, with the
// engine's advice), the table of common GPUs, --json, and size parsing.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/estimate.js';
import { parseBytes } from '../../cli/lib/estimate.js';

let out = '';
afterEach(() => vi.restoreAllMocks());
async function estimate(...argv: string[]): Promise<{ code: number; out: string }> {
  out = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((out += String(s)), true));
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  const code = await main(argv);
  vi.restoreAllMocks();
  return { code, out };
}

describe('finetune estimate', () => {
  it('GPT2-XL with ZeRO-2 + offload fits a 16 GB GPU, per-GPU breakdown and host memory shown', async () => {
    const r = await estimate('configs/presets/gpt2-xl-16gb.json', '--device-memory', '16GB');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/ZeRO-2, optimizer offload to CPU, 1 worker x 1 GPU = 1 rank/);
    expect(r.out).toMatch(/per GPU \(1 rank, 1557\.6M parameters/);
    expect(r.out).toMatch(/fp32 master weights +0 +\(on the host\)/);
    expect(r.out).toMatch(/host \(pinned, per rank\) +26\.1 GiB/);
    expect(r.out).toMatch(/fits a 14\.9 GiB GPU/);
  });

  it('says what to change when it does not fit (exit 2)', async () => {
    const r = await estimate('configs/presets/gpt2-xl-16gb.json', '--set', 'training.microBatchSize=8', '--device-memory', '16GB');
    expect(r.code).toBe(2);
    expect(r.out).toMatch(/does NOT fit a 14\.9 GiB GPU: needs [\d.]+ GiB per device .* to fit: .*training\.microBatchSize/);
  });

  it('without a GPU size: a table of common GPUs; --world-size shards the model states', async () => {
    const one = await estimate('configs/presets/shakespeare-gptj-ray.json', '--world-size', '1');
    expect(one.out).toMatch(/fits \(per GPU\): +16 GB no +24 GB no +40 GB no +80 GB yes +141 GB yes/);
    const four = await estimate('configs/presets/shakespeare-gptj-ray.json', '--world-size', '4', '--json');
    const j = JSON.parse(four.out) as { worldSize: number; family: string; device: { params: number }; common: { name: string; ok: boolean }[] };
    expect(j.worldSize).toBe(4);
    expect(j.family).toBe('gptj');
    const jOne = JSON.parse((await estimate('configs/presets/shakespeare-gptj-ray.json', '--world-size', '1', '--json')).out) as typeof j;
    expect(j.device.params).toBeLessThan(jOne.device.params / 3); // ZeRO-3 shards the weights too
  });

  it('rejects sizes it cannot read, naming the flag', async () => {
    await expect(estimate('configs/presets/default.json', '--device-memory', 'lots')).rejects.toThrow(/--device-memory: expected a size like 16GiB/);
    // A value starting with '-' reaches the flag's own check, not the argument parser's "ambiguous" message.
    await expect(estimate('configs/presets/default.json', '--device-memory', '-5GB')).rejects.toThrow(/^--device-memory: expected a size like 16GiB, 80GB or 24000MiB, got "-5GB"$/);
    expect(parseBytes('16GiB', 'x')).toBe(16 * 2 ** 30);
    expect(parseBytes('80 GB', 'x')).toBe(80e9);
    expect(parseBytes('24000MiB', 'x')).toBe(24000 * 2 ** 20);
  });
});
