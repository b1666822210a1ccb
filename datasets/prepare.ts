// prepareData: corpus → tokens → blockSize Parquet shards + manifest.json, content-addressed and idempotent.
//
//   1. fingerprint the inputs (source bytes, settings, tokenizer, code version) → the output directory
//   2. if that directory is complete (DONE marker), return it
//   3. otherwise stream the sources: split each example to train/validation by hash(seed, index), tokenize in
//      worker threads, block, and write shards into a private temporary directory
//   4. write tokenizer.json, manifest.json, DONE (last), then rename the directory into place
// A killed or failed attempt leaves only its temporary directory (cleaned up by the next attempt); two
// concurrent attempts both finish, the first rename wins, the second returns the winner's result.
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { FinetuneConfig, formatZodError } from '../configs/index.js';
import { EncodePool, type Encoded } from './encode-pool.js';
import { badInput, checkAborted, DataError } from './errors.js';
import { dataFingerprint, digestSources, effectiveSequencesPerShard, listInputs, PREPARE_VERSION, semanticSettings } from './fingerprint.js';
import { DONE_MARKER, Manifest, MANIFEST_FORMAT, readManifest } from './manifest.js';
import { where, readSource, type Item, type Unit } from './readers/index.js';
import { SplitWriter } from './split-writer.js';
import { loadTokenizer, type LoadedTokenizer } from './tokenizer.js';
import { alpacaPrompt } from './alpaca.js';
import { chatLossMask, loadChatTemplate, messagesOf, renderChat, type ChatTemplate } from './chat.js';
import { readModelShape, shapeMismatches } from './model-folder.js';
import { createHash } from 'node:crypto';

/** A split whose truncation cuts away more than this fraction of its tokens gets a warning in the manifest. */
export const TRUNCATION_WARN_FRACTION = 0.05;

/** Below this many input bytes (and with `workers` 0 = auto), tokenize without worker threads. */
export const SMALL_CORPUS_BYTES = 32 << 20;

export interface PrepareProgress {
  /** 'hash' (fingerprinting the input bytes), 'tokenize' (the main pass), 'done'. */
  stage: string;
  bytes: number;
  totalBytes?: number;
  sequences: number;
}

export interface PrepareOptions {
  /** Root under which `<fingerprint>/` is created; default `<storage.root>/data`. */
  outRoot?: string;
  /** Exact output directory (overrides outRoot). */
  outDir?: string;
  onProgress?: (p: PrepareProgress) => void;
  signal?: AbortSignal;
}

export interface PrepareResult {
  dir: string;
  manifest: Manifest;
  reused: boolean;
}

/** Deterministic split: hash (seed, example index) → [0, 1); no state, so it streams. */
export function isValidation(seed: number, index: number, fraction: number): boolean {
  if (fraction <= 0) return false;
  let h = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35) ^ Math.floor(index / 0x100000000);
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d);
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b);
  h ^= h >>> 16;
  return (h >>> 0) / 0x100000000 < fraction;
}

function unitFor(cfg: FinetuneConfig, type: string): Unit {
  const mode = cfg.preprocess.mode;
  if (mode === 'lines') return 'line';
  if (mode === 'instruct' || mode === 'chat') return 'record';
  return type === 'text' ? 'paragraph' : type === 'builtin' ? 'file' : 'row';
}

/** Texts waiting to be tokenized, and what to do with each result. */
interface Job {
  texts: string[];
  chars: number;
  /**
   * Per example: split (0 train, 1 validation), number of texts (1, or 2 for instruct), document continues, and
   * in chat mode the loss spans of its text (code points).
   */
  ex: { split: 0 | 1; n: number; more: boolean; spans?: number[] }[];
}

