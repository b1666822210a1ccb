// The training engine's typed API (native/README.md describes the engine behind it).
// Every slow call runs on a native worker thread and returns a promise, so the event loop (and Temporal
// heartbeats) stay free during training. Errors are EngineErrors with a code, the native file:line and a hint,
// on top of the JavaScript stack of the call that failed.
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { FinetuneConfig } from '../configs/index.js';
import { workerLayout } from '../configs/parallel.js';
import type { NativeAddon, NativeCreateOptions, NativeEngine, NativeFamilyFields, NativeMemoryEstimate, NativeShard } from './addon-types.js';
import { addonBuild, loadAddon, tryLoadAddon } from './loader.js';

export type EngineErrorCode =
  | 'OUT_OF_MEMORY' | 'NON_FINITE_LOSS' | 'BAD_SHAPE' | 'IO' | 'BAD_CHECKPOINT' | 'BAD_CONFIG' | 'ABORTED' | 'DEVICE' | 'INTERNAL';

/** Error thrown by every engine call; `code` drives retry classification in activities. */
export class EngineError extends Error {
  override name = 'EngineError';
  /** OUT_OF_MEMORY: the pre-flight verdict's advice for this config and GPU (withEstimate), when it could tell. */
  advice?: string;
  constructor(
    public code: EngineErrorCode,
    message: string,
    public nativeFile?: string,
    public nativeLine?: number,
    public hint?: string,
    public step?: number,
  ) {
    super(message);
  }
}

/** positionIds: packed shards (several examples per sequence), each token's position within its example. */
export interface ShardData { nSeq: number; blockSize: number; inputIds: Int32Array; labels: Int32Array; positionIds?: Int32Array }
export interface DataCursor { epoch: number; shard: number; offset: number; shuffleSeed: number }
export interface StepProgress { step: number; loss: number; lr: number; gradNorm: number; tokensPerSec: number; elapsedMs: number }

/** The EFFECTIVE configuration, reported after init. */
export interface EngineInfo {
  backend: 'cpu' | 'cuda'; device: string; blas?: string; precision: 'fp32' | 'bf16';
  nParams: number; family: string; nLayer: number; nHead: number; nEmbd: number; vocabSize: number; nPositions: number;
  zeroStage: number; offload: string; threads: number;
  /** Ranks over all workers, this engine's first global rank, and the local CUDA ordinals it drives. */
  worldSize: number; rank: number; devices: number[];
  /** llama / gpt_neox / gptj: the resolved family fields (families.h). */
  nKvHead?: number; headDim?: number; intermediateSize?: number; rotaryDim?: number; ropeTheta?: number;
  tieWordEmbeddings?: boolean; parallelResidual?: boolean; hiddenAct?: string;
  /** From the Hugging Face config.json (or model.bosTokenId/eosTokenId); absent when unknown. */
  bosTokenId?: number; eosTokenId?: number;
}

/**
 * Bytes held per device (several GPUs: the largest rank's) as of the last completed call; the cpu backend reports
 * host memory. `formulaBytes` is the model-state formula for this ZeRO stage and world size with the engine's own
 * gradient precision, `formulaPaperBytes` with the ZeRO paper's 2-byte gradients (compare with params + grads +
 * optimizer).
 */
export interface MemoryReport {
  paramsBytes: number; gradsBytes: number; optimizerBytes: number; activationsBytes: number; otherBytes: number;
  /** ZeRO communication buffers: gradient buckets (stage >= 2), gathered layers (stage 3). */
  buffersBytes: number;
  totalBytes: number; deviceTotalBytes?: number;
  zeroStage: number; worldSize: number; formulaBytes?: number; formulaPaperBytes?: number;
}

export interface TrainResult { step: number; losses: number[]; tokens: number; tokensPerSec: number; aborted: boolean }
export interface EvalResult { loss: number; perplexity: number; accuracy: number; tokens: number; sequences: number }
/**
 * Where this engine sits in a data-parallel job. Absent: one worker driving `parallelism.devices` of its own GPUs
 * (the cuda backend; the cpu backend is one device), with no rendezvous. Several workers: each gets the same
 * `worldSize` and `ncclId` (from `ncclUniqueId()` on rank 0's worker) and its own `rankOffset`.
 */
