// The finetune workflow on the cuda backend (npm run test:gpu, GPU hosts only): test/e2e/gpu/run.sh builds the
// addon with CUDA and runs the pipeline the way an operator does (server, CPU and GPU workers, a SIGKILLed GPU
// worker that must resume from its checkpoint), then families, offload and ZeRO through the workflow. A host without
// an NVIDIA GPU skips the suite with the reason.
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const gpu = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' });
const hasGpu = gpu.status === 0 && /GPU \d/.test(gpu.stdout);

describe.skipIf(!hasGpu)('finetune workflow on the GPU', () => {
  it('trains, survives a killed GPU worker and serves every family', () => {
    const r = spawnSync('bash', ['test/e2e/gpu/run.sh'], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, OUT: join(root, 'build', 'gpu', 'e2e') },
      maxBuffer: 64 << 20,
    });
    expect(r.status, `${r.stdout}\n${r.stderr}`.slice(-6000)).toBe(0);
  }, 1_800_000);
});
