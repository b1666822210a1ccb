// validateConfig: the workflow's first activity. Parses the raw input with the zod schema (a bad config fails at
// once, non-retryable, with the readable message of configs/), checks that the files it names exist, resolves the
// base model of a scheduled series, and names the run's directories by the workflow id and a config fingerprint,
// so a re-run of the same id and config resumes its checkpoints while a changed config starts clean.
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { Context, log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { STAGE_SEARCH_ATTRIBUTE, type SeriesPointer, type ValidatedRun } from '../common/index.js';
import { ConfigError, describeParallelism, fingerprintOf, parseConfig, resolvePaths, stripComments, worldSizeOf, type FinetuneConfig } from '../configs/index.js';
import { loadTokenizer, readModelShape, shapeMismatches } from '../datasets/index.js';
import { STORAGE_NON_RETRYABLE } from './lib/failures.js';
import { exists, safeName } from './lib/fsutil.js';

export type { SeriesPointer, ValidatedRun } from '../common/index.js';

export async function validateConfig(input: unknown, workflowId: string): Promise<ValidatedRun> {
  let cfg: FinetuneConfig;
  try {
    if (input === null || typeof input !== 'object' || Array.isArray(input))
      throw new ConfigError(`workflow input: expected one FinetuneConfig JSON object, got ${input === null ? 'null' : Array.isArray(input) ? 'an array' : typeof input}`);
    cfg = resolvePaths(parseConfig(stripComments(input as Record<string, unknown>), 'workflow input'), process.cwd());
  } catch (e) {
    const err = e as ConfigError;
    throw ApplicationFailure.create({ message: err.message, type: 'BAD_CONFIG', nonRetryable: true, details: [err.issues ?? []] });
  }
  await checkFiles(cfg);
  await checkWritable('storage.root', cfg.storage.root);

  const seriesDir = join(cfg.storage.root, cfg.name);
  let baseModel: string | null = null;
  let continuedFrom: string | null = null;
  if (cfg.model.continueSeries) {
    const latest = await readSeriesPointer(seriesDir);
    if (latest && (await exists(join(latest.modelDir, 'config.json')))) {
      baseModel = continuedFrom = latest.modelDir;
      cfg = { ...cfg, model: { ...cfg.model, init: 'pretrained', path: latest.modelDir } };
    } else if (cfg.model.init === 'pretrained') baseModel = cfg.model.path ?? null;
  } else if (cfg.model.init === 'pretrained') baseModel = cfg.model.path ?? null;
  if (cfg.model.init === 'pretrained' && cfg.model.path) await checkPretrained(cfg, cfg.model.path);

  // The GPU layout (devices, nodes, ZeRO stage, where the optimizer runs) does not change the math: gradAccumSteps
  // counts micro-batches over all GPUs, so a run may resume on another number of GPUs from the same checkpoints
  // (re-sharded on load). Only the delayed update (weights one step late) changes the weights.
  const fingerprint = fingerprintOf('finetune-run/v2', {
    data: cfg.data, preprocess: { ...cfg.preprocess, workers: 0 }, tokenizer: cfg.tokenizer, model: cfg.model,
    training: cfg.training, parallelism: { delayedUpdate: cfg.parallelism.offload.delayedUpdate },
  });
  const runDir = join(seriesDir, `${safeName(workflowId)}-${fingerprint.slice(0, 10)}`);
  const m = cfg.model;
  const t = cfg.training;
  const modelSummary = baseModel
    ? `${await describePretrained(baseModel)}, from ${baseModel}`
    : `${m.family} ${m.nLayer}L×${m.nEmbd} (${m.nHead} heads, vocab ${m.vocabSize}), ${m.init}`;
  return {
    cfg, fingerprint, runDir, seriesDir, baseModel, continuedFrom,
    checkpointRoot: join(runDir, 'checkpoints'),
    modelDir: join(runDir, 'model'),
    memo: {
      name: cfg.name,
      model: modelSummary,
      data: `${describeSource(cfg.data.train)}, ${cfg.preprocess.mode} ×${cfg.preprocess.blockSize} tokens`,
      training: `${t.maxSteps > 0 ? `${t.maxSteps} steps` : `${t.epochs} epochs`}, batch ${t.microBatchSize}×${t.gradAccumSteps}, lr ${t.learningRate} ${t.schedule}, ${t.backend}`,
      checkpoints: `every ${cfg.checkpoint.everySteps} steps / ${cfg.checkpoint.everyMinutes} min, keep ${cfg.checkpoint.keepLast}`,
      parallelism: describeParallelism(cfg),
      ...(await memoryMemo(cfg)),
      fingerprint: fingerprint.slice(0, 16),
    },
    stageSearchAttribute: await stageAttributeRegistered(),
  };
}

// IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD (a type-only import: @temporalio/proto is CommonJS without named exports).
const KEYWORD: temporal.api.enums.v1.IndexedValueType = 2;

/**
 * Whether the run's namespace has FinetuneStage registered as a Keyword, asked through the worker's client. False
 * without one (a direct call, a mock activity environment) and when the server does not say (no operator permission).
 */
async function stageAttributeRegistered(): Promise<boolean> {
  let client, namespace;
  try {
    const ctx = Context.current();
    client = ctx.client;
    namespace = ctx.info.workflowNamespace;
  } catch {
    return false;
  }
  try {
    const { customAttributes } = await client.connection.operatorService.listSearchAttributes({ namespace });
    return customAttributes?.[STAGE_SEARCH_ATTRIBUTE.name] === KEYWORD;
  } catch (e) {
    log.warn(`cannot list the search attributes of namespace ${namespace} (${(e as Error).message}): the run will not set ${STAGE_SEARCH_ATTRIBUTE.name}`);
    return false;
  }
}

/**
 * The engine's pre-flight estimate for the memo (`finetune status` shows it). The CPU queue's workers may have no
 * engine addon: then the memo simply has no memory line, and the GPU worker's engine checks it before allocating.
 */
async function memoryMemo(cfg: FinetuneConfig): Promise<{ memory?: string }> {
  try {
    const { estimateMemory } = await import('../native/index.js');
    const e = estimateMemory(cfg, { worldSize: worldSizeOf(cfg) });
    const GiB = 2 ** 30, d = e.device;
    const states = d.params + d.grads + d.master + d.moments;
    return { memory: `~${(d.total / GiB).toFixed(2)} GiB per GPU (model states ${(states / GiB).toFixed(2)}, activations ${(d.activations / GiB).toFixed(2)})${e.host ? `, ${(e.host / GiB).toFixed(1)} GiB pinned host per rank` : ''}` };
  } catch {
    return {};
  }
}

/** A pretrained model's shape from its own config.json (cfg.model's shape fields do not apply to it). */
async function describePretrained(dir: string): Promise<string> {
  try {
    const c = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    const layers = c.n_layer ?? c.num_hidden_layers;
    const width = c.n_embd ?? c.hidden_size;
    const heads = c.n_head ?? c.num_attention_heads;
    return `${String(c.model_type ?? 'unknown')} ${String(layers)}L×${String(width)} (${String(heads)} heads, vocab ${String(c.vocab_size)})`;
  } catch {
    return 'pretrained (config.json unreadable; the engine will report why)';
  }
}

function describeSource(s: FinetuneConfig['data']['train']): string {
  if (s.type === 'builtin') return `builtin:${s.name}`;
  const p = Array.isArray(s.path) ? `${s.path[0]}${s.path.length > 1 ? ` +${s.path.length - 1}` : ''}` : s.path;
  return `${s.type}:${p}`;
}

/** Files a config names must exist now, not an hour later in a retry loop. */
async function checkFiles(cfg: FinetuneConfig): Promise<void> {
  const missing: string[] = [];
  const check = async (field: string, p: string) => {
    if (!/[*?[]/.test(p) && !(await exists(p))) missing.push(`  ${field}: no such file or directory: ${p}`);
  };
  for (const [field, src] of [['data.train', cfg.data.train], ['data.validation', cfg.data.validation]] as const) {
    if (!src || !('path' in src)) continue;
    const paths = Array.isArray(src.path) ? src.path : [src.path];
    for (const p of paths) await check(`${field}.path`, p);
  }
  if (cfg.tokenizer.type === 'huggingface') {
    const p = cfg.tokenizer.path;
    const file = (await isDirectory(p)) ? join(p, 'tokenizer.json') : p;
    if (!(await exists(file)))
      missing.push(
        p === cfg.model.path
          ? `  tokenizer: the model folder ${p} has no tokenizer.json (the tokenizer defaults to the model's own); set tokenizer, e.g. {"type": "gpt2"} for GPT-2's`
          : `  tokenizer.path: no tokenizer.json at ${p}`,
      );
  }
  if (cfg.model.init === 'pretrained' && cfg.model.path) await check('model.path', join(cfg.model.path, 'config.json'));
  if (missing.length)
    throw ApplicationFailure.create({ message: `invalid workflow input:\n${missing.join('\n')}`, type: 'BAD_CONFIG', nonRetryable: true });
}

/**
 * storage.root must be a directory this worker can write (checkpoints, prepared data, the model and report go
 * there). Checked now by creating it and a probe file in it, so a read-only or forbidden root fails at once with
 * its real cause (EROFS, EACCES, EPERM, ENOTDIR: non-retryable) instead of in a retry loop an hour later.
 */
export async function checkWritable(field: string, dir: string): Promise<void> {
  const probe = join(dir, `.finetune-write-probe-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(probe, '');
    await rm(probe, { force: true });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const code = err.code ?? 'EIO';
    const advice = STORAGE_NON_RETRYABLE[code];
    throw ApplicationFailure.create({
      message: `${field}: ${dir} is not writable: ${err.message}${advice ? `. What to do: ${advice}` : ''}`,
      type: code,
      nonRetryable: code in STORAGE_NON_RETRYABLE,
      cause: err,
    });
  }
}

async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

/**
 * A pretrained model must fit its data: every token id below its vocab_size, blockSize within its context. Caught
 * here, with the numbers, instead of at the first training step.
 */
async function checkPretrained(cfg: FinetuneConfig, dir: string): Promise<void> {
  let problems: string[];
  try {
    const tok = await loadTokenizer(cfg.tokenizer);
    problems = shapeMismatches(readModelShape(dir), dir, tok.vocabSize, tok.name, cfg.preprocess.blockSize);
  } catch (e) {
    if ((e as { code?: string }).code !== 'BAD_INPUT') throw e;
    problems = [(e as Error).message];
  }
  if (problems.length)
    throw ApplicationFailure.create({ message: `invalid workflow input:\n${problems.map((p) => `  ${p}`).join('\n')}`, type: 'BAD_CONFIG', nonRetryable: true });
}

export async function readSeriesPointer(seriesDir: string): Promise<SeriesPointer | null> {
  try {
    const p = JSON.parse(await readFile(join(seriesDir, 'latest.json'), 'utf8')) as SeriesPointer;
    if (typeof p.modelDir !== 'string') return null;
    return { ...p, modelDir: isAbsolute(p.modelDir) ? p.modelDir : resolve(seriesDir, p.modelDir) };
  } catch {
    return null;
  }
}