export interface ParallelOptions {
  /** Ranks (GPUs) over all workers. */
  worldSize: number;
  /** Global rank of this worker's first local GPU (worker index x GPUs per worker). */
  rankOffset: number;
  /** Local CUDA ordinals this worker drives, one engine thread each. */
  devices: number[];
  /** NCCL unique id (256 hex digits) from ncclUniqueId() on rank 0's worker; absent for a single worker. */
  ncclId?: string;
}

export interface GenerateOptions { maxNewTokens: number; temperature: number; topK: number; topP: number; seed: number; eosId: number }

// ---------------------------------------------------------------------------------------------------------------
// errors: keep the JS stack of the call, add the native code, file:line and hint

function toEngineError(e: unknown, stack: Error): EngineError {
  const n = e as { message?: string; code?: string; nativeFile?: string; nativeLine?: number; hint?: string; step?: number };
  const codes: EngineErrorCode[] = ['OUT_OF_MEMORY', 'NON_FINITE_LOSS', 'BAD_SHAPE', 'IO', 'BAD_CHECKPOINT', 'BAD_CONFIG', 'ABORTED', 'DEVICE', 'INTERNAL'];
  const code: EngineErrorCode = e instanceof TypeError ? 'BAD_CONFIG' : codes.includes(n?.code as EngineErrorCode) ? (n.code as EngineErrorCode) : 'INTERNAL';
  const where = n?.nativeFile ? ` (${n.nativeFile}:${n.nativeLine})` : '';
  const hint = n?.hint ? `\n  hint: ${n.hint}` : '';
  const err = new EngineError(code, `${n?.message ?? String(e)}${where}${hint}`, n?.nativeFile, n?.nativeLine, n?.hint, n?.step);
  err.stack = `EngineError [${code}]: ${err.message}\n${(stack.stack ?? '').split('\n').slice(1).join('\n')}`;
  return err;
}

async function call<T>(f: () => Promise<T>): Promise<T> {
  const stack = new Error();  // captured before the native call: the awaiting caller's frames
  try {
    return await f();
  } catch (e) {
    throw toEngineError(e, stack);
  }
}

function callSync<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    throw toEngineError(e, new Error());
  }
}

function addon(): NativeAddon {
  try {
    return loadAddon();
  } catch (e) {
    throw new EngineError('INTERNAL', (e as Error).message, undefined, undefined, 'npm run build:native');
  }
}

// ---------------------------------------------------------------------------------------------------------------
// config -> native options

function resolveBackend(cfg: FinetuneConfig, want?: 'cpu' | 'cuda'): 'cpu' | 'cuda' {
  const b = want ?? cfg.training.backend;
  if (b !== 'auto') return b;
  const info = addon().buildInfo();
  return info.backends.includes('cuda') && info.cudaDevices > 0 ? 'cuda' : 'cpu';
}

/** Family fields of model.* for the engine; unset ones keep the family's default (native/engine/families.cpp). */
function familyOptions(m: FinetuneConfig['model']): NativeFamilyFields {
  const f: NativeFamilyFields = { family: m.family };
  if (m.family === 'gpt2') return m.layerNormEps === undefined ? f : { ...f, layerNormEps: m.layerNormEps };
  const headDim = m.headDim ?? m.nEmbd / m.nHead;
  const rotaryDim = m.rotaryDim ?? (m.rotaryPct !== undefined ? Math.floor(headDim * m.rotaryPct) : undefined);
  if (rotaryDim !== undefined && (rotaryDim < 2 || rotaryDim % 2 !== 0))
    throw new EngineError('BAD_CONFIG', `model.rotaryDim/rotaryPct gives ${rotaryDim} rotary dims per head (need an even number >= 2)`);
  const opt = { nKvHead: m.nKvHead, headDim: m.headDim, intermediateSize: m.intermediateSize, rotaryDim, ropeTheta: m.ropeTheta,
    layerNormEps: m.layerNormEps, rmsNormEps: m.rmsNormEps, tieWordEmbeddings: m.tieWordEmbeddings,
    parallelResidual: m.parallelResidual, ropeScaling: m.ropeScaling };
  for (const [k, v] of Object.entries(opt)) if (v !== undefined) (f as Record<string, unknown>)[k] = v;
  return f;
}

