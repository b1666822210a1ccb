// The `finetune` workflow: validate → prepare data (load, tokenize, shard) → train in segments → export →
// evaluate → generate → report. It only orchestrates; every side effect is an activity (activities/), and only
// paths, step numbers and small metrics cross Temporal. See workflows/README.md for the shape and its reasons.
import * as wf from '@temporalio/workflow';
import type { Activities, ValidatedRun } from '../activities/index.js';
import {
  STAGES,
  STAGE_SEARCH_ATTRIBUTE,
  checkpointNowSignal,
  progressQuery,
  stopSignal,
  trainProgressSignal,
  type CheckpointRef,
  type FinetuneCarry,
  type FinetuneReport,
  type Progress,
  type Stage,
  type StageStatus,
  type TrainProgress,
  type TrainSummary,
} from './messages.js';
import { trainDetails } from './details.js';
import { bookkeepingOptions, gpuOptions, prepareOptions, trainOptions, validateOptions } from './options.js';
import { trainRanks, type RankLoop } from './ranks.js';
import { usesRankPath } from '../configs/parallel.js';

export async function finetune(input: unknown, carry?: FinetuneCarry & { run: ValidatedRun; ranks?: Pick<RankLoop, 'restarts' | 'generation'> }): Promise<FinetuneReport> {
  const info = wf.workflowInfo();
  const startedAt = carry?.startedAtMs ?? Date.now();
  const stages = Object.fromEntries(STAGES.map((s) => [s, { status: 'pending' as StageStatus }])) as Progress['stages'];
  const stageMs: Partial<Record<Stage, number>> = { ...carry?.stageMs };
  for (const s of STAGES) if (stageMs[s] !== undefined) stages[s] = { status: 'done', ms: stageMs[s] };
  const notes: string[] = [...(carry?.notes ?? [])];
  const summary: TrainSummary = carry?.train ?? {
    steps: 0, totalSteps: 0, firstLoss: null, lastLoss: null, resumedFromSteps: [], resumes: [],
    tokens: 0, tokensPerSec: 0, stoppedEarly: false, lastCheckpoint: null,
  };
  let stage: Stage | 'done' = carry ? 'train' : 'validate';
  let live: TrainProgress | null = null;
  let stopRequested = carry?.stopRequested ?? false;
  let checkpointRequested = false;
  let segmentScope: wf.CancellationScope | null = null;
  let prepareScope: wf.CancellationScope | null = null;
  let runDir: string | undefined = carry?.run.runDir;
  let rankPath = false; // multi-worker training: ranks stop only at segment ends (workflows/ranks.ts)

  // ---- messages ----
  wf.setHandler(progressQuery, (): Progress => {
    const step = Math.max(live?.step ?? 0, summary.steps);
    const total = summary.totalSteps;
    const sps = live?.stepsPerSec ?? 0;
    return {
      workflowId: info.workflowId, stage, stages, step, totalSteps: total,
      loss: live?.loss ?? summary.lastLoss, tokensPerSec: live?.tokensPerSec ?? (summary.tokensPerSec || null),
      etaSeconds: stage === 'train' && sps > 0 && total > step ? Math.round((total - step) / sps) : null,
      lastCheckpoint: newer(live?.lastCheckpoint ?? null, summary.lastCheckpoint),
      stopRequested, checkpointRequested, notes, runDir,
    };
  });
  wf.setHandler(trainProgressSignal, (p) => {
    if (stage !== 'train' || p.step < (live?.step ?? 0)) return;
    live = p;
    wf.setCurrentDetails(trainDetails(p.step, p.totalSteps, p.loss, p.tokensPerSec, p.lastCheckpoint, p.stepsPerSec));
  });
  wf.setHandler(checkpointNowSignal, () => {
    if (stage === 'train' && rankPath) {
      notes.push('checkpoint now: with several workers the ranks checkpoint together at the end of the running segment');
      return;
    }
    if (stage !== 'train' || !segmentScope) return; // nothing to checkpoint outside training
    checkpointRequested = true;
    segmentScope.cancel(); // the segment checkpoints at the next step boundary, then training goes on
  });
  wf.setHandler(stopSignal, (arg) => {
    if (stopRequested) return;
    stopRequested = true;
    const why = arg?.reason ? ` (${arg.reason})` : '';
    if (stage === 'validate' || stage === 'prepare') {
      notes.push(`stop requested during ${stage}${why}: no training; the run ends with a report of what was done`);
      // Preparing is content-addressed and committed atomically: a cancelled one leaves nothing half-written.
      if (prepareScope && wf.patched(STOP_BEFORE_TRAINING)) prepareScope.cancel();
    } else if (stage === 'train') notes.push(`stop requested${why}: training ends at the next checkpoint`);
    else notes.push(`stop requested during ${stage}${why}: training had ended; the remaining stages run on its last checkpoint`);
    segmentScope?.cancel();
  });

  const enter = (s: Stage | 'done', detail: string) => {
    stage = s;
    if (s !== 'done') stages[s] = { status: 'running' };
    wf.setCurrentDetails(`**${s}**: ${detail}`);
    if (run?.stageSearchAttribute) wf.upsertSearchAttributes([{ key: STAGE_SEARCH_ATTRIBUTE, value: s }]);
  };
  const leave = (s: Stage, t0: number, status: StageStatus = 'done') => {
    stageMs[s] = (stageMs[s] ?? 0) + (Date.now() - t0);
    stages[s] = { status, ms: stageMs[s] };
  };

  // ---- validate (fails at once on a bad config: non-retryable, with the zod message) ----
  let run: ValidatedRun;
  if (carry) run = carry.run;
  else {
    const t0 = Date.now();
    enter('validate', 'checking the config');
    run = await wf.proxyActivities<Activities>({ ...validateOptions({ taskQueue: info.taskQueue, gpuTaskQueue: info.taskQueue, heartbeatTimeoutSeconds: 60 }), summary: 'validate config' })
      .validateConfig(input, info.workflowId);
    leave('validate', t0);
    if (run.continuedFrom) notes.push(`continuing the series from ${run.continuedFrom}`);
    wf.upsertMemo({ config: run.memo });
  }
  runDir = run.runDir;
  const { cfg } = run;
  const q = cfg.temporal;
  const cpu = (summary_: string) => wf.proxyActivities<Activities>({ ...bookkeepingOptions(q), summary: summary_ });
  const gpu = (summary_: string) => wf.proxyActivities<Activities>({ ...gpuOptions(q), summary: summary_ });

  // ---- prepare: load corpus → tokenize into blockSize sequences → shard (content-addressed, reused) ----
  let t0 = Date.now();
  // A stop before training ends the run with a report of what was done (no model); older histories failed with
  // NO_CHECKPOINT there, and replay them unchanged.
  if (!carry && stopRequested && wf.patched(STOP_BEFORE_TRAINING)) return await stoppedBeforeTraining(null);
  if (!carry) enter('prepare', 'load → tokenize → shard');
  let data: Awaited<ReturnType<Activities['prepareData']>>;
  prepareScope = new wf.CancellationScope();
  try {
    data = await prepareScope.run(() => wf.proxyActivities<Activities>({ ...prepareOptions(q), summary: 'load, tokenize, shard' }).prepareData(cfg));
  } catch (err) {
    if (!wf.isCancellation(err) || !stopRequested || wf.CancellationScope.current().consideredCancelled) throw err;
    leave('prepare', t0, 'skipped');
    return await stoppedBeforeTraining(null);
  } finally {
    prepareScope = null;
  }
  if (!carry && stopRequested && wf.patched(STOP_BEFORE_TRAINING)) {
    leave('prepare', t0);
    return await stoppedBeforeTraining(data);
  }
  if (!carry) {
    leave('prepare', t0);
    notes.push(`data ${data.reused ? 'reused' : 'prepared'}: ${data.train.sequences} train / ${data.validation.sequences} validation sequences of ${data.blockSize} tokens`);
    if (data.validation.heldOutFromTrain)
      notes.push(`validation: no document of the corpus was drawn for it (one document?), so the last ${data.validation.heldOutFromTrain} sequences of the train split were held out (data.validationFraction ${cfg.data.validationFraction})`);
    if (data.packing) notes.push(`packed: ${data.packing.examplesPerSequence} examples per sequence, ${(100 * data.packing.efficiency).toFixed(1)}% of positions real tokens`);
    for (const w of data.warnings ?? []) notes.push(`data warning: ${w}`);
  }
  summary.totalSteps = data.totalSteps;

  // ---- train in segments; each segment checkpoints at its end and every cfg.checkpoint.everySteps ----
  enter('train', `${summary.steps}/${summary.totalSteps} steps`);
  t0 = Date.now();
  let step = carry?.step ?? 0;
  let lastCheckpoint: CheckpointRef | null = carry?.lastCheckpoint ?? null;
  const root = wf.CancellationScope.current();
  try {
    if (usesRankPath(cfg)) {
      rankPath = true;
      const loop: RankLoop = { step, lastCheckpoint, restarts: carry?.ranks?.restarts ?? 0, generation: carry?.ranks?.generation ?? 0 };
      const how = await trainRanks({
        run, data, summary, notes,
        stopRequested: () => stopRequested,
        shouldContinueAsNew: () => wf.workflowInfo().continueAsNewSuggested || wf.workflowInfo().historyLength > cfg.temporal.continueAsNewAfterEvents,
        onSegment: (s) => {
          summary.steps = s;
          summary.lastCheckpoint = loop.lastCheckpoint;
          live = null;
          wf.setCurrentDetails(`**train**: ${s}/${data.totalSteps} steps on ${loop.generation ? 'all ranks' : 'no ranks yet'}, loss ${summary.lastLoss?.toFixed(3) ?? '?'}`);
        },
      }, loop);
      step = loop.step;
      lastCheckpoint = loop.lastCheckpoint;
      if (how === 'continue-as-new') {
        leave('train', t0, 'running');
        await wf.condition(wf.allHandlersFinished);
        return await wf.continueAsNew<typeof finetune>(input, {
          run, step, lastCheckpoint, train: summary, stageMs, notes, stopRequested, startedAtMs: startedAt,
          ranks: { restarts: loop.restarts, generation: loop.generation },
        });
      }
    }
    while (!rankPath && step < data.totalSteps && !stopRequested) {
      const toStep = Math.min(data.totalSteps, step + cfg.training.segmentSteps);
      segmentScope = new wf.CancellationScope();
      checkpointRequested = false;
      try {
        const seg = await segmentScope.run(() =>
          wf.proxyActivities<Activities>({ ...trainOptions(q), summary: `train steps ${step}→${toStep}` }).trainSegment({
            cfg, runDir: run.runDir, checkpointRoot: run.checkpointRoot, dataDir: data.dataDir,
            fromStep: step, toStep, totalSteps: data.totalSteps, resumeFrom: lastCheckpoint,
          }),
        );
        step = seg.step;
        lastCheckpoint = seg.checkpoint;
        if (summary.firstLoss === null && seg.firstLoss !== null) summary.firstLoss = seg.firstLoss;
        if (seg.lastLoss !== null) summary.lastLoss = seg.lastLoss;
        summary.tokens += seg.tokens;
        summary.tokensPerSec = seg.tokensPerSec || summary.tokensPerSec;
        if (seg.resume) {
          summary.resumes.push(seg.resume);
          summary.resumedFromSteps.push(seg.resume.atStep);
          for (const s of seg.resume.skipped) notes.push(`fell back past ${s.dir}: ${s.reason}`);
          notes.push(`resumed at step ${seg.resume.atStep} (attempt ${seg.resume.attempt})${seg.resume.cause ? `: ${seg.resume.cause}` : ''}`);
        }
      } catch (err) {
        // A segment cancelled by "checkpoint now" or "stop" has committed a checkpoint; the workflow goes on.
        if (!wf.isCancellation(err) || root.consideredCancelled) throw err;
        const latest = await cpu('find the latest checkpoint').latestCheckpoint(run.checkpointRoot);
        for (const s of latest.skipped) notes.push(`fell back past ${s.dir}: ${s.reason}`);
        if (latest.checkpoint) {
          step = latest.checkpoint.step;
          lastCheckpoint = latest.checkpoint;
        }
      } finally {
        segmentScope = null;
      }
      summary.steps = step;
      summary.lastCheckpoint = lastCheckpoint;
      live = null;
      wf.setCurrentDetails(trainDetails(step, data.totalSteps, summary.lastLoss, summary.tokensPerSec, lastCheckpoint));
      if (step < data.totalSteps && !stopRequested && (wf.workflowInfo().continueAsNewSuggested || wf.workflowInfo().historyLength > cfg.temporal.continueAsNewAfterEvents)) {
        leave('train', t0, 'running');
        await wf.condition(wf.allHandlersFinished);
        return await wf.continueAsNew<typeof finetune>(input, {
          run, step, lastCheckpoint, train: summary, stageMs, notes, stopRequested, startedAtMs: startedAt,
        });
      }
    }
  } catch (err) {
    if (wf.isCancellation(err)) {
      // Cancelled: the segment has checkpointed (WAIT_CANCELLATION_COMPLETED); record where it stands and stop.
      await wf.CancellationScope.nonCancellable(async () => {
        const latest = await cpu('find the latest checkpoint').latestCheckpoint(run.checkpointRoot);
        notes.push(`cancelled at step ${latest.checkpoint?.step ?? step}; last checkpoint ${latest.checkpoint?.dir ?? 'none'}`);
        wf.setCurrentDetails(`**cancelled** at step ${latest.checkpoint?.step ?? step}`);
      });
    }
    leave('train', t0, 'failed');
    throw err;
  }
  summary.stoppedEarly = step < data.totalSteps;
  if (summary.stoppedEarly) notes.push(`training stopped at step ${step} of ${data.totalSteps}`);
  leave('train', t0);
  if (!lastCheckpoint) throw wf.ApplicationFailure.nonRetryable('training stopped before its first checkpoint: nothing to export', 'NO_CHECKPOINT');

  // ---- export → evaluate → generate, from the last committed checkpoint ----
  t0 = Date.now();
  enter('export', `Hugging Face directory from step ${lastCheckpoint.step}`);
  const exported = await gpu('export the model').exportModel({ cfg, checkpoint: lastCheckpoint, modelDir: run.modelDir });
  // Export falls back past a checkpoint that does not load: then the model is not the last trained step's.
  if (exported.step !== lastCheckpoint.step) notes.push(`exported the checkpoint of step ${exported.step}: the last one (step ${lastCheckpoint.step}, ${lastCheckpoint.dir}) did not load`);
  leave('export', t0);

  t0 = Date.now();
  enter('evaluate', 'validation split');
  const metrics = await gpu('evaluate on the validation split').evaluateModel({ cfg, checkpoint: lastCheckpoint, dataDir: data.dataDir });
  leave('evaluate', t0);
  if (!metrics)
    notes.push(cfg.data.validationFraction === 0 && !cfg.data.validation
      ? 'no validation split (data.validationFraction is 0 and no data.validation): evaluation skipped'
      : `no validation sequences (data.validationFraction ${cfg.data.validationFraction}${cfg.data.validation ? ', data.validation given' : ''}): too little data was held out for one sequence of ${data.blockSize} tokens; evaluation skipped`);

  t0 = Date.now();
  enter('generate', `${cfg.generation.prompts.length} prompts`);
  const samples = await gpu('generate samples').generateSamples({ cfg, checkpoint: lastCheckpoint });
  leave('generate', t0);

  const report: FinetuneReport = {
    workflowId: info.workflowId, name: cfg.name, runDir: run.runDir, modelDir: exported.modelDir, dataDir: data.dataDir,
    baseModel: run.baseModel, train: summary, eval: metrics, samples, stageMs, notes,
  };
  // The report's training numbers come back from the run's metrics log (activities/finalize.ts); histories from
  // before it recorded a result without `report`.
  const fin = await cpu('write the report').finalizeRun({ report, seriesDir: run.seriesDir, totalMs: Date.now() - startedAt });
  enter('done', `eval loss ${metrics?.loss.toFixed(3) ?? '-'}, model in ${exported.modelDir}`);
  return fin.report ?? report;

  /** Stopped before any training step: a report of what was done, no model (export/evaluate/generate skipped). */
  async function stoppedBeforeTraining(prepared: { dataDir: string; train: { sequences: number }; validation: { sequences: number } } | null): Promise<FinetuneReport> {
    for (const s of ['train', 'export', 'evaluate', 'generate'] as const) stages[s] = { status: 'skipped' };
    if (!prepared) stages.prepare = { status: 'skipped', ms: stageMs.prepare };
    summary.stoppedEarly = true;
    notes.push(prepared
      ? `stopped after preparing the data (${prepared.train.sequences} train / ${prepared.validation.sequences} validation sequences in ${prepared.dataDir}): no training step ran, so there is no model to export, evaluate or generate from`
      : 'stopped before the data was prepared: nothing was trained, exported, evaluated or generated');
    const report: FinetuneReport = {
      workflowId: info.workflowId, name: cfg.name, runDir: run.runDir, modelDir: null, dataDir: prepared?.dataDir ?? '',
      baseModel: run.baseModel, train: summary, eval: null, samples: [], stageMs, notes,
    };
    const fin = await cpu('write the report').finalizeRun({ report, seriesDir: run.seriesDir, totalMs: Date.now() - startedAt });
    enter('done', 'stopped before training: no model');
    return fin.report ?? report;
  }
}

/** wf.patched id: a stop before training ends with a report instead of failing with NO_CHECKPOINT. */
const STOP_BEFORE_TRAINING = 'stop-before-training-ends-with-a-report';

function newer(a: CheckpointRef | null, b: CheckpointRef | null): CheckpointRef | null {
  if (!a) return b;
  if (!b) return a;
  return a.step >= b.step ? a : b;
}
