// The host half of optimizer offload (native/engine/cpu_adam.{h,cpp}) on the CPU: the chunked CPU AdamW the
// offload worker runs is bit-identical to the engine's reference AdamW, the fused bf16 copy rounds like the GPU,
// and the unit/chunk plan tiles the shard. Compiles test/native/cpp/cpu_adam_check.cpp with the engine's flags
// (no FMA contraction, as CMakeLists.txt builds cpu_adam.cpp and optimizer.cpp) and runs it.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
const dir = mkdtempSync(join(tmpdir(), 'cpu-adam-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('cpu_adam (optimizer offload, host side)', () => {
  it('chunked CPU AdamW == reference bit for bit; bf16 copy; units and chunk plan', () => {
    const exe = join(dir, 'cpu_adam_check');
    const eng = join(root, 'native', 'engine');
    const flags = ['-std=c++17', '-O2', '-fopenmp', '-ffp-contract=off', `-I${eng}`];
    execFileSync('g++', [...flags, '-fno-math-errno', '-c', join(eng, 'cpu_adam.cpp'), '-o', join(dir, 'cpu_adam.o')]);
    execFileSync('g++', [...flags, '-c', join(eng, 'optimizer.cpp'), '-o', join(dir, 'optimizer.o')]);
    execFileSync('g++', [...flags, join(root, 'test', 'native', 'cpp', 'cpu_adam_check.cpp'), join(eng, 'params.cpp'),
      join(dir, 'cpu_adam.o'), join(dir, 'optimizer.o'), '-o', exe]);
    let out: string;
    try {
      out = execFileSync(exe, { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: '2' } });
    } catch (e) {
      out = String((e as { stdout?: string }).stdout ?? e);
    }
    const lines = out.trim().split('\n');
    expect(lines.filter((l) => l.startsWith('FAIL')), out).toEqual([]);
    expect(lines.filter((l) => l.startsWith('ok')).length).toBe(8);
    expect(lines.at(-1)).toBe('0 failure(s)');
  }, 120_000);
});