/** The single-worker layout (configs/parallel.ts workerLayout): parallelism.devices of this host's GPUs (cuda), or the one cpu device. */
function singleWorker(cfg: FinetuneConfig, backend: 'cpu' | 'cuda'): ParallelOptions {
  let visible = 0;
  try {
    if (backend === 'cuda') visible = addon().buildInfo().cudaDevices;
  } catch {
    /* reported by createEngine */
  }
  try {
    return workerLayout(cfg, { backend, visible: Math.max(visible, 1) });
  } catch (e) {
    throw new EngineError('BAD_CONFIG', (e as Error).message, undefined, undefined, 'set parallelism.devices to the GPUs this host has');
  }
}

function checkParallel(p: ParallelOptions): void {
  const bad = (m: string) => new EngineError('BAD_CONFIG', `parallel options: ${m}`);
  if (!Number.isInteger(p.worldSize) || p.worldSize < 1) throw bad(`worldSize must be a positive integer, got ${p.worldSize}`);
  if (!p.devices.length || p.devices.some((d) => !Number.isInteger(d) || d < 0)) throw bad(`devices must be CUDA ordinals, got ${JSON.stringify(p.devices)}`);
  if (!Number.isInteger(p.rankOffset) || p.rankOffset < 0 || p.rankOffset + p.devices.length > p.worldSize)
    throw bad(`ranks ${p.rankOffset}..${p.rankOffset + p.devices.length - 1} do not fit worldSize ${p.worldSize}`);
  if (p.ncclId !== undefined && !new RegExp(`^[0-9a-fA-F]{${2 * NCCL_ID_BYTES}}$`).test(p.ncclId))
    throw bad(`ncclId must be the ${2 * NCCL_ID_BYTES} hex digits ncclUniqueId() returned on rank 0, got ${p.ncclId.length} characters`);
}

function nativeOptions(cfg: FinetuneConfig, backend: 'cpu' | 'cuda', par?: ParallelOptions): NativeCreateOptions {
  const m = cfg.model, t = cfg.training;
  const p = par ?? { worldSize: 1, rankOffset: 0, devices: [0] };
  checkParallel(p);
  const threads = Number(process.env.FINETUNE_CPU_THREADS ?? 0);
  return {
    model: { nLayer: m.nLayer, nHead: m.nHead, nEmbd: m.nEmbd, nPositions: m.nPositions, vocabSize: m.vocabSize, dropout: m.dropout, initSeed: m.initSeed,
      ...(cfg.model.init === 'pretrained' ? {} : familyOptions(m)) },
    training: {
      microBatchSize: t.microBatchSize, gradAccumSteps: t.gradAccumSteps, learningRate: t.learningRate, minLrRatio: t.minLrRatio,
      warmupSteps: t.warmupSteps, schedule: t.schedule, weightDecay: t.weightDecay, beta1: t.beta1, beta2: t.beta2, eps: t.eps,
      gradClip: t.gradClip, shuffleSeed: t.shuffleSeed, divergenceLoss: t.divergenceLoss,
    },
    backend: {
      name: backend,
      // The cpu backend is the fp32 reference (training.precision documents bf16 as a cuda-backend setting).
      precision: backend === 'cpu' ? 'fp32' : t.precision,
      recompute: t.recompute,
      device: p.devices[0]!,
      devices: p.devices,
      zeroStage: cfg.parallelism.zeroStage,
      offload: cfg.parallelism.offload.optimizer,
      delayedUpdate: cfg.parallelism.offload.delayedUpdate,
      worldSize: p.worldSize,
      rank: p.rankOffset,
      ...(p.ncclId !== undefined ? { ncclId: p.ncclId } : {}),
      threads: Number.isInteger(threads) && threads > 0 ? threads : 0,
    },
    configJson: JSON.stringify(cfg),
  };
}

/**
 * A cuda OUT_OF_MEMORY gains the pre-flight estimate for this config (engine/zero.h) in its message and, when the
 * engine's message names the GPU's size, the verdict's advice in `advice`: what to change so it fits. The failure
 * the worker reports names it (activities/lib/failures.ts). Exported for tests.
 */
