// GPU suite (npm run test:gpu, GPU hosts only; CI excludes test/gpu): writes GPT-2 BPE token data when none is
// given, runs test/gpu/run.sh (CMake build, every parity suite, the benchmarks against the PyTorch peer; see
// test/gpu/README.md) and asserts that every stage passed and every speed gate held. A host without an NVIDIA GPU
// skips the suite with the reason.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { encode } from 'gpt-3-encoder';
import { describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const gpu = spawnSync('nvidia-smi', ['-L'], { encoding: 'utf8' });
const hasGpu = gpu.status === 0 && /GPU \d/.test(gpu.stdout);
const data = process.env.GPU_TEST_DATA ?? join(root, '.gpu-data', 'tinyshakespeare.i32');
const out = join(root, 'build', 'gpu', 'run');

// GPT-2 token ids of the repository's Shakespeare excerpt, encoded in ~20 kB pieces (the encoder is quadratic in
// the length of a piece)
function writeTokens(path: string): void {
  const text = readFileSync(join(root, 'test', 'fixtures', 'datasets', 'shakespeare-excerpt.txt'), 'utf8');
  const ids: number[] = [];
  let piece = '';
  for (const line of text.split(/(?<=\n)/)) {
    piece += line;
    if (piece.length > 20_000) {
      ids.push(...encode(piece));
      piece = '';
    }
  }
  if (piece) ids.push(...encode(piece));
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, Buffer.from(Int32Array.from(ids).buffer));
}

describe.skipIf(!hasGpu)('cuda backend on the GPU', () => {
  it('passes every parity suite and the speed gates', () => {
    if (!existsSync(data)) writeTokens(data);
    const r = spawnSync('bash', ['test/gpu/run.sh', out], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, GPU_TEST_DATA: data },
      maxBuffer: 64 << 20,
    });
    const log = `${r.stdout}\n${r.stderr}`.slice(-6000);
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as {
      stages: { stage: string; status: string }[];
      gates?: { gate: string; pass: boolean; value: unknown }[];
    };
    for (const s of summary.stages) expect(s.status, `stage ${s.stage}\n${log}`).toBe('pass');
    for (const g of summary.gates ?? []) expect(g.pass, `${g.gate}: ${String(g.value)}`).toBe(true);
    expect(r.status, log).toBe(0);
  }, 900_000);
});
