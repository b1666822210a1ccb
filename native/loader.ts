// Finds and loads the compiled addon (build/native/<platform>-<arch>-<cpu|cuda-sm90a>-<hash>/finetune_engine.node).
// A candidate is first loaded in a child process, so a broken binary (missing libcudart, ABI mismatch) fails
// with a message instead of crashing this process; a failure lists possible solutions (after lovell/sharp).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { NativeAddon } from './addon-types.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const buildRoot = join(root, 'build/native');
const require = createRequire(import.meta.url);

/** Candidate addon files, best first: $FINETUNE_ENGINE_ADDON, the last build (current.json), then the newest. */
export function addonCandidates(): string[] {
  const out: string[] = [];
  const env = process.env.FINETUNE_ENGINE_ADDON;
  if (env) out.push(resolve(env));
  const prefix = `${process.platform}-${process.arch}-`;
  try {
    const cur = JSON.parse(readFileSync(join(buildRoot, 'current.json'), 'utf8')) as { name?: string };
    if (cur.name?.startsWith(prefix)) out.push(join(buildRoot, cur.name, 'finetune_engine.node'));
  } catch {
    /* no build yet */
  }
  if (existsSync(buildRoot)) {
    const dirs = readdirSync(buildRoot)
      .filter((d) => d.startsWith(prefix) && existsSync(join(buildRoot, d, 'finetune_engine.node')))
      .map((d) => join(buildRoot, d, 'finetune_engine.node'))
      .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
    out.push(...dirs);
  }
  return [...new Set(out)].filter((f) => existsSync(f));
}

let cached: { addon?: NativeAddon; error?: string; file?: string } | undefined;

// OpenMP threads that spin while waiting for work (libgomp's default) collapse throughput when the cores are
// shared (parallel test files, a worker next to other activities): measured 70 s vs 13 s for the same test on a
// busy 2-core machine. libgomp reads this when the addon loads; an explicit setting is kept.
process.env.OMP_WAIT_POLICY ??= 'passive';

/** The loaded addon, or a load error message with possible solutions. */
export function tryLoadAddon(): { addon?: NativeAddon; error?: string; file?: string } {
  return (cached ??= loadFirst(addonCandidates()));
}

/** Loads the first candidate that works (each probed in a child process first). */
export function loadFirst(candidates: string[]): { addon?: NativeAddon; error?: string; file?: string } {
  const failures: string[] = [];
  for (const file of candidates) {
    const probe = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(file)})`], { encoding: 'utf8', timeout: 30_000 });
    if (probe.status !== 0) {
      failures.push(`${file}: ${(probe.stderr || probe.error?.message || `exit ${probe.status}`).trim().split('\n').slice(0, 6).join('\n    ')}`);
      continue;
    }
    try {
      return { addon: require(file) as NativeAddon, file };
    } catch (e) {
      failures.push(`${file}: ${(e as Error).message}`);
    }
  }
  const tried = failures.length ? `Tried:\n  ${failures.join('\n  ')}` : `No addon found under ${buildRoot}.`;
  return {
    error:
      `Could not load the training engine addon (${process.platform}-${process.arch}, Node ${process.versions.node}).\n${tried}\n` +
      'Possible solutions:\n' +
      '- Build it: npm run build:native (needs cmake, g++ and Node headers; npm ci runs it automatically)\n' +
      '- Install the build tools: apt-get install build-essential cmake pkg-config libopenblas-dev\n' +
      '- A CUDA build needs the CUDA runtime libraries at run time: rebuild CPU-only with ENGINE_CUDA=0 npm run build:native\n' +
      '- Point FINETUNE_ENGINE_ADDON at a finetune_engine.node you built elsewhere\n' +
      '- See native/README.md',
  };
}

export function loadAddon(): NativeAddon {
  const r = tryLoadAddon();
  if (!r.addon) throw new Error(r.error);
  return r.addon;
}

/**
 * The loaded addon's build: its folder name (platform, arch, backend and an options hash), a hash of the binary
 * itself, and the backends and BLAS it was built with (build-info.json of native/scripts/build.mjs). Checkpoints
 * and reports record it, because bit-identical resumes hold only within one build.
 */
export function addonBuild(): { id: string; backends: string; blas: string; node: string } {
  const r = tryLoadAddon();
  if (!r.addon || !r.file) throw new Error(r.error ?? 'no engine addon');
  const dir = dirname(r.file);
  let info: { name?: string; blas?: string; node?: string } = {};
  try {
    info = JSON.parse(readFileSync(join(dir, 'build-info.json'), 'utf8')) as typeof info;
  } catch {
    /* an addon given by FINETUNE_ENGINE_ADDON may have no build-info.json */
  }
  const b = r.addon.buildInfo();
  const hash = createHash('sha256').update(readFileSync(r.file)).digest('hex').slice(0, 12);
  const blas = b.blas && b.blas !== 'unknown' ? b.blas : info.blas ?? b.blas ?? 'unknown';
  return { id: `${info.name ?? dirname(r.file).split('/').pop()}@${hash}`, backends: b.backends, blas, node: info.node ?? process.versions.node };
}
