// The training activity: train a segment fromStep → toStep, committing checkpoints every checkpoint.everySteps
// steps and at the end. The loop reads like nanoGPT's train.py: find where to start → load data → step in small
// groups (each group a heartbeat and cancellation point) → checkpoint → prune.
//
// One skeleton for every layout. A worker trains either
//   - alone (`trainSegment`, on the shared GPU queue): Temporal retries it on any GPU worker, and it resumes from
//     the newest checkpoint on disk that verifies; it may also checkpoint every checkpoint.everyMinutes, and a
//     cancelled segment ("checkpoint now", "stop", workflow cancellation, worker shutdown) commits a checkpoint
//     before it reports the cancellation; or
//   - as one rank of a group (`trainRank`, on its own queue, after the workflow's rendezvous): never retried alone,
//     it starts exactly at the checkpoint the workflow chose, saves collectively at step-based points only (every
//     rank must decide to save at the same step), and a cancelled rank reports without saving (a sharded checkpoint
//     needs every rank; the workflow restarts the whole group from the last committed one).
// Both keep the live model in the worker's engine cache between segments (activities/engines.ts), heartbeat the
// last committed checkpoint, check every loss for divergence, send live progress, and append every step to the
// run's metrics log (the one writer: the lone worker, or rank 0) before a checkpoint covering it commits.
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Context } from '@temporalio/activity';
import { CancelledFailure } from '@temporalio/common';
import type { CheckpointRef, EngineBuild, ResumeRecord, SegmentResult, TrainProgress, TrainRankInput, TrainSegmentInput } from '../common/index.js';
import type { Engine } from '../native/index.js';
import { checkpointDir, commitCheckpoint, pruneCheckpoints, quarantine } from './checkpoints.js';
import type { EngineCache, Start } from './engines.js';
import { loadSplit } from './lib/data.js';
import { classify } from './lib/failures.js';
import { previousDetails, TrainHeartbeat } from './lib/heartbeat.js';
import { LossLog, nextGroup, progressSender } from './lib/loop.js';
import { appendMetrics, startMetrics, stepRecords } from './lib/metrics.js';
import { native } from './lib/native.js';
import { boundedByCancel, groupKey, joinGroup } from './ranks.js';

export type { SegmentResult, TrainRankInput, TrainSegmentInput } from '../common/index.js';

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

/** Why an attempt of a lone worker loaded its state from disk instead of continuing the worker's live model. */
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

/** A lone worker's model: from the cache, from the newest good checkpoint, or fresh from the config. */
async function startAlone(deps: TrainDeps, input: TrainSegmentInput, attempt: number): Promise<Start> {
  const { cfg, checkpointRoot: root } = input;
  const { Engine, listCheckpoints } = await native();
  // Fast path: the cached engine equals the newest committed checkpoint, so it needs no loading or verifying.
  const newest = (await listCheckpoints(root)).find((c) => c.step <= input.toStep) ?? null;
  const cached = newest && deps.engines.peek(root)?.dir === newest.dir ? deps.engines.take(root, newest, { forTraining: true }) : null;
  if (cached && newest) return { engine: cached.engine, dataDir: cached.dataDir, start: newest, resume: null, fromDisk: false };
  deps.engines.evict();
  const skipped: ResumeRecord['skipped'] = [];
  // Newest first. Loading checks DONE, every size and both checksums as the state streams in, so a corrupt
  // checkpoint is found here without a separate verifying pass over it first (a 6B model's state is 70 GB).
  for (const c of await listCheckpoints(root)) {
    if (c.step > input.toStep) continue;
    try {
      const engine = await Engine.fromCheckpoint(c.dir, cfg, { backend: deps.backend });
      const start = { dir: c.dir, step: engine.step };
      return { engine, dataDir: null, start, resume: { atStep: start.step, attempt, from: start, skipped }, fromDisk: true };
    } catch (e) {
      if ((e as { code?: string }).code !== 'BAD_CHECKPOINT') throw e;
      skipped.push({ dir: c.dir, reason: (e as Error).message });
      await quarantine(c.dir);
    }
  }
  if (input.fromStep > 0) skipped.push({ dir: root, reason: `no loadable checkpoint at or below step ${input.toStep}: training restarts from step 0` });
  const engine = await Engine.create(cfg, { backend: deps.backend });
  const resume = skipped.length ? { atStep: 0, attempt, from: null, skipped } : null;
  return { engine, dataDir: null, start: null, resume, fromDisk: resume !== null };
}

