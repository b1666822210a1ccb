// GPU suite (npm run test:gpu, GPU hosts only; CI excludes test/gpu): runs test/gpu/run.sh, which builds and runs
// the lab kernel checks, the cuda-vs-cpu backend checks and the PyTorch parity script, and asserts that every
// stage passed. Needs nvcc + cuBLAS, python3 with torch + transformers, and .gpu-data/tinyshakespeare.i32
// (see native/engine/cuda/README.md); a host without an NVIDIA GPU skips the suite with the reason.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const gpu = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' });
const hasGpu = gpu.status === 0 && /GPU \d/.test(gpu.stdout);
const data = process.env.GPU_TEST_DATA ?? join(root, '.gpu-data', 'tinyshakespeare.i32');

describe.skipIf(!hasGpu)('cuda backend on the GPU', () => {
  it('passes the kernel, backend and PyTorch parity checks', () => {
    expect(existsSync(data), `tokenized tinyshakespeare missing at ${data}: see native/engine/cuda/README.md`).toBe(true);
    const r = spawnSync('bash', ['test/gpu/run.sh', join(root, 'build', 'gpu', 'logs')], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, GPU_TEST_DATA: data },
      maxBuffer: 64 << 20,
    });
    const out = `${r.stdout}\n${r.stderr}`;
    // every stage prints its own tally; all of them must report zero failures
    expect(out).toContain('0 check(s) failed');
    const tallies = [...out.matchAll(/(\d+) passed, (\d+) failed/g)];
    expect(tallies.length).toBe(2);
    for (const t of tallies) expect(Number(t[2]), out.slice(-4000)).toBe(0);
    expect(r.status, out.slice(-4000)).toBe(0);
  });
});
