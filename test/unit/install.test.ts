// The CLI entry and the install hook of a checkout that was moved (or copied) with its build folder: the hook
// keeps the engine addon that exists and loads (no rebuild under running workers: `npx <checkout>` runs the hook
// in place), the command runs, and a checkout without its dependencies says what to do instead of exiting silently.
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { expect, it } from 'vitest';

const repo = resolve(__dirname, '../..');

it('a moved checkout: the install hook keeps the working addon, the command runs; no dependencies: a clear message', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'ft-moved-'));
  const files = spawnSync('git', ['ls-files'], { cwd: repo, encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  for (const f of files) {
    mkdirSync(dirname(join(dir, f)), { recursive: true });
    cpSync(join(repo, f), join(dir, f));
  }
  cpSync(join(repo, 'build'), join(dir, 'build'), { recursive: true }); // its CMake cache names the old paths
  const current = JSON.parse(readFileSync(join(dir, 'build/native/current.json'), 'utf8')) as { name: string };
  const addon = join(dir, 'build/native', current.name, 'finetune_engine.node');
  const before = readFileSync(addon);

  // Without node_modules: the entry names what is missing and what to run.
  const bare = spawnSync(process.execPath, [join(dir, 'bin/finetune.js'), '--help'], { cwd: dir, encoding: 'utf8' });
  expect(bare.status).toBe(1);
  expect(bare.stderr).toMatch(/cannot load tsx.*\n.*npm install/);

  symlinkSync(join(repo, 'node_modules'), join(dir, 'node_modules'));
  // What `npm install`/`npx <checkout>` run: the package's install script, as package.json spells it.
  const hook = (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.install!;
  expect(hook).toMatch(/--if-missing/);
  const r = spawnSync('sh', ['-c', hook], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  expect(r.status, r.stdout + r.stderr).toBe(0);
  expect(r.stdout).toMatch(/exists and loads: not rebuilt/);
  expect(readFileSync(addon).equals(before)).toBe(true);

  const help = spawnSync(process.execPath, [join(dir, 'bin/finetune.js'), '--help'], { cwd: tmpdir(), encoding: 'utf8' });
  expect(help.status).toBe(0);
  expect(help.stdout).toMatch(/usage: finetune <command>/);
});
