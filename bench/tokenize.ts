// Pipeline throughput vs the raw Rust tokenizer, same machine, same run.
//
//   npx tsx bench/tokenize.ts [--big-mb 100] [--reps 2] [--skip-big]
//
// peer:     `tokenizers` (HF's Rust bindings) encodeBatch over the corpus' paragraphs held in memory, batches of
//           8192, ids fetched (getIds) — the fastest way to get GPT-2 ids into JS with that library.
// pipeline: prepareData, concat mode, blockSize 1024, GPT-2, into a fresh directory: hashing the input, streaming
//           it from disk, tokenizing in worker threads, blocking, writing ZSTD Parquet shards and the manifest.
// Both count the same tokens (the pipeline's sourceTokens minus the EOS it adds). Runs alternate; best of reps.
// Corpora: tinyshakespeare (../shared/data), and a >= 100 MB corpus made by repeating it with per-copy
// perturbations (words swapped, copy headers) so the tokenizer's word cache cannot serve a single copy.
import { createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
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

async function raw(json: string, file: string): Promise<{ tokens: number; secs: number }> {
  const rust = Tokenizer.fromString(json);
  const t0 = performance.now();
  const paras = paragraphs(readFileSync(file, 'utf8'));
  let tokens = 0;
  for (let i = 0; i < paras.length; i += 8192) {
    const encs = await rust.encodeBatch(paras.slice(i, i + 8192), { addSpecialTokens: false });
    for (const e of encs) tokens += e.getIds().length;
  }
  return { tokens, secs: (performance.now() - t0) / 1000 };
}

async function pipeline(file: string): Promise<{ tokens: number; secs: number }> {
  const root = mkdtempSync(join(tmpdir(), 'bench-prep-'));
  try {
    const cfg = parseConfig({ data: { train: { type: 'text', path: file } }, preprocess: { mode: 'concat', blockSize: 1024 }, storage: { root } });
    const t0 = performance.now();
    const { manifest: m } = await prepareData(cfg);
    const secs = (performance.now() - t0) / 1000;
    const s = m.splits;
    const eos = s.train.examples + s.validation.examples;
    return { tokens: s.train.sourceTokens + s.validation.sourceTokens - eos, secs };
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

async function bench(name: string, file: string, json: string) {
  const mb = statSync(file).size / 1e6;
  let bestRaw = Infinity;
  let bestPipe = Infinity;
  let tokens = 0;
  for (let r = 0; r < REPS; r++) {
    const a = await raw(json, file);
    const b = await pipeline(file);
    if (a.tokens !== b.tokens) throw new Error(`token counts differ: raw ${a.tokens}, pipeline ${b.tokens}`);
    tokens = a.tokens;
    bestRaw = Math.min(bestRaw, a.secs);
    bestPipe = Math.min(bestPipe, b.secs);
    console.log(`  rep ${r + 1}: raw ${a.secs.toFixed(2)}s  pipeline ${b.secs.toFixed(2)}s`);
  }
  const rawRate = tokens / bestRaw;
  const pipeRate = tokens / bestPipe;
  console.log(
    `${name}: ${mb.toFixed(1)} MB, ${tokens} tokens | raw encodeBatch ${(rawRate / 1e6).toFixed(3)} M tok/s | ` +
      `pipeline ${(pipeRate / 1e6).toFixed(3)} M tok/s | ratio ${(pipeRate / rawRate).toFixed(2)}x (target >= 0.9)`,
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