export function withEstimate(e: unknown, cfg: FinetuneConfig, backend: 'cpu' | 'cuda', par: ParallelOptions): never {
  if (!(e instanceof EngineError) || e.code !== 'OUT_OF_MEMORY' || backend !== 'cuda') throw e;
  try {
    const est = estimateMemory(cfg, { worldSize: par.worldSize });
    const GiB = 2 ** 30, d = est.device;
    const more = `\n  pre-flight estimate (${est.formula}): ${(d.total / GiB).toFixed(2)} GiB per GPU = model states ` +
      `${((d.params + d.grads + d.master + d.moments) / GiB).toFixed(2)} + activations ${(d.activations / GiB).toFixed(2)} + buffers ${(d.buffers / GiB).toFixed(2)} GiB`;
    // the engine names the GPU's size: '... 70.10 of 79.19 GiB in use ...' or '... only 3.2 GiB of 79.19 GiB are free'
    const total = /of ([\d.]+) GiB (?:in use|are free)/.exec(e.message);
    if (total) {
      const v = est.fits(Number(total[1]) * GiB);
      if (!v.ok && v.advice) e.advice = v.advice;
    }
    e.message += more;
  } catch {
    /* the estimate itself failed: keep the engine's error as it is */
  }
  throw e;
}

function shardsToNative(shards: ShardData[]): NativeShard[] {
  return shards.map((s) => ({ nSeq: s.nSeq, blockSize: s.blockSize, inputIds: s.inputIds, labels: s.labels, ...(s.positionIds ? { positionIds: s.positionIds } : {}) }));
}

// ---------------------------------------------------------------------------------------------------------------

export class Engine {
  #native: NativeEngine | null;
  #cfg: FinetuneConfig;
  readonly info: EngineInfo;

  private constructor(native: NativeEngine, cfg: FinetuneConfig, par: ParallelOptions) {
    this.#native = native;
    this.#cfg = cfg;
    const i = native.info();
    this.info = {
      backend: i.backend, device: i.device, blas: i.blas || undefined, precision: i.precision, nParams: i.nParams, family: i.family,
      nLayer: i.nLayer, nHead: i.nHead, nEmbd: i.nEmbd, vocabSize: i.vocabSize, nPositions: i.nPositions,
      // effective values when the engine reports them (multi-GPU builds), else what was asked for
      zeroStage: i.zeroStage ?? cfg.parallelism.zeroStage, offload: i.offload ?? cfg.parallelism.offload.optimizer,
      worldSize: i.worldSize ?? par.worldSize, rank: i.rank ?? par.rankOffset, devices: i.devices ?? par.devices, threads: i.threads,
    };
    for (const k of ['nKvHead', 'headDim', 'intermediateSize', 'rotaryDim', 'ropeTheta', 'tieWordEmbeddings', 'parallelResidual',
      'hiddenAct', 'bosTokenId', 'eosTokenId'] as const)
      if (i[k] !== undefined) (this.info as unknown as Record<string, unknown>)[k] = i[k];
  }

  /** Build a model from config: random init (model.initSeed) or a local HF directory (model.init='pretrained'). */
  static async create(cfg: FinetuneConfig, opts: { backend?: 'cpu' | 'cuda'; parallel?: ParallelOptions } = {}): Promise<Engine> {
    const backend = resolveBackend(cfg, opts.backend);
    const par = opts.parallel ?? singleWorker(cfg, backend);
    const o = nativeOptions(cfg, backend, par);
    if (cfg.model.init === 'pretrained') {
      if (!cfg.model.path) throw new EngineError('BAD_CONFIG', "model.init 'pretrained' needs model.path");
      o.hfDir = resolve(cfg.model.path);
    }
    const native = await call(() => addon().createEngine(o)).catch((e: unknown) => withEstimate(e, cfg, backend, par));
    return new Engine(native, cfg, par);
  }

  /** Resume the full training state from a committed checkpoint dir (throws EngineError BAD_CHECKPOINT if corrupt). */
  static async fromCheckpoint(dir: string, cfg: FinetuneConfig, opts: { backend?: 'cpu' | 'cuda'; parallel?: ParallelOptions } = {}): Promise<Engine> {
    const backend = resolveBackend(cfg, opts.backend);
    const par = opts.parallel ?? singleWorker(cfg, backend);
    const o = nativeOptions(cfg, backend, par);
    o.checkpointDir = resolve(dir);
    const native = await call(() => addon().createEngine(o)).catch((e: unknown) => withEstimate(e, cfg, backend, par));
    const e = new Engine(native, cfg, par);
    if (cfg.model.init === 'random') {
      const m = cfg.model, i = e.info;
      const diff = (['family', 'nLayer', 'nHead', 'nEmbd', 'nPositions', 'vocabSize'] as const).filter((k) => m[k] !== i[k]);
      if (diff.length) {
        e.dispose();
        throw new EngineError('BAD_CONFIG', `checkpoint ${dir} holds a different model: ${diff.map((k) => `${k} ${i[k]} (config: ${m[k]})`).join(', ')}`,
          undefined, undefined, 'resume with the config the run was started with');
      }
    }
    return e;
  }