/** Train one segment, alone (`input` without `group`) or as one rank of a group. */
export async function train(deps: TrainDeps, input: TrainSegmentInput | TrainRankInput): Promise<SegmentResult> {
  const ctx = Context.current();
  const { cfg, toStep, totalSteps, checkpointRoot } = input;
  const member = 'group' in input && input.group ? input : null;
  /** The lone worker, or rank 0: keeps the metrics log, sends progress, prunes old checkpoints. */
  const lead = !member || member.rank === 0;
  const runDir = input.runDir ?? dirname(checkpointRoot);
  const signal = ctx.cancellationSignal;
  const workflowId = ctx.info.workflowExecution?.workflowId ?? '';
  const where = member
    ? `rank ${member.rank}/${member.nodes} (generation ${member.group.generation}) train steps ${input.fromStep}→${toStep}`
    : `train steps ${input.fromStep}→${toStep}`;
  // A retry of a lone worker starts from what its previous attempt had committed (the disk stays the authority).
  const prev = member ? null : previousDetails(TrainHeartbeat, ctx.info.heartbeatDetails);
  let committed: CheckpointRef | null = prev?.committed ?? input.resumeFrom;
  let step = committed?.step ?? input.fromStep;
  let loss: number | null = null;
  const beat = () => ctx.heartbeat({ kind: 'train', committed, step, loss, ...(member ? { rank: member.rank } : {}) });
  // Loading and saving run off the JS thread but can take longer than a heartbeat timeout on big models.
  const keepalive = setInterval(beat, Math.max(200, (ctx.info.heartbeatTimeoutMs ?? 60_000) / 4));
  let engine: Engine | null = null;
  try {
    beat();
    const build = (await native()).engineBuild();
    const s = member ? await joinGroup(deps, member, where) : await startAlone(deps, input, ctx.info.attempt);
    engine = s.engine;
    committed = s.start;
    step = engine.step;
    // What the metrics log records about this start. A lone worker also records a re-run of the workflow id whose
    // first segment finds this worker's live model at a committed step.
    const resume: ResumeRecord | null = s.resume ?? (!member && step !== input.fromStep && s.start ? { atStep: step, attempt: ctx.info.attempt, from: s.start, skipped: [] } : null);
    if (resume && !member) {
      resume.cause = await resumeCause(deps, input, ctx.info.attempt, workflowId, ctx.info.activityId, prev?.step ?? null);
      const written = resume.from ? await checkpointBuild(resume.from.dir) : null;
      if (written && written.id !== build.id) {
        resume.checkpointBuild = written;
        ctx.log.warn(`checkpoint ${resume.from!.dir} was written by engine build ${written.id}; resuming on ${build.id}: the result may differ from an uninterrupted run`);
      }
      ctx.log.warn(`resuming at step ${step}: ${resume.cause}` + resume.skipped.map((k) => `; skipped ${k.dir}: ${k.reason}`).join(''));
    }
    const attempt = member ? member.group.generation : ctx.info.attempt;
    if (lead) await startMetrics(runDir, { kind: 'start', step, attempt, time: new Date().toISOString(), workflowId, resume, build }, s.fromDisk);
    // Where each attempt started and ended is what an exact-resume failure needs to be diagnosed from the logs.
    const label = `${member ? `rank ${member.rank}/${member.nodes} ` : ''}train ${input.fromStep}→${toStep} attempt ${attempt}`;
    ctx.log.info(`${label}: starts at step ${step} from ${s.fromDisk ? (s.start?.dir ?? 'the initial model') : s.start ? `the cached engine (= ${s.start.dir})` : 'the initial model'}`);
    if (s.dataDir !== input.dataDir) engine.setTrainData(await loadSplit(input.dataDir, 'train', signal));
    beat();

    let lastSave = Date.now();
    const save = async () => {
      const at = step;
      const dir = checkpointDir(checkpointRoot, at);
      // `extra` names nothing attempt-, rank- or generation-specific (the engine build is the same for attempts on
      // one build), so every writer of a step writes the same bytes: an overlapping attempt, the attempt before a
      // retry, or a stale rank of the previous generation (workflows/README.md, "Exact resume").
      const extra = { workflowId, totalSteps, engine: build };
      // A rank's save is collective (every rank writes its shard, then one manifest commits them). A lone worker's
      // goes through commitCheckpoint: the engine's commit is atomic (first commit wins), and a committed step that
      // does not verify is rewritten.
      if (member) await engine!.saveCheckpoint(dir, extra);
      else await commitCheckpoint(engine!, dir, at, extra, (m) => ctx.log.warn(m));
      committed = { dir, step: at };
      beat();
      if (lead) await pruneCheckpoints(checkpointRoot, cfg.checkpoint.keepLast);
      lastSave = Date.now();
    };

    // Ranks must decide to save at the same step: only step-based triggers for them (the clock differs per rank).
    const everyMs = member ? 0 : cfg.checkpoint.everyMinutes * 60_000;
    const losses = new LossLog(cfg.training.divergenceLoss);
    let tokens = 0;
    const t0 = Date.now();
    const perStep = new Map<number, { lr: number; gradNorm: number }>();
    const sendProgress = progressSender({
      workflowId, totalSteps, startStep: step, intervalMs: deps.progressIntervalMs,
      send: lead ? deps.signalProgress : undefined, // one progress stream per run (every rank sees the same loss)
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
      const call = engine.train(end - step, { totalSteps, signal, onProgress });
      // A rank whose peer died can sit in a collective: it reports a cancellation without waiting for the call.
      const r = member ? await boundedByCancel(call, signal, where, (m) => ctx.log.error(m)) : await call;
      step = r.step;
      tokens += r.tokens;
      losses.add(step, r.losses);
      // Logged before any checkpoint that covers these steps is committed (metrics.ts: crash safety).
      if (lead) await appendMetrics(runDir, stepRecords(from, r, perStep, Date.now() - g0));
      loss = losses.last;
      if (r.aborted) break;
      if ((step === checkpointAt && step < toStep) || (everyMs > 0 && Date.now() - lastSave >= everyMs)) await save();
    }
    if (member && signal.aborted) throw new CancelledFailure(`${where}: cancelled at step ${step}; the group restarts from ${committed?.dir ?? 'the initial model'}`);
    // The end of the segment, or a lone worker's cancellation: commit what exists before returning or reporting it.
    if (committed?.step !== step || !committed) await save();
    const elapsed = (Date.now() - t0) / 1000;
    ctx.log.info(`${label}: ends at step ${step}${signal.aborted ? ' (cancelled)' : ''}, committed ${committed!.dir}`);
    deps.engines.put(checkpointRoot, committed!, engine, input.dataDir, true, member ? groupKey(member) : '');
    engine = null; // owned by the cache now
    if (signal.aborted) throw new CancelledFailure(`training stopped at step ${step}; checkpoint committed at ${committed!.dir}`);
    return {
      step, checkpoint: committed!, firstLoss: losses.first, lastLoss: loss, tokens,
      tokensPerSec: elapsed > 0 ? Math.round(tokens / elapsed) : 0, resume: s.resume,
    };
  } catch (e) {
    throw classify(e, where);
  } finally {
    clearInterval(keepalive);
    engine?.dispose(); // a call still running (a stuck rank) frees the model when it returns
  }
}