export async function prepareData(cfgIn: FinetuneConfig, opts: PrepareOptions = {}): Promise<PrepareResult> {
  const parsed = FinetuneConfig.safeParse(cfgIn);
  if (!parsed.success) {
    const e = formatZodError(parsed.error, cfgIn);
    throw new DataError('BAD_INPUT', e.message);
  }
  const cfg = parsed.data;
  const tok = await loadTokenizer(cfg.tokenizer);
  if (cfg.model.init === 'random' && tok.vocabSize > cfg.model.vocabSize)
    throw badInput('model.vocabSize', `${cfg.model.vocabSize} is smaller than the tokenizer's ${tok.vocabSize} tokens`);
  if (cfg.model.init === 'pretrained' && cfg.model.path) {
    const problems = shapeMismatches(readModelShape(cfg.model.path), cfg.model.path, tok.vocabSize, tok.name, cfg.preprocess.blockSize);
    if (problems.length) throw badInput(cfg.model.path, problems.join('; '));
  }

  // Start the tokenizer workers now: they load while the inputs are hashed. Small corpora skip worker threads
  // (their start-up costs more than they win; bench/tokenize.ts measures both sides of SMALL_CORPUS_BYTES).
  const inputs = listInputs(cfg);
  const bytes = inputs.reduce((a, i) => a + i.bytes, 0);
  const threads = cfg.preprocess.workers === 0 && bytes < SMALL_CORPUS_BYTES ? -1 : cfg.preprocess.workers;
  const pool = new EncodePool(tok.json, threads, tok.tokenizerJsonPath);
  try {
    return await prepareWith(cfg, tok, pool, inputs, opts);
  } finally {
    await pool.close();
  }
}