  #n(): NativeEngine {
    if (!this.#native) throw new EngineError('INTERNAL', 'the engine was disposed', undefined, undefined, 'create a new Engine');
    return this.#native;
  }

  /** Current optimizer step (0 for a fresh model). */
  get step(): number {
    return this.#n().state().step;
  }
  /** Position of the train data loader (part of every checkpoint). */
  get cursor(): DataCursor {
    return this.#n().state().cursor;
  }

  /** Hand the train split to the engine (whole buffers, borrowed, no per-token copies). */
  setTrainData(shards: ShardData[]): void {
    const n = this.#n();
    callSync(() => n.setTrainData(shardsToNative(shards)));
  }

  /** Run `nSteps` optimizer steps off the JS thread; stops at a step boundary when `signal` aborts. */
  async train(nSteps: number, opts: { totalSteps: number; signal?: AbortSignal; onProgress?: (p: StepProgress) => void }): Promise<TrainResult> {
    const n = this.#n();
    if (opts.signal?.aborted) return { step: n.state().step, losses: [], tokens: 0, tokensPerSec: 0, aborted: true };
    const onAbort = () => n.abort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const onProgress = opts.onProgress;
    const progress = onProgress
      ? (p: StepProgress) => {
          try {
            onProgress(p);
          } catch (e) {
            // a callback invoked by native code cannot throw back into it
            console.error('engine: onProgress callback threw:', e);
          }
        }
      : undefined;
    try {
      const r = await call(() => n.train(nSteps, opts.totalSteps, progress));
      return { step: r.step, losses: Array.from(r.losses), tokens: r.tokens, tokensPerSec: r.tokensPerSec, aborted: r.aborted };
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Mean loss, perplexity and next-token accuracy over validation shards (masked targets excluded). */
  async evaluate(shards: ShardData[], opts: { maxBatches?: number; batchSize?: number; signal?: AbortSignal } = {}): Promise<EvalResult> {
    const n = this.#n();
    const maxBatches = opts.maxBatches ?? this.#cfg.evaluation.maxBatches;
    const batchSize = opts.batchSize ?? this.#cfg.evaluation.batchSize;
    const onAbort = () => n.abort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (opts.signal?.aborted) throw new EngineError('ABORTED', 'evaluation aborted before it started');
      const r = await call(() => n.evaluate(shardsToNative(shards), maxBatches, batchSize));
      if (r.aborted) throw new EngineError('ABORTED', `evaluation aborted after ${r.sequences} sequences`);
      return { loss: r.loss, perplexity: r.perplexity, accuracy: r.accuracy, tokens: r.tokens, sequences: r.sequences };
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** KV-cache generation from token-id prompts; returns only the new tokens (stops at eosId or maxNewTokens). */
  async generate(prompts: number[][], opts: GenerateOptions): Promise<number[][]> {
    const n = this.#n();
    const out = await call(() => n.generate(prompts.map((p) => Int32Array.from(p)), opts));
    return out.map((a) => Array.from(a));
  }

  /** Atomic checkpoint: private temp dir next to `dir`, fsync, rename, DONE marker last. */
  /** `existed`: the step was committed in `dir` already (by an overlapping attempt); nothing was written. */
  async saveCheckpoint(dir: string, extra: Record<string, unknown> = {}): Promise<{ dir: string; step: number; sha256: string; bytes: number; existed: boolean }> {
    const n = this.#n();
    const r = await call(() => n.saveCheckpoint(resolve(dir), JSON.stringify(extra)));
    return { dir: r.dir, step: r.step, sha256: r.sha256, bytes: r.bytes, existed: r.existed };
  }

  /** Hugging Face directory: config.json, model.safetensors, generation_config.json (+ tokenizer.json copied). */
  /** `eosId`/`bosId`: the tokenizer's, written to config.json and generation_config.json (bosId absent: it adds none). */
  async exportHuggingFace(dir: string, opts: { tokenizerJson?: string; eosId?: number; bosId?: number } = {}): Promise<void> {
    const n = this.#n();
    const tok = opts.tokenizerJson ? resolve(opts.tokenizerJson) : '';
    if (tok && !existsSync(tok)) throw new EngineError('IO', `tokenizer.json not found: ${tok}`);
    // generation_config.json's eos: the caller's, else the model's own (HF config.json), else GPT-2's 50256
    await call(() => n.exportHuggingFace(resolve(dir), tok, opts.eosId ?? this.info.eosTokenId ?? 50256, opts.bosId ?? -1));
  }

  /** Host memory held by the engine (cpu) or device memory (cuda), as of the last completed call. */
  memoryReport(): MemoryReport {
    const r = this.#n().memoryReport();
    return { ...r, buffersBytes: r.buffersBytes ?? 0, zeroStage: r.zeroStage ?? this.info.zeroStage, worldSize: r.worldSize ?? this.info.worldSize };
  }

  // ---- parity/test helpers (not part of the workflow API) ----
  /** Logits (B, T, V) for inputIds (B*T); positionIds (B*T): packed rows (attention within each example). */
  forwardLogits(inputIds: Int32Array, B: number, T: number, positionIds?: Int32Array): Promise<Float32Array> {
    const n = this.#n();
    return call(() => n.forwardLogits(inputIds, B, T, positionIds));
  }
  /** Mean loss and flat fp32 gradients (layout order) for one batch; does not change the weights. */
  gradients(inputIds: Int32Array, labels: Int32Array, B: number, T: number, positionIds?: Int32Array): Promise<{ loss: number; grads: Float32Array }> {
    const n = this.#n();
    return call(() => n.gradients(inputIds, labels, B, T, positionIds));
  }
  /** Flat fp32 weights in layout order. */
  getParams(): Promise<Float32Array> {
    const n = this.#n();
    return call(() => n.getParams());
  }
  /** Parameter table: HF name, shape, offset into the flat buffers. */
  layout(): { name: string; shape: number[]; offset: number; numel: number }[] {
    return this.#n().layout();
  }

  /** Frees the native model now (or when the running call finishes); later calls throw. */
  dispose(): void {
    this.#native?.dispose();
    this.#native = null;
  }
  get disposed(): boolean {
    return this.#native === null;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// checkpoint helpers

// ---------------------------------------------------------------------------------------------------------------
// pre-flight memory estimate (engine/zero.h): ZeRO stage, offload, recompute and batch against a device size

/** Per-rank bytes a run needs, before anything is allocated. Model state follows the ZeRO formulas (Ψ parameters,
 * N devices; bf16: stage 0 16Ψ, 1 4Ψ+12Ψ/N, 2 2Ψ+14Ψ/N, 3 16Ψ/N), activations the cuda backend's buffers. */
export interface MemoryEstimate {
  nParams: number; shardElems: number; worldSize: number; formula: string;
  device: { params: number; grads: number; master: number; moments: number; activations: number; buffers: number; total: number };
  /** pinned host memory per rank (optimizer offload: fp32 master, moments, gradients, bf16 staging) */
  host: number;
  /** Verdict for a device of deviceBytes (and, when given, hostBytes of host memory): advice names the setting to change. */
  fits(deviceBytes: number, hostBytes?: number): { ok: boolean; advice: string };
}

/** Estimate per-rank memory for cfg on worldSize devices (default 1). Needs no GPU; throws EngineError BAD_CONFIG. */
export function estimateMemory(cfg: FinetuneConfig, opts: { worldSize?: number } = {}): MemoryEstimate {
  const worldSize = opts.worldSize ?? 1;
  if (!Number.isInteger(worldSize) || worldSize < 1)
    throw new EngineError('BAD_CONFIG', `worldSize must be a positive integer, got ${worldSize}`);
  const o = nativeOptions(cfg, 'cuda');
  o.backend.precision = cfg.training.precision;
  o.backend.worldSize = worldSize;
  if (cfg.model.init === 'pretrained' && cfg.model.path) o.hfDir = resolve(cfg.model.path);
  const run = (dev: number, host: number): NativeMemoryEstimate =>
    callSync(() => addon().estimateMemory(o, cfg.preprocess.blockSize, dev, host));
  const r = run(0, 0);
  return {
    nParams: r.nParams, shardElems: r.shardElems, worldSize, formula: r.formula,
    device: { params: r.paramsBytes, grads: r.gradsBytes, master: r.masterBytes, moments: r.momentsBytes,
      activations: r.activationsBytes, buffers: r.buffersBytes, total: r.deviceBytes },
    host: r.hostBytes,
    fits(deviceBytes: number, hostBytes = 0) {
      if (!(deviceBytes > 0)) throw new EngineError('BAD_CONFIG', `deviceBytes must be positive, got ${deviceBytes}`);
      const v = run(deviceBytes, hostBytes);
      return { ok: v.fits === true, advice: v.advice ?? '' };
    },
  };
}

/** Checks DONE, both checksums and every size in state.bin without loading the tensors (sharded ZeRO checkpoints: the manifest and every rank file). */
export async function verifyCheckpoint(dir: string): Promise<{ ok: true; step: number } | { ok: false; reason: string }> {
  try {
    const step = await call(() => addon().verifyCheckpoint(resolve(dir)));
    return { ok: true, step };
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
}

/**
 * Hugging Face directory (config.json, model.safetensors, generation_config.json, + tokenizer.json copied) straight
 * from a checkpoint's files, single-file or sharded: no engine and no GPU; only the weights are read (4 bytes per
 * parameter of host memory), verified as they stream in. The same files as Engine.exportHuggingFace of that state.
 */
export async function exportCheckpoint(checkpointDir: string, dir: string, opts: { tokenizerJson?: string; eosId?: number; bosId?: number } = {}): Promise<void> {
  const tok = opts.tokenizerJson ? resolve(opts.tokenizerJson) : '';
  if (tok && !existsSync(tok)) throw new EngineError('IO', `tokenizer.json not found: ${tok}`);
  await call(() => addon().exportCheckpoint(resolve(checkpointDir), resolve(dir), tok, opts.eosId ?? -1, opts.bosId ?? -1));
}

/** Checkpoint directory name for a step (step-00000150). */
export function checkpointDirName(step: number): string {
  return `step-${String(step).padStart(8, '0')}`;
}

/** Committed checkpoints under `root` (dirs named step-XXXXXXXX with a DONE marker), newest first. */
export async function listCheckpoints(root: string): Promise<{ dir: string; step: number }[]> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return [];
  }
  return names
    .map((n) => /^step-(\d{8,})$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null && existsSync(join(root, m[0], 'DONE')))
    .map((m) => ({ dir: join(resolve(root), m[0]), step: Number(m[1]) }))
    .sort((a, b) => b.step - a.step);
}

/** Bytes of an NCCL unique id (NCCL_UNIQUE_ID_BYTES). */
export const NCCL_ID_BYTES = 128;

/**
 * A fresh NCCL unique id (256 hex digits), made on rank 0's worker and handed to every rank through the workflow.
 * It names a bootstrap socket of THIS process, so rank 0 must train in the process that made it. Throws EngineError
 * BAD_CONFIG on a build without the CUDA backend, DEVICE when libnccl cannot be loaded (naming where it looked).
 */
export function ncclUniqueId(): string {
  const a = addon();
  if (typeof a.ncclUniqueId !== 'function')
    throw new EngineError('BAD_CONFIG', 'this engine addon predates multi-worker training (no ncclUniqueId)', undefined, undefined, 'rebuild it: npm run build:native');
  const id = callSync(() => a.ncclUniqueId!());
  if (!new RegExp(`^[0-9a-fA-F]{${2 * NCCL_ID_BYTES}}$`).test(id)) throw new EngineError('INTERNAL', `ncclUniqueId returned ${id.length} characters, expected ${2 * NCCL_ID_BYTES} hex digits`);
  return id;
}

/** Whether the addon loads, and which backends it was built with. */
let build: ReturnType<typeof addonBuild> | undefined;
/** The engine build this process runs (cached): recorded in checkpoints, the metrics log and the report. */
export function engineBuild(): ReturnType<typeof addonBuild> {
  return (build ??= addonBuild());
}

export function engineAvailable(): { ok: boolean; backends: ('cpu' | 'cuda')[]; error?: string; blas?: string; cudaDevices?: number } {
  const r = tryLoadAddon();
  if (!r.addon) return { ok: false, backends: [], error: r.error };
  const b = r.addon.buildInfo();
  return { ok: true, backends: b.backends.split(',') as ('cpu' | 'cuda')[], blas: b.blas, cudaDevices: b.cudaDevices };
}
