// trainSegment: train from the last committed checkpoint to `toStep`, committing checkpoints every
// cfg.checkpoint.everySteps steps / everyMinutes minutes and at the end. The loop reads like nanoGPT's train.py:
// find where to start → load data → step in small groups (each group a heartbeat and cancellation point) →
// checkpoint → prune. A retry after a dead worker resumes from the newest checkpoint that verifies (on whichever
// GPU worker picks it up); a cancelled segment ("checkpoint now", "stop", workflow cancellation, worker
// shutdown) commits a checkpoint before it reports the cancellation.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Context } from '@temporalio/activity';
import { CancelledFailure } from '@temporalio/common';
import type { FinetuneConfig } from '../configs/index.js';
import type { Engine } from '../native/index.js';
import { native } from './lib/native.js';
import type { CheckpointRef, EngineBuild, ResumeRecord, TrainProgress } from '../workflows/messages.js';
import { checkpointDir, commitCheckpoint, pruneCheckpoints, quarantine } from './checkpoints.js';
import type { EngineCache } from './engines.js';
import { loadSplit } from './lib/data.js';
import { classify } from './lib/failures.js';
import { previousDetails, TrainHeartbeat } from './lib/heartbeat.js';
import { LossLog, nextGroup, progressSender } from './lib/loop.js';
import { appendMetrics, startMetrics, stepRecords } from './lib/metrics.js';

export interface TrainSegmentInput {
  cfg: FinetuneConfig;
  runDir: string;
  checkpointRoot: string;
  dataDir: string;
  fromStep: number;
  toStep: number;
  totalSteps: number;
  /** The workflow's last committed checkpoint (a hint: the disk is the authority). */
  resumeFrom: CheckpointRef | null;
}

export interface SegmentResult {
  step: number;
  checkpoint: CheckpointRef;
  firstLoss: number | null;
  lastLoss: number | null;
  tokens: number;
  tokensPerSec: number;
  /** Set when this segment loaded its start from disk (retry, another worker, fallback), null when it continued in memory. */
  resume: ResumeRecord | null;
}

export interface TrainDeps {
  engines: EngineCache;
  backend?: 'cpu' | 'cuda';
  /** Sends live progress to the workflow (an internal signal); absent in unit tests. */
  signalProgress?: (workflowId: string, p: TrainProgress) => Promise<void>;
  progressIntervalMs: number;
  /** The last failure of this activity's previous attempt, as the server recorded it (the worker asks it); optional. */
  lastFailure?: (workflowId: string, activityId: string) => Promise<string | null>;
}

/** The engine build recorded in a checkpoint's meta.json (`extra.engine`), or null for checkpoints without it. */
export async function checkpointBuild(dir: string): Promise<EngineBuild | null> {
  for (const f of ['meta.json', 'manifest.json']) {
    try {
      const m = JSON.parse(await readFile(join(dir, f), 'utf8')) as { extra?: { engine?: EngineBuild } };
      return m.extra?.engine?.id ? m.extra.engine : null;
    } catch {
      /* try the next one */
    }
  }
  return null;
}

/** Why an attempt loaded its state from disk instead of continuing the worker's live model. */
async function resumeCause(deps: TrainDeps, input: TrainSegmentInput, attempt: number, workflowId: string, activityId: string, lastStep: number | null): Promise<string> {
  if (attempt > 1) {
    let failure: string | null = null;
    try {
      failure = (await Promise.race([deps.lastFailure?.(workflowId, activityId) ?? null, new Promise<null>((r) => setTimeout(() => r(null), 5000).unref())])) ?? null;
    } catch {
      /* advisory only */
    }
    return `retry (attempt ${attempt}) after attempt ${attempt - 1} ended${lastStep !== null ? ` at step ${lastStep}` : ''}: ${failure ?? 'it failed, timed out or its worker was lost'}`;
  }
  if (!input.resumeFrom) return 'an earlier run of this workflow id left committed checkpoints (it was cancelled, failed or terminated)';
  return "the model was not in this worker's memory (another worker took the segment, or the worker restarted)";
}