async function prepareWith(
  cfg: FinetuneConfig,
  tok: LoadedTokenizer,
  pool: EncodePool,
  inputs: ReturnType<typeof listInputs>,
  opts: PrepareOptions,
): Promise<PrepareResult> {
  const { signal, onProgress } = opts;
  // 1. Fingerprint.
  const totalBytes = inputs.reduce((a, i) => a + i.bytes, 0);
  let hashed = 0;
  let lastReport = 0;
  const digests = await digestSources(inputs, signal, (n) => {
    hashed += n;
    const now = Date.now();
    if (now - lastReport < 200 && hashed < totalBytes) return; // progress is a heartbeat source: keep it cheap
    lastReport = now;
    onProgress?.({ stage: 'hash', bytes: hashed, totalBytes, sequences: 0 });
  });
  const settings = semanticSettings(cfg);
  // A tokenizer that adds BOS (Llama) changes the ids written: part of the fingerprint (others keep theirs); so
  // do the chat template's text and the special tokens it is rendered with.
  const chat = cfg.preprocess.mode === 'chat' ? loadChatTemplate(cfg.preprocess.chat, cfg.tokenizer, tok) : undefined;
  const extra = {
    ...(tok.bosId === undefined ? {} : { bos: tok.bosId }),
    ...(chat ? { chatTemplate: createHash('sha256').update(JSON.stringify([chat.source, chat.specialTokens])).digest('hex') } : {}),
  };
  const fingerprint = dataFingerprint(digests, { ...settings, ...extra }, tok.sha256);
  const dir = resolve(opts.outDir ?? join(opts.outRoot ?? join(cfg.storage.root, 'data'), fingerprint));

  // 2. Reuse a complete result.
  const existing = reusable(dir, fingerprint);
  if (existing) {
    onProgress?.({ stage: 'done', bytes: totalBytes, totalBytes, sequences: existing.splits.train.sequences + existing.splits.validation.sequences });
    return { dir, manifest: existing, reused: true };
  }

  // 3. Build privately.
  mkdirSync(dirname(dir), { recursive: true });
  cleanStaleAttempts(dir);
  const tmp = `${dir}.tmp-${hostname()}-${process.pid}-${randomBytes(4).toString('hex')}`;
  mkdirSync(tmp);
  try {
    const manifest = await build(cfg, tok, pool, tmp, fingerprint, digests, settings, totalBytes, opts, chat);
    // 4. Commit: DONE is the last file written; the rename publishes everything at once.
    writeDurable(join(tmp, 'tokenizer.json'), tok.json);
    writeDurable(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    fsyncPath(join(tmp, 'data'));
    writeDurable(join(tmp, DONE_MARKER), `${fingerprint}\n`);
    fsyncPath(tmp);
    checkAborted(signal);
    try {
      renameSync(tmp, dir);
      fsyncPath(dirname(dir));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      const theirs = reusable(dir, fingerprint); // a concurrent attempt won the race
      if (!theirs) throw e;
      rmSync(tmp, { recursive: true, force: true });
      return { dir, manifest: theirs, reused: true };
    }
    onProgress?.({ stage: 'done', bytes: totalBytes, totalBytes, sequences: manifest.splits.train.sequences + manifest.splits.validation.sequences });
    return { dir, manifest, reused: false };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** The manifest of a complete result for this fingerprint at `dir`; undefined when there is none yet. */
function reusable(dir: string, fingerprint: string): Manifest | undefined {
  if (!existsSync(dir)) return undefined;
  if (!existsSync(join(dir, DONE_MARKER))) {
    if (readdirSync(dir).length === 0) {
      rmSync(dir, { recursive: true, force: true });
      return undefined;
    }
    throw badInput(dir, 'exists and is not a completed prepare output (no DONE marker); delete it or choose another --out');
  }
  const m = readManifest(dir);
  if (m.fingerprint !== fingerprint)
    throw badInput(dir, `holds prepared data with another fingerprint (${m.fingerprint.slice(0, 12)}…, this config gives ${fingerprint.slice(0, 12)}…); choose another --out or delete it`);
  return m;
}

/** Remove temporary directories of earlier attempts on this host whose process is gone. */
function cleanStaleAttempts(dir: string): void {
  const prefix = `${basename(dir)}.tmp-${hostname()}-`;
  for (const name of readdirSync(dirname(dir))) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    let alive = true;
    try {
      process.kill(pid, 0);
    } catch (e) {
      alive = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
    if (!alive) rmSync(join(dirname(dir), name), { recursive: true, force: true });
  }
}

/** Write and fsync, so a DONE marker never survives a crash that its files did not. */
export function writeDurable(file: string, data: string | Uint8Array): void {
  writeFileSync(file, data);
  fsyncPath(file);
}

/** fsync a file or directory (directories: so renames and new entries are on disk). */
export function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

function instructTexts(it: Item, fields: FinetuneConfig['preprocess']['instructFields']): [string, string] {
  const r = it.record!;
  const get = (name: string, required: boolean): string => {
    const v = r[name];
    if (v === undefined || v === null) {
      if (!required) return '';
      throw badInput(where(it), `no field '${name}' (fields: ${Object.keys(r).join(', ')}); set preprocess.instructFields`);
    }
    if (typeof v !== 'string') throw badInput(where(it), `field '${name}' is ${typeof v}, expected a string`);
    return v;
  };
  return [alpacaPrompt(get(fields.instruction, true), get(fields.input, false)), get(fields.output, true)];
}

async function build(
  cfg: FinetuneConfig,
  tok: LoadedTokenizer,
  pool: EncodePool,
  tmp: string,
  fingerprint: string,
  digests: unknown,
  settings: object,
  totalBytes: number,
  opts: PrepareOptions,
  chat?: ChatTemplate,
): Promise<Manifest> {
  const p = cfg.preprocess;
  const T = p.blockSize;
  const perShard = effectiveSequencesPerShard(p.sequencesPerShard);
  const padded = p.mode !== 'concat';
  let sequences = 0;
  let bytes = 0;
  let lastReport = 0;
  const report = (force = false) => {
    const now = Date.now();
    if (!force && now - lastReport < 200) return;
    lastReport = now;
    opts.onProgress?.({ stage: 'tokenize', bytes, totalBytes, sequences });
  };
  const onSeq = (n: number) => void (sequences += n);
  // Packed layouts (lines, instruct and chat with pad false) keep attention and loss within each example.
  const packedLayout = padded && !p.pad;
  const writers = [
    new SplitWriter('train', tmp, T, perShard, tok.padId, padded, onSeq, packedLayout),
    new SplitWriter('validation', tmp, T, perShard, tok.padId, padded, onSeq, packedLayout),
  ] as const;
  const eos = Int32Array.of(tok.eosId);
  // BOS (tokenizers whose template adds one, e.g. Llama's <s>) opens every document, line and example, as
  // tokenizer(text) does in HF; empty for GPT-2-style tokenizers.
  const bos = tok.bosId === undefined ? new Int32Array(0) : Int32Array.of(tok.bosId);
  const docStart = [true, true]; // concat: per split, is the next segment the start of a document?

  const consume = (job: Job, r: Encoded) => {
    let t = 0;
    for (const ex of job.ex) {
      const w = writers[ex.split];
      const seg = (i: number) => r.ids.subarray(r.offsets[i]!, r.offsets[i + 1]!);
      if (p.mode === 'concat') {
        if (docStart[ex.split]) w.stream(bos);
        docStart[ex.split] = !ex.more;
        w.stream(seg(t));
        if (!ex.more) {
          w.stream(eos);
          w.stats.examples++;
        }
      } else if (p.mode === 'lines') {
        const ids = p.pad ? concatIds(bos, seg(t)) : concatIds(bos, seg(t), eos); // packed lines are separated by EOS
        if (p.pad) w.padded(ids, 0);
        else w.packed(ids, 0);
      } else if (p.mode === 'chat') {
        // The template writes BOS and the end-of-turn tokens itself: the ids are the rendered text's, as is.
        const ids = seg(t);
        const mask = chatLossMask(r.starts!.subarray(r.offsets[t]!, r.offsets[t + 1]!), ex.spans!);
        if (p.pad) w.padded(ids, mask);
        else w.packed(ids, mask);
      } else {
        const prompt = concatIds(bos, seg(t)); // BOS belongs to the prompt: no loss
        const ids = concatIds(prompt, seg(t + 1), eos); // EOS after the response: the model learns to stop
        if (p.pad) w.padded(ids, prompt.length);
        else w.packed(ids, prompt.length);
      }
      t += ex.n;
    }
  };

  // Tokenize with a bounded window of batches in flight; consume results in order.
  const window: { job: Job; done: Promise<Encoded> }[] = [];
  const maxInFlight = 4 * pool.size;
  const dispatch = async (job: Job) => {
    if (job.texts.length === 0) return;
    window.push({ job, done: pool.encode(job.texts, p.mode === 'chat') });
    while (window.length >= maxInFlight) await drainOne();
  };
  const drainOne = async () => {
    const head = window.shift()!;
    consume(head.job, await head.done);
    report();
  };
  const newJob = (): Job => ({ texts: [], chars: 0, ex: [] });

  const sources = [
    { src: cfg.data.train, fixed: undefined as 0 | 1 | undefined },
    ...(cfg.data.validation ? [{ src: cfg.data.validation, fixed: 1 as const }] : []),
  ];
  for (const { src, fixed } of sources) {
    const unit = unitFor(cfg, src.type);
    let index = 0; // example index within this source: the split key
    let docSplit: 0 | 1 = 0;
    let inDoc = false; // inside a multi-piece document
    let skipRest = false; // lines mode: the rest of an over-long line
    let job = newJob();
    const splitOf = (): 0 | 1 =>
      fixed ?? (isValidation(cfg.data.splitSeed, index++, cfg.data.validationFraction) ? 1 : 0);
    for await (const batch of readSource(src, unit, opts.signal)) {
      checkAborted(opts.signal);
      for (const it of batch.items) {
        if (p.mode === 'concat') {
          if (!inDoc) {
            if (it.text.length === 0 && !it.more) continue; // empty record: nothing to learn
            docSplit = splitOf();
          }
          inDoc = !!it.more;
          job.texts.push(it.text);
          job.chars += it.text.length;
          job.ex.push({ split: docSplit, n: 1, more: !!it.more });
        } else if (p.mode === 'lines') {
          if (skipRest) {
            skipRest = !!it.more;
            continue;
          }
          skipRest = !!it.more; // keep the first MAX_DOC_CHARS of a giant line; truncation to T follows anyway
          const line = it.text.trim();
          if (line === '' || (p.dropSpeakerLines && line.endsWith(':'))) continue;
          job.texts.push(line);
          job.chars += line.length;
          job.ex.push({ split: splitOf(), n: 1, more: false });
        } else if (p.mode === 'chat') {
          const at = where(it);
          const { text, spans } = renderChat(chat!, messagesOf(it.record!, p.chat, at), p.chat.lossOn, at);
          job.texts.push(text);
          job.chars += text.length;
          job.ex.push({ split: splitOf(), n: 1, more: false, spans });
        } else {
          const [prompt, output] = instructTexts(it, p.instructFields);
          job.texts.push(prompt, output);
          job.chars += prompt.length + output.length;
          job.ex.push({ split: splitOf(), n: 2, more: false });
        }
        if (job.chars >= 1 << 17 || job.texts.length >= 4096) {
          await dispatch(job);
          job = newJob();
        }
      }
      bytes += batch.bytes;
      report();
    }
    await dispatch(job);
  }
  while (window.length) await drainOne();
  report(true);

  // A corpus of one document (one paragraph, one giant line) puts that document in one split: with no document
  // drawn for validation, the tail of the train split's sequences is held out instead, as much as
  // data.validationFraction asks (at least one sequence, never the last train one). Said in the manifest.
  let heldOut = 0;
  const f = cfg.data.validationFraction;
  if (!cfg.data.validation && f > 0 && writers[1].stats.sequences === 0) {
    const n = writers[0].stats.sequences;
    heldOut = writers[0].moveTailTo(writers[1], Math.min(Math.max(1, Math.round(f * n)), n - 1));
  }
  const [train, validation] = [writers[0].finish(), { ...writers[1].finish(), ...(heldOut ? { heldOutFromTrain: heldOut } : {}) }];
  if (train.sequences === 0)
    throw badInput(
      sources.map((s) => ('path' in s.src ? String(s.src.path) : s.src.type)).join(', '),
      train.examples === 0
        ? 'empty corpus: no training examples were found'
        : train.droppedExamples === train.examples
          ? `no training sequences: all ${train.examples} examples were dropped: no token of theirs would carry loss within blockSize ${T}; raise preprocess.blockSize`
          : `empty corpus: ${train.examples} examples, ${train.sourceTokens} tokens, not enough for one sequence of ${T}`,
    );
  return Manifest.parse({
    format: MANIFEST_FORMAT,
    fingerprint,
    codeVersion: PREPARE_VERSION,
    createdAt: new Date().toISOString(),
    mode: p.mode,
    blockSize: T,
    padded,
    sequencesPerShard: perShard,
    columns: padded ? ['input_ids', 'labels', 'attention_mask', ...(packedLayout ? (['position_ids'] as const) : [])] : ['input_ids', 'labels'],
    tokenizer: { name: tok.name, sha256: tok.sha256, file: 'tokenizer.json', vocabSize: tok.vocabSize },
    eosId: tok.eosId,
    padId: tok.padId,
    inputs: { sources: digests, settings },
    splits: { train, validation },
    warnings: dataWarnings(cfg, { train, validation }),
  });
}

/** Heavy truncation and dropped examples, per split, with the setting that changes them. */
export function dataWarnings(cfg: FinetuneConfig, splits: Record<'train' | 'validation', Omit<Manifest['splits']['train'], 'shards'>>): string[] {
  const out: string[] = [];
  const T = cfg.preprocess.blockSize;
  for (const [name, s] of Object.entries(splits)) {
    if (s.sourceTokens > 0 && s.truncatedTokens / s.sourceTokens > TRUNCATION_WARN_FRACTION)
      out.push(
        `${name}: truncation to blockSize ${T} cut away ${((100 * s.truncatedTokens) / s.sourceTokens).toFixed(1)}% of the tokens ` +
          `(${s.truncatedTokens} of ${s.sourceTokens}, ${s.truncatedExamples} of ${s.examples} examples cut); raise preprocess.blockSize`,
      );
    if (s.droppedExamples > 0) {
      const why =
        cfg.preprocess.mode === 'lines'
          ? 'lines of one token: nothing to predict'
          : cfg.preprocess.mode === 'chat'
            ? `no assistant turn, or the assistant turns start after the first ${T} tokens); raise preprocess.blockSize to keep the latter`
            : `the response starts after the first ${T} tokens); raise preprocess.blockSize to keep them`;
      out.push(`${name}: ${s.droppedExamples} of ${s.examples} examples dropped: no token of theirs would carry loss (${why}${cfg.preprocess.mode === 'lines' ? ')' : ''}`);
    }
  }
  return out;
}

function concatIds(...parts: Int32Array[]): Int32Array {
  let n = 0;
  for (const x of parts) n += x.length;
  const out = new Int32Array(n);
  let at = 0;
  for (const x of parts) {
    out.set(x, at);
    at += x.length;
  }
  return out;
}
