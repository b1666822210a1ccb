#!/usr/bin/env node
// Runs the engine's C++ tests (native/test, built as engine_tests next to the addon) from the current build.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
let name;
try {
  name = JSON.parse(readFileSync(join(root, 'build/native/current.json'), 'utf8')).name;
} catch {
  console.error('no native build found: run npm run build:native first');
  process.exit(1);
}
const exe = join(root, 'build/native', name, 'engine_tests');
if (!existsSync(exe)) {
  console.error(`${exe} is missing: run npm run build:native`);
  process.exit(1);
}
const r = spawnSync(exe, process.argv.slice(2), { stdio: 'inherit', env: { ...process.env, OMP_NUM_THREADS: process.env.OMP_NUM_THREADS ?? '2', OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? 'passive' } });
process.exit(r.status ?? 1);