/** A model to train: from the cache, from the newest good checkpoint, or fresh from the config. */
async function startingPoint(deps: TrainDeps, input: TrainSegmentInput, attempt: number) {
  const { cfg, checkpointRoot: root } = input;
  const { Engine, listCheckpoints } = await native();
  // Fast path: the cached engine equals the newest committed checkpoint, so it needs no loading or verifying.
  const newest = (await listCheckpoints(root)).find((c) => c.step <= input.toStep) ?? null;
  const cached = newest && deps.engines.peek(root)?.dir === newest.dir ? deps.engines.take(root, newest, { forTraining: true }) : null;
  if (cached && newest) return { engine: cached.engine, dataDir: cached.dataDir, start: newest as CheckpointRef, resume: null };
  deps.engines.evict();
  const skipped: ResumeRecord['skipped'] = [];
  // Newest first. Loading checks DONE, every size and both checksums as the state streams in, so a corrupt
  // checkpoint is found here without a separate verifying pass over it first (a 6B model's state is 70 GB).
  for (const c of await listCheckpoints(root)) {
    if (c.step > input.toStep) continue;
    try {
      const engine = await Engine.fromCheckpoint(c.dir, cfg, { backend: deps.backend });
      const start = { dir: c.dir, step: engine.step };
      return { engine, dataDir: null, start, resume: { atStep: start.step, attempt, from: start, skipped } };
    } catch (e) {
      if ((e as { code?: string }).code !== 'BAD_CHECKPOINT') throw e;
      skipped.push({ dir: c.dir, reason: (e as Error).message });
      await quarantine(c.dir);
    }
  }
  if (input.fromStep > 0) skipped.push({ dir: root, reason: `no loadable checkpoint at or below step ${input.toStep}: training restarts from step 0` });
  const engine = await Engine.create(cfg, { backend: deps.backend });
  return { engine, dataDir: null, start: null, resume: skipped.length ? { atStep: 0, attempt, from: null, skipped } : null };
}

