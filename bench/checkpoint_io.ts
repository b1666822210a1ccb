// Checkpoint I/O through the Node addon: save, verify and load of a GPT-2 124M state (state.bin 1.5 GB: fp32
// weights and both AdamW moments), with the engine's SHA-256 from OpenSSL (Node's own, found in the process)
// against its portable implementation as the peer, each in a child process of its own (ENGINE_SHA256=portable).
//   npx tsx bench/checkpoint_io.ts [--dir /tmp/ckpt-bench]
// Prints one JSON line per implementation and the ratios; every checkpoint hashes its whole state on save and on
// load (and verify hashes it once more), so at 6B parameters (70 GB) this is minutes per save or resume.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../configs/index.js';
import { Engine, verifyCheckpoint } from '../native/index.js';

const cfg = parseConfig({
  model: { nLayer: 12, nHead: 12, nEmbd: 768, nPositions: 1024, vocabSize: 50257 },
  training: { backend: 'cpu', precision: 'fp32' },
});

if (process.env.CKPT_BENCH_CHILD) {
  const dir = process.env.CKPT_BENCH_CHILD;
  const e = await Engine.create(cfg);
  const ms = async (f: () => Promise<unknown>) => {
    const t = performance.now();
    await f();
    return Math.round(performance.now() - t);
  };
  const step = join(dir, 'step-00000000');
  const save = await ms(() => e.saveCheckpoint(step));
  e.dispose();
  const verify = await ms(async () => {
    const v = await verifyCheckpoint(step);
    if (!v.ok) throw new Error(v.reason);
  });
  let loaded: Engine | null = null;
  const load = await ms(async () => (loaded = await Engine.fromCheckpoint(step, cfg)));
  loaded!.dispose();
  console.log(JSON.stringify({ sha256: process.env.ENGINE_SHA256 === 'portable' ? 'portable' : 'openssl', save_ms: save, verify_ms: verify, load_ms: load }));
} else {
  const i = process.argv.indexOf('--dir');
  const base = i > 0 ? process.argv[i + 1]! : tmpdir();
  const rows: Record<string, number>[] = [];
  for (const impl of ['openssl', 'portable']) {
    const dir = mkdtempSync(join(base, 'ckpt-bench-'));
    try {
      const env = { ...process.env, CKPT_BENCH_CHILD: dir, ...(impl === 'portable' ? { ENGINE_SHA256: 'portable' } : {}) };
      const out = execFileSync(process.execPath, ['--import', 'tsx', new URL(import.meta.url).pathname], { env, encoding: 'utf8' });
      const row = JSON.parse(out.trim().split('\n').pop()!) as Record<string, number>;
      console.log(JSON.stringify(row));
      rows.push(row);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const [ours, peer] = rows as [Record<string, number>, Record<string, number>];
  const r = (k: string) => +(peer[k]! / ours[k]!).toFixed(2);
  console.log(JSON.stringify({ ratio_portable_over_openssl: { save: r('save_ms'), verify: r('verify_ms'), load: r('load_ms') } }));
}
