#!/usr/bin/env node
// Builds the engine library, its C++ tests and the Node-API addon with CMake (npm run build:native; also the
// root `install` hook, so `npm ci` on a fresh clone builds it). Works offline: Node's headers come from the local
// installation (no download, unlike cmake-js/node-gyp defaults). The build folder is named after the platform and
// the options (build/native/linux-x64-cpu-<hash>, ...-cuda-sm90a-<hash>), so CPU-only and CUDA builds never
// overwrite each other; build/native/current.json points the TypeScript loader at the latest one.
//
// `--if-missing` (the root `install` hook): keep a build of these options that exists and loads, so `npm install`,
// `npm ci` and `npx <checkout>` (which runs the install hook of a local package in place) never rebuild the addon
// under running workers; `npm run build:native` always builds. A build folder copied or moved with its checkout
// has a CMake cache that names the old paths: it is dropped (CMakeCache.txt, CMakeFiles/) and configured again.
//
// Environment: ENGINE_CUDA=0|1 (default: 1 when nvcc is found and native/engine/cuda has sources),
//              ENGINE_BLAS=auto|openblas|builtin (default auto), ENGINE_BUILD_TYPE=Release|Debug,
//              ENGINE_JOBS=N (parallel compile jobs), FINETUNE_SKIP_NATIVE_BUILD=1 (skip, e.g. docs-only installs)
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const nativeDir = resolve(here, '..');
const root = resolve(nativeDir, '..');
const require = createRequire(import.meta.url);

function fail(msg) {
  console.error(`\n[build:native] ${msg}\n`);
  process.exit(1);
}

if (process.env.FINETUNE_SKIP_NATIVE_BUILD === '1') {
  console.log('[build:native] skipped (FINETUNE_SKIP_NATIVE_BUILD=1)');
  process.exit(0);
}

function which(cmd) {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

// Node's C headers: next to the running node, npm's nodedir, the system include dir, or node-gyp's cache.
function nodeIncludeDir() {
  const candidates = [
    process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, 'include/node'),
    resolve(dirname(process.execPath), '../include/node'),
    '/usr/include/node',
    '/usr/local/include/node',
    join(process.env.HOME ?? '', `.cache/node-gyp/${process.versions.node}/include/node`),
  ].filter(Boolean);
  for (const c of candidates) if (existsSync(join(c, 'node_api.h'))) return c;
  fail(
    `Node's C headers (node_api.h) were not found. Looked in:\n  ${candidates.join('\n  ')}\n` +
      'Possible solutions: install the nodejs headers (Debian: apt-get install libnode-dev / nodejs from NodeSource ' +
      'ships them), or set npm_config_nodedir to a Node source/headers folder.',
  );
}