export async function trainSegment(deps: TrainDeps, input: TrainSegmentInput): Promise<SegmentResult> {
  const ctx = Context.current();
  const { cfg, toStep, totalSteps, checkpointRoot } = input;
  const signal = ctx.cancellationSignal;
  const prev = previousDetails(TrainHeartbeat, ctx.info.heartbeatDetails);
  const workflowId = ctx.info.workflowExecution?.workflowId ?? '';
  let committed: CheckpointRef | null = prev?.committed ?? input.resumeFrom;
  let step = committed?.step ?? input.fromStep;
  let loss: number | null = null;
  const beat = () => ctx.heartbeat({ kind: 'train', committed, step, loss } satisfies TrainHeartbeat);
  // Loading and saving run off the JS thread but can take longer than a heartbeat timeout on big models.
  const keepalive = setInterval(beat, Math.max(200, (ctx.info.heartbeatTimeoutMs ?? 60_000) / 4));
  let engine: Engine | null = null;
  try {
    beat();
    const s = await startingPoint(deps, input, ctx.info.attempt);
    engine = s.engine;
    committed = s.start;
    step = engine.step;
    // A re-run of the workflow id whose first segment finds this worker's live model at a committed step.
    const resume: ResumeRecord | null = s.resume ?? (step !== input.fromStep && s.start ? { atStep: step, attempt: ctx.info.attempt, from: s.start, skipped: [] } : null);
    const build = (await native()).engineBuild();
    if (resume) {
      resume.cause = await resumeCause(deps, input, ctx.info.attempt, workflowId, ctx.info.activityId, prev?.step ?? null);
      const written = resume.from ? await checkpointBuild(resume.from.dir) : null;
      if (written && written.id !== build.id) {
        resume.checkpointBuild = written;
        ctx.log.warn(`checkpoint ${resume.from!.dir} was written by engine build ${written.id}; resuming on ${build.id}: the result may differ from an uninterrupted run`);
      }
      ctx.log.warn(`resuming at step ${step}: ${resume.cause}` + resume.skipped.map((k) => `; skipped ${k.dir}: ${k.reason}`).join(''));
    }
    await startMetrics(input.runDir, { kind: 'start', step, attempt: ctx.info.attempt, time: new Date().toISOString(), workflowId, resume, build }, s.resume !== null);
    // Where each attempt started and ended is what an exact-resume failure needs to be diagnosed from the logs.
    ctx.log.info(`train ${input.fromStep}→${toStep} attempt ${ctx.info.attempt}: starts at step ${step} from ${s.resume ? (s.start?.dir ?? 'the initial model') : s.start ? `the cached engine (= ${s.start.dir})` : 'the initial model'}`);
    let dataDir = s.dataDir;
    if (dataDir !== input.dataDir) {
      engine.setTrainData(await loadSplit(input.dataDir, 'train', signal));
      dataDir = input.dataDir;
    }
    beat();

    let lastSave = Date.now();
    const save = async () => {
      const at = step;
      const dir = checkpointDir(checkpointRoot, at);
      // An overlapping attempt (or the attempt before a retry) may have committed this very step already, or be
      // committing it right now: the engine's commit is atomic (first commit wins), and commitCheckpoint rewrites a
      // committed step that does not verify. `extra` names nothing attempt-specific (the engine build is the same for
      // attempts on one build): both write the same bytes.
      await commitCheckpoint(engine!, dir, at, { workflowId, totalSteps, engine: build }, (m) => ctx.log.warn(m));
      committed = { dir, step: at };
      beat();
      await pruneCheckpoints(checkpointRoot, cfg.checkpoint.keepLast);
      lastSave = Date.now();
    };

    const everyMs = cfg.checkpoint.everyMinutes * 60_000;
    const losses = new LossLog(cfg.training.divergenceLoss);
    let tokens = 0;
    const t0 = Date.now();
    const perStep = new Map<number, { lr: number; gradNorm: number }>();
    const sendProgress = progressSender({
      workflowId, totalSteps, startStep: step, intervalMs: deps.progressIntervalMs, send: deps.signalProgress,
      committed: () => committed, onStep: (at, l) => ((step = at), (loss = l), beat()), log: (m) => ctx.log.debug(m),
    });
    const onProgress = (p: { step: number; loss: number; lr: number; gradNorm: number; tokensPerSec: number }) => {
      perStep.set(p.step, { lr: p.lr, gradNorm: p.gradNorm });
      sendProgress(p);
    };
    while (step < toStep && !signal.aborted) {
      const { end, checkpointAt } = nextGroup(cfg, step, toStep);
      const from = step;
      const g0 = Date.now();
      perStep.clear();
      const r = await engine.train(end - step, { totalSteps, signal, onProgress });
      step = r.step;
      tokens += r.tokens;
      losses.add(step, r.losses);
      // Logged before any checkpoint that covers these steps is committed (metrics.ts: crash safety).
      await appendMetrics(input.runDir, stepRecords(from, r, perStep, Date.now() - g0));
      loss = losses.last;
      if (r.aborted) break;
      if ((step === checkpointAt && step < toStep) || (everyMs > 0 && Date.now() - lastSave >= everyMs)) await save();
    }
    // The end of the segment, or a cancellation: commit what exists before returning or reporting it.
    if (committed?.step !== step || !committed) await save();
    const elapsed = (Date.now() - t0) / 1000;
    ctx.log.info(`train ${input.fromStep}→${toStep} attempt ${ctx.info.attempt}: ends at step ${step}${signal.aborted ? ' (cancelled)' : ''}, committed ${committed!.dir}`);
    deps.engines.put(checkpointRoot, committed!, engine, dataDir, true);
    engine = null; // owned by the cache now
    if (signal.aborted) throw new CancelledFailure(`training stopped at step ${step}; checkpoint committed at ${committed!.dir}`);
    return {
      step, checkpoint: committed!, firstLoss: losses.first, lastLoss: loss, tokens,
      tokensPerSec: elapsed > 0 ? Math.round(tokens / elapsed) : 0, resume: s.resume,
    };
  } catch (e) {
    throw classify(e, `train steps ${input.fromStep}→${toStep}`);
  } finally {
    clearInterval(keepalive);
    engine?.dispose();
  }
}
