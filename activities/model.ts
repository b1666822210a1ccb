// exportModel, evaluateModel, generateSamples: the stages after training, each from one committed checkpoint.
// They reuse the worker's live engine when it equals that checkpoint, else load it (falling back past a corrupt
// one and saying so); export needs no engine for that (it reads the checkpoint's weights). Export writes privately
// and renames into place, so a model directory is whole or absent.
import { Context } from '@temporalio/activity';
import { randomBytes } from 'node:crypto';
import { readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { FinetuneConfig } from '../configs/index.js';
import { addedTokenText, BUILTIN_CHAT_TEMPLATES, carryModelFiles, loadTokenizer, tokenizerFolder, type LoadedTokenizer } from '../datasets/index.js';
import type { Engine } from '../native/index.js';
import { native } from './lib/native.js';
import type { CheckpointRef, EvalMetrics, Sample } from '../common/index.js';
import { findResumePoint } from './checkpoints.js';
import type { EngineCache } from './engines.js';
import { loadSplit } from './lib/data.js';
import { classify } from './lib/failures.js';
import { exists, writeJsonAtomic } from './lib/fsutil.js';

export interface ModelDeps {
  engines: EngineCache;
  backend?: 'cpu' | 'cuda';
}

/** Which checkpoint a stage actually used, and any it had to skip. */
export interface UsedCheckpoint {
  checkpoint: CheckpointRef;
  skipped: { dir: string; reason: string }[];
}

const EXPORT_MARKER = 'finetune-export.json';

/** Run `fn` on an engine equal to `checkpoint`, heartbeating meanwhile; the engine goes back to the cache. */
async function withEngine<T>(
  deps: ModelDeps,
  cfg: FinetuneConfig,
  checkpoint: CheckpointRef,
  fn: (e: Engine, used: UsedCheckpoint) => Promise<T>,
  /** false for the run's last GPU stage: free the device memory instead of keeping an idle model resident. */
  keep = true,
): Promise<T> {
  const ctx = Context.current();
  const root = dirname(checkpoint.dir);
  const keepalive = setInterval(() => ctx.heartbeat({ kind: 'model', checkpoint }), Math.max(200, (ctx.info.heartbeatTimeoutMs ?? 60_000) / 4));
  let engine: Engine | null = null;
  try {
    const { Engine } = await native();
    ctx.heartbeat({ kind: 'model', checkpoint });
    let used: UsedCheckpoint = { checkpoint, skipped: [] };
    const cached = deps.engines.take(root, checkpoint, { forTraining: false });
    if (cached) engine = cached.engine;
    else {
      deps.engines.evict();
      try {
        engine = await Engine.fromCheckpoint(checkpoint.dir, cfg, { backend: deps.backend });
      } catch (e) {
        if ((e as { code?: string }).code !== 'BAD_CHECKPOINT') throw e;
        const point = await findResumePoint(root, checkpoint.step);
        if (!point.checkpoint) throw e;
        used = { checkpoint: point.checkpoint, skipped: [{ dir: checkpoint.dir, reason: (e as Error).message }, ...point.skipped] };
        ctx.log.warn(`checkpoint ${checkpoint.dir} is unusable (${(e as Error).message}); using ${point.checkpoint.dir}`);
        engine = await Engine.fromCheckpoint(point.checkpoint.dir, cfg, { backend: deps.backend });
      }
    }
    const out = await fn(engine, used);
    if (keep) {
      deps.engines.put(root, used.checkpoint, engine, cached?.dataDir ?? null, false);
      engine = null;
    }
    return out;
  } finally {
    clearInterval(keepalive);
    engine?.dispose();
  }
}

/**
 * Export `checkpoint` as a Hugging Face directory. From the worker's live engine when it equals that checkpoint
 * (no reload), else straight from the checkpoint's files (exportCheckpoint: no engine, no GPU, 4 bytes per
 * parameter of host memory, so a model sharded with ZeRO-3 over GPUs that it does not fit one of exports too),
 * falling back past a corrupt checkpoint as the other stages do.
 */
export async function exportModel(deps: ModelDeps, a: { cfg: FinetuneConfig; checkpoint: CheckpointRef; modelDir: string }) {
  const marker = join(a.modelDir, EXPORT_MARKER);
  try {
    // Look before you work: an earlier attempt may have exported this very checkpoint.
    if (await exists(marker)) {
      const m = JSON.parse(await readFile(marker, 'utf8')) as { checkpoint: CheckpointRef };
      if (m.checkpoint?.dir === a.checkpoint.dir && m.checkpoint.step === a.checkpoint.step) return { modelDir: a.modelDir, step: a.checkpoint.step, reused: true };
    }
    const tok = await loadTokenizer(a.cfg.tokenizer);
    const opts = { tokenizerJson: tok.tokenizerJsonPath, eosId: tok.eosId, ...(tok.bosId === undefined ? {} : { bosId: tok.bosId }) };
    const root = dirname(a.checkpoint.dir);
    const live = deps.engines.peek(root);
    if (live && live.dir === a.checkpoint.dir && live.step === a.checkpoint.step)
      return await withEngine(deps, a.cfg, a.checkpoint, (engine, used) => publishExport(a, used, (tmp) => engine.exportHuggingFace(tmp, opts)));
    const ctx = Context.current();
    const keepalive = setInterval(() => ctx.heartbeat({ kind: 'export', checkpoint: a.checkpoint }), Math.max(200, (ctx.info.heartbeatTimeoutMs ?? 60_000) / 4));
    try {
      const { exportCheckpoint } = await native();
      let used: UsedCheckpoint = { checkpoint: a.checkpoint, skipped: [] };
      try {
        return await publishExport(a, used, (tmp) => exportCheckpoint(used.checkpoint.dir, tmp, opts));
      } catch (e) {
        if ((e as { code?: string }).code !== 'BAD_CHECKPOINT') throw e;
        const point = await findResumePoint(root, a.checkpoint.step);
        if (!point.checkpoint) throw e;
        ctx.log.warn(`checkpoint ${a.checkpoint.dir} is unusable (${(e as Error).message}); exporting ${point.checkpoint.dir}`);
        used = { checkpoint: point.checkpoint, skipped: point.skipped };
        return await publishExport(a, used, (tmp) => exportCheckpoint(used.checkpoint.dir, tmp, opts));
      }
    } finally {
      clearInterval(keepalive);
    }
  } catch (e) {
    throw classify(e, `export ${a.checkpoint.dir}`);
  }
}

/**
 * What an export carries besides the weights (datasets/model-folder.ts carryModelFiles): the tokenizer's own
 * files (special tokens, chat template), the built-in chat template a chat run trained with when the tokenizer has
 * none, and the source model's generation_config.json (a pretrained model, or the series model it continues).
 */
export function carryFor(cfg: FinetuneConfig, tok: LoadedTokenizer) {
  const p = cfg.preprocess;
  return {
    ...(cfg.tokenizer.type === 'huggingface' ? { tokenizerFolder: tokenizerFolder(cfg.tokenizer.path) } : {}),
    specialTokens: {
      eos: addedTokenText(tok, tok.eosId) ?? '',
      ...(tok.bosId === undefined ? {} : { bos: addedTokenText(tok, tok.bosId) }),
      ...(tok.padId === tok.eosId ? {} : { pad: addedTokenText(tok, tok.padId) }),
    },
    ...(p.mode === 'chat' && p.chat.template !== 'model' ? { chatTemplate: BUILTIN_CHAT_TEMPLATES[p.chat.template] } : {}),
    ...(cfg.model.init === 'pretrained' && cfg.model.path ? { sourceModel: cfg.model.path } : {}),
  };
}

/** Write the export privately (`write` into a temp dir, plus its marker), then swap it in for any older one. */
async function publishExport(a: { cfg: FinetuneConfig; modelDir: string }, used: UsedCheckpoint, write: (tmp: string) => Promise<void>) {
  const tmp = `${a.modelDir}.tmp-${randomBytes(4).toString('hex')}`;
  try {
    await write(tmp);
    carryModelFiles(tmp, carryFor(a.cfg, await loadTokenizer(a.cfg.tokenizer)));
    await writeJsonAtomic(join(tmp, EXPORT_MARKER), { checkpoint: used.checkpoint, skipped: used.skipped, name: a.cfg.name, exportedAt: new Date().toISOString() });
    // Replace any older export: move it aside, move the new one in, then delete the old one.
    const old = `${a.modelDir}.old-${randomBytes(4).toString('hex')}`;
    const hadOld = await exists(a.modelDir);
    if (hadOld) await rename(a.modelDir, old);
    await rename(tmp, a.modelDir);
    if (hadOld) await rm(old, { recursive: true, force: true });
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  return { modelDir: a.modelDir, step: used.checkpoint.step, reused: false };
}

export async function evaluateModel(deps: ModelDeps, a: { cfg: FinetuneConfig; checkpoint: CheckpointRef; dataDir: string }): Promise<EvalMetrics | null> {
  const ctx = Context.current();
  try {
    const shards = await loadSplit(a.dataDir, 'validation', ctx.cancellationSignal);
    if (!shards.some((s) => s.nSeq > 0)) return null; // no validation split (data.validationFraction 0 and no data.validation)
    return await withEngine(deps, a.cfg, a.checkpoint, (engine) =>
      engine.evaluate(shards, { maxBatches: a.cfg.evaluation.maxBatches || undefined, batchSize: a.cfg.evaluation.batchSize, signal: ctx.cancellationSignal }),
    );
  } catch (e) {
    throw classify(e, `evaluate ${a.checkpoint.dir}`);
  }
}

export async function generateSamples(deps: ModelDeps, a: { cfg: FinetuneConfig; checkpoint: CheckpointRef }): Promise<Sample[]> {
  const g = a.cfg.generation;
  if (g.prompts.length === 0 || g.maxNewTokens === 0) return [];
  try {
    const tok = await loadTokenizer(a.cfg.tokenizer);
    const outs = await withEngine(deps, a.cfg, a.checkpoint, (engine) => {
      // The model's own position table (a pretrained model's config.json, not cfg.model) bounds prompt + continuation:
      // keep the prompt's tail, and the BOS a Llama-style tokenizer puts before every example in training.
      const room = Math.max(1, engine.info.nPositions - g.maxNewTokens);
      const prompts = g.prompts.map((p) => {
        const ids = tok.encode(p);
        if (tok.bosId === undefined) return ids.slice(Math.max(0, ids.length - room));
        return [tok.bosId, ...ids.slice(Math.max(0, ids.length - (room - 1)))].slice(0, room);
      });
      return engine.generate(prompts, { maxNewTokens: g.maxNewTokens, temperature: g.temperature, topK: g.topK, topP: g.topP, seed: g.seed, eosId: tok.eosId });
    }, false);
    // The engine stops at EOS and returns it; the text ends before it.
    return g.prompts.map((prompt, i) => {
      const ids = outs[i] ?? [];
      return { prompt, text: tok.decode(ids[ids.length - 1] === tok.eosId ? ids.slice(0, -1) : ids) };
    });
  } catch (e) {
    throw classify(e, `generate from ${a.checkpoint.dir}`);
  }
}
