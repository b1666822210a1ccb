// Pipeline throughput vs the raw Rust tokenizer, same machine, same run.
//
//   npx tsx bench/tokenize.ts [--big-mb 100] [--reps 2] [--skip-big]
//
// peer:     `tokenizers` (HF's Rust bindings) encodeBatch over the corpus' paragraphs held in memory, batches of
//           8192, ids fetched (getIds) — the fastest way to get GPT-2 ids into JS with that library.
// pipeline: prepareData, concat mode, blockSize 1024, GPT-2, into a fresh directory: hashing the input, streaming
//           it from disk, tokenizing (in worker threads from 32 MB), blocking, writing Snappy Parquet shards and the manifest,
//           fsyncs and the atomic rename.
// Both count the same tokens (the pipeline's sourceTokens minus the EOS it adds). Runs alternate. Reported: wall
// time (best of reps) and CPU time (user + sys of this process, every thread included: median of reps). On a
// shared machine wall time swings with other load; CPU time says what each side costs, and CPU/wall shows how
// many cores each kept busy.
// Corpora: tinyshakespeare (../shared/data), and a >= 100 MB corpus made by repeating it with per-copy
// perturbations (words swapped, copy headers) so the tokenizer's word cache cannot serve a single copy.
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Tokenizer } from 'tokenizers';
import { parseConfig } from '../configs/index.js';
import { loadTokenizer, prepareData } from '../datasets/index.js';

const { values } = parseArgs({
  options: { 'big-mb': { type: 'string', default: '100' }, reps: { type: 'string', default: '2' }, 'skip-big': { type: 'boolean' } },
});
const REPS = Number(values.reps);
const SHAKESPEARE = resolve(import.meta.dirname, '../../shared/data/tinyshakespeare.txt');
if (!existsSync(SHAKESPEARE)) throw new Error(`${SHAKESPEARE} not found: the benchmark reads the shared data folder`);

function paragraphs(text: string): string[] {
  const out: string[] = [];
  let cur: string[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') {
      if (cur.length) out.push(cur.join('\n'));
      cur = [];
    } else cur.push(line);
  }
  if (cur.length) out.push(cur.join('\n'));
  return out;
}

async function makeBig(file: string, mb: number): Promise<void> {
  const base = readFileSync(SHAKESPEARE, 'utf8');
  const swaps: [RegExp, (i: number) => string][] = [
    [/\bthe\b/g, (i) => (i % 2 ? 'thee' : 'the')],
    [/\bAnd\b/g, (i) => ['And', 'Then', 'So', 'Yet', 'Now'][i % 5]!],
    [/\bmy\b/g, (i) => (i % 3 ? 'my' : 'mine')],
  ];
  const out = createWriteStream(file);
  let written = 0;
  for (let i = 0; written < mb * 1e6; i++) {
    let t = `Copy ${i}.\n\n` + base;
    for (const [re, f] of swaps) t = t.replace(re, f(i));
    if (!out.write(t)) await new Promise((r) => out.once('drain', () => r(undefined)));
    written += Buffer.byteLength(t);
  }
  await new Promise<void>((r, j) => out.end((e?: Error | null) => (e ? j(e) : r())));
}

interface Run {
  tokens: number;
  secs: number;
  cpu: number;
}

// A full GC before each timed run, and a few event-loop turns for the native finalizers it queues (N-API runs
// them after the GC, from the loop), so neither side pays for the other's garbage: the raw side leaves ~7k
// Encoding objects and a whole Rust tokenizer per rep; whichever run came next used to free them on its clock.
setFlagsFromString('--expose-gc');
const gcNow = runInNewContext('gc') as () => void;
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    gcNow();
    await new Promise((r) => setImmediate(r));
  }
}

const cpuSecs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

async function raw(json: string, file: string): Promise<Run> {
  const rust = Tokenizer.fromString(json);
  await settle();
  const c0 = cpuSecs();
  const t0 = performance.now();
  const paras = paragraphs(readFileSync(file, 'utf8'));
  let tokens = 0;
  for (let i = 0; i < paras.length; i += 8192) {
    const encs = await rust.encodeBatch(paras.slice(i, i + 8192), { addSpecialTokens: false });
    for (const e of encs) tokens += e.getIds().length;
  }
  return { tokens, secs: (performance.now() - t0) / 1000, cpu: cpuSecs() - c0 };
}

async function pipeline(file: string): Promise<Run> {
  const root = mkdtempSync(join(tmpdir(), 'bench-prep-'));
  try {
    const cfg = parseConfig({ data: { train: { type: 'text', path: file } }, preprocess: { mode: 'concat', blockSize: 1024 }, storage: { root } });
    await settle();
    const c0 = cpuSecs();
    const t0 = performance.now();
    const { manifest: m } = await prepareData(cfg);
    const secs = (performance.now() - t0) / 1000;
    const cpu = cpuSecs() - c0;
    const s = m.splits;
    const eos = s.train.examples + s.validation.examples;
    return { tokens: s.train.sourceTokens + s.validation.sourceTokens - eos, secs, cpu };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

async function bench(name: string, file: string, json: string) {
  const mb = statSync(file).size / 1e6;
  const raws: Run[] = [];
  const pipes: Run[] = [];
  for (let r = 0; r < REPS; r++) {
    const a = await raw(json, file);
    const b = await pipeline(file);
    if (a.tokens !== b.tokens) throw new Error(`token counts differ: raw ${a.tokens}, pipeline ${b.tokens}`);
    raws.push(a);
    pipes.push(b);
    console.log(
      `  rep ${r + 1}: raw ${a.secs.toFixed(2)}s wall ${a.cpu.toFixed(2)}s cpu | pipeline ${b.secs.toFixed(2)}s wall ${b.cpu.toFixed(2)}s cpu`,
    );
  }
  const tokens = raws[0]!.tokens;
  const M = (x: number) => (tokens / x / 1e6).toFixed(3);
  const wallRaw = Math.min(...raws.map((r) => r.secs));
  const wallPipe = Math.min(...pipes.map((r) => r.secs));
  const cpuRaw = median(raws.map((r) => r.cpu));
  const cpuPipe = median(pipes.map((r) => r.cpu));
  console.log(
    `${name}: ${mb.toFixed(1)} MB, ${tokens} tokens\n` +
      `  wall (best):  raw encodeBatch ${M(wallRaw)} M tok/s | pipeline ${M(wallPipe)} M tok/s | ratio ${(wallRaw / wallPipe).toFixed(2)}x (target >= 0.9)\n` +
      `  cpu (median): raw ${M(cpuRaw)} M tok/cpu-s | pipeline ${M(cpuPipe)} M tok/cpu-s | ratio ${(cpuRaw / cpuPipe).toFixed(2)}x\n` +
      `  cores busy (cpu/wall, median): raw ${median(raws.map((r) => r.cpu / r.secs)).toFixed(2)} | pipeline ${median(pipes.map((r) => r.cpu / r.secs)).toFixed(2)}`,
  );
}

const tok = await loadTokenizer({ type: 'gpt2' });
console.log(`${cpus()[0]?.model ?? 'cpu'}, ${availableParallelism()} cores, node ${process.version}, reps ${REPS}`);
await bench('tinyshakespeare', SHAKESPEARE, tok.json);
if (!values['skip-big']) {
  const dir = mkdtempSync(join(tmpdir(), 'bench-big-'));
  const big = join(dir, 'big.txt');
  await makeBig(big, Number(values['big-mb']));
  try {
    await bench(`shakespeare x${Math.round(statSync(big).size / statSync(SHAKESPEARE).size)} perturbed`, big, tok.json);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