const cmake = which('cmake') ?? fail('cmake not found. Install it (Debian: apt-get install cmake), then npm run build:native.');
const nvcc = which('nvcc') ?? (existsSync('/usr/local/cuda/bin/nvcc') ? '/usr/local/cuda/bin/nvcc' : null);
const cudaDir = join(nativeDir, 'engine/cuda');
const cudaSources = existsSync(cudaDir) ? readdirSync(cudaDir).filter((f) => /\.(cu|cpp)$/.test(f)) : [];
// cuBLAS/cuBLASLt: inside the toolkit next to nvcc, or ENGINE_CUBLAS_ROOT (include/ + lib/).
const cublasRoot = process.env.ENGINE_CUBLAS_ROOT ?? '';
function hasCublas() {
  if (cublasRoot) return existsSync(join(cublasRoot, 'include/cublasLt.h'));
  if (!nvcc) return false;
  const tk = resolve(dirname(realpathSync(nvcc)), '..');
  return ['include', 'targets/x86_64-linux/include', 'targets/sbsa-linux/include'].some((d) => existsSync(join(tk, d, 'cublasLt.h')));
}
// Does a source reach a cuBLAS header through its local includes?
function reachesCublas(file, seen = new Set()) {
  if (seen.has(file) || !existsSync(file)) return false;
  seen.add(file);
  const text = readFileSync(file, 'utf8');
  if (/#include\s*<cublas/.test(text)) return true;
  for (const m of text.matchAll(/#include\s*"([^"]+)"/g)) if (reachesCublas(join(dirname(file), m[1]), seen)) return true;
  return false;
}
let cuda = nvcc !== null && cudaSources.length > 0;
if (process.env.ENGINE_CUDA === '0') cuda = false;
if (process.env.ENGINE_CUDA === '1') {
  if (!nvcc) fail('ENGINE_CUDA=1 but nvcc was not found (PATH or /usr/local/cuda/bin).');
  if (!cudaSources.length) console.warn('[build:native] ENGINE_CUDA=1 but native/engine/cuda has no sources yet: CPU-only build');
  cuda = cudaSources.length > 0;
}
let cudaCheckOnly = [];
if (cuda && !hasCublas()) {
  cudaCheckOnly = cudaSources.map((f) => join(cudaDir, f)).filter((f) => f.endsWith('.cu') && !reachesCublas(f));
  console.warn(
    '[build:native] nvcc found but cuBLAS/cuBLASLt missing: CUDA backend not compiled (set ENGINE_CUBLAS_ROOT to a ' +
      `cuBLAS tree to build it). Compile-only check of the kernels without cuBLAS: ${cudaCheckOnly.length ? cudaCheckOnly.map((f) => f.slice(cudaDir.length + 1)).join(', ') : '(none: every .cu reaches a cuBLAS header)'}`,
  );
  cuda = false;
}
const blas = process.env.ENGINE_BLAS ?? 'auto';
const buildType = process.env.ENGINE_BUILD_TYPE ?? 'Release';
const options = { platform: process.platform, arch: process.arch, cuda, cudaArch: cuda ? '90a' : null, cublasRoot: cuda ? cublasRoot : '', blas, buildType, napi: 8 };
const hash = createHash('sha256').update(JSON.stringify(options)).digest('hex').slice(0, 8);
const name = `${process.platform}-${process.arch}-${cuda ? 'cuda-sm90a' : 'cpu'}-${hash}`;
const buildDir = join(root, 'build/native', name);
const addonFile = join(buildDir, 'finetune_engine.node');

if (process.argv.includes('--if-missing') && existsSync(addonFile)) {
  const probe = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(addonFile)})`], { encoding: 'utf8', timeout: 30_000 });
  if (probe.status === 0) {
    writeFileSync(join(root, 'build/native/current.json'), JSON.stringify({ name }, null, 2) + '\n');
    console.log(`[build:native] ${name} exists and loads: not rebuilt (npm run build:native rebuilds it)`);
    process.exit(0);
  }
  console.warn(`[build:native] ${addonFile} does not load (${(probe.stderr || `exit ${probe.status}`).trim().split('\n')[0]}): rebuilding`);
}
mkdirSync(buildDir, { recursive: true });

// A cache made for another source or build folder (the checkout was moved or copied): configure from scratch.
const cacheFile = join(buildDir, 'CMakeCache.txt');
if (existsSync(cacheFile)) {
  const cache = readFileSync(cacheFile, 'utf8');
  const home = /^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$/m.exec(cache)?.[1];
  const cacheDir = /^CMAKE_CACHEFILE_DIR:INTERNAL=(.*)$/m.exec(cache)?.[1];
  if ((home && resolve(home) !== nativeDir) || (cacheDir && resolve(cacheDir) !== buildDir)) {
    console.log(`[build:native] the CMake cache in ${buildDir} was made for ${cacheDir ?? home}: configuring again`);
    rmSync(cacheFile, { force: true });
    rmSync(join(buildDir, 'CMakeFiles'), { recursive: true, force: true });
  }
}

const napiInclude = dirname(require.resolve('node-addon-api/package.json'));
const args = [
  '-S', nativeDir, '-B', buildDir,
  `-DCMAKE_BUILD_TYPE=${buildType}`,
  `-DNODE_INCLUDE_DIR=${nodeIncludeDir()}`,
  `-DNAPI_INCLUDE_DIR=${napiInclude}`,
  `-DENGINE_CUDA=${cuda ? 'ON' : 'OFF'}`,
  `-DENGINE_BLAS=${blas}`,
];
if (cuda || cudaCheckOnly.length) args.push(`-DCMAKE_CUDA_COMPILER=${nvcc}`);
args.push(`-DENGINE_CUDA_CHECK_SOURCES=${cudaCheckOnly.join(';')}`, `-DENGINE_CUBLAS_ROOT=${cuda ? cublasRoot : ''}`);
console.log(`[build:native] ${name}: cuda=${cuda} blas=${blas} (${buildDir})`);
const run = (cmd, a) => {
  const r = spawnSync(cmd, a, { stdio: 'inherit' });
  if (r.status !== 0) fail(`${cmd} ${a.join(' ')} failed (exit ${r.status}). See the compiler output above.`);
};
run(cmake, args);
const jobs = process.env.ENGINE_JOBS ?? String(Math.max(1, cpus().length));
run(cmake, ['--build', buildDir, '-j', jobs]);

let blasUsed = 'unknown';
try {
  const cache = execFileSync('grep', ['-h', 'engine: CPU GEMM', join(buildDir, 'CMakeFiles/CMakeOutput.log')], { encoding: 'utf8' });
  blasUsed = cache.trim();
} catch {
  /* informational only */
}
const info = { name, dir: buildDir, options, backends: cuda ? ['cpu', 'cuda'] : ['cpu'], node: process.versions.node, builtAt: new Date().toISOString(), blas: blasUsed };
writeFileSync(join(buildDir, 'build-info.json'), JSON.stringify(info, null, 2) + '\n');
writeFileSync(join(root, 'build/native/current.json'), JSON.stringify({ name }, null, 2) + '\n');
console.log(`[build:native] done: ${join(buildDir, 'finetune_engine.node')}`);
