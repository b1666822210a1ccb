// The `finetune` workflow, as a recipe: validate → prepare data (load, tokenize, shard) → train in segments →
// export → evaluate → generate → report. It only orchestrates; every side effect is an activity (activities/), and
// only paths, step numbers and small metrics cross Temporal. The stage bookkeeping (progress query, signals,
// details, search attribute, notes) is in workflows/stages.ts, the training loop in workflows/train.ts.
// See workflows/README.md for the shape and its reasons.
import * as wf from '@temporalio/workflow';
import type { Activities } from '../activities/index.js';
import type { FinetuneCarry, FinetuneReport, PreparedData, ValidatedRun } from '../common/index.js';
import { bookkeepingOptions, gpuOptions, prepareOptions, validateOptions } from './options.js';
import { STOP_BEFORE_TRAINING, Stages } from './stages.js';
import { trainLoop, type TrainState } from './train.js';

export async function finetune(input: unknown, carry?: FinetuneCarry): Promise<FinetuneReport> {
  const info = wf.workflowInfo();
  const book = new Stages(info.workflowId, carry);
  const { notes, summary } = book;
  const activities = (options: wf.ActivityOptions, summary: string) => wf.proxyActivities<Activities>({ ...options, summary });

  // ---- validate (fails at once on a bad config: non-retryable, with the zod message) ----
  let run: ValidatedRun;
  let t0 = Date.now();
  if (carry) run = carry.run;
  else {
    book.enter('validate', 'checking the config');
    run = await activities(validateOptions({ taskQueue: info.taskQueue, gpuTaskQueue: info.taskQueue, heartbeatTimeoutSeconds: 60 }), 'validate config')
      .validateConfig(input, info.workflowId);
    book.leave('validate', t0);
    if (run.continuedFrom) notes.push(`continuing the series from ${run.continuedFrom}`);
    wf.upsertMemo({ config: run.memo });
  }
  book.validated(run);
  const { cfg } = run;
  const cpu = (what: string) => activities(bookkeepingOptions(cfg.temporal), what);
  const gpu = (what: string) => activities(gpuOptions(cfg.temporal), what);

  // ---- prepare: load corpus → tokenize into blockSize sequences → shard (content-addressed, reused) ----
  // A stop before training ends the run with a report of what was done (no model); older histories failed with
  // NO_CHECKPOINT there, and replay them unchanged.
  t0 = Date.now();
  if (!carry && book.stopRequested && wf.patched(STOP_BEFORE_TRAINING)) return await stoppedBeforeTraining(null);
  if (!carry) book.enter('prepare', 'load → tokenize → shard');
  let data: PreparedData;
  book.prepareScope = new wf.CancellationScope();
  try {
    data = await book.prepareScope.run(() => activities(prepareOptions(cfg.temporal), 'load, tokenize, shard').prepareData(cfg));
  } catch (err) {
    if (!wf.isCancellation(err) || !book.stopRequested || wf.CancellationScope.current().consideredCancelled) throw err;
    book.leave('prepare', t0, 'skipped');
    return await stoppedBeforeTraining(null);
  } finally {
    book.prepareScope = null;
  }
  if (!carry && book.stopRequested && wf.patched(STOP_BEFORE_TRAINING)) {
    book.leave('prepare', t0);
    return await stoppedBeforeTraining(data);
  }
  if (!carry) book.prepared(t0, data, cfg);
  summary.totalSteps = data.totalSteps;

  // ---- train in segments, each committing a checkpoint (workflows/train.ts) ----
  book.enter('train', `${summary.steps}/${summary.totalSteps} steps`);
  t0 = Date.now();
  const state: TrainState = { step: carry?.step ?? 0, lastCheckpoint: carry?.lastCheckpoint ?? null, restarts: carry?.ranks?.restarts ?? 0, generation: carry?.ranks?.generation ?? 0 };
  const prepared = data;
  const how = await trainLoop({
    run, data: prepared, summary, notes,
    stopRequested: () => book.stopRequested,
    setSegmentScope: (scope) => book.training(scope),
    onSegment: (s) => book.trained(s.step, s.lastCheckpoint, prepared.totalSteps),
  }, state).catch((err: unknown) => {
    book.leave('train', t0, 'failed');
    throw err;
  });
  if (how === 'continue-as-new') {
    book.leave('train', t0, 'running');
    await wf.condition(wf.allHandlersFinished);
    return await wf.continueAsNew<typeof finetune>(input, {
      run, step: state.step, lastCheckpoint: state.lastCheckpoint, train: summary, stageMs: book.stageMs, notes,
      stopRequested: book.stopRequested, startedAtMs: book.startedAtMs, ranks: { restarts: state.restarts, generation: state.generation },
    });
  }
  const { lastCheckpoint } = state;
  book.trainingEnded(t0, state.step);
  if (!lastCheckpoint) throw wf.ApplicationFailure.nonRetryable('training stopped before its first checkpoint: nothing to export', 'NO_CHECKPOINT');

  // ---- export → evaluate → generate, from the last committed checkpoint ----
  t0 = Date.now();
  book.enter('export', `Hugging Face directory from step ${lastCheckpoint.step}`);
  const exported = await gpu('export the model').exportModel({ cfg, checkpoint: lastCheckpoint, modelDir: run.modelDir });
  // Export falls back past a checkpoint that does not load: then the model is not the last trained step's.
  if (exported.step !== lastCheckpoint.step) notes.push(`exported the checkpoint of step ${exported.step}: the last one (step ${lastCheckpoint.step}, ${lastCheckpoint.dir}) did not load`);
  book.leave('export', t0);

  t0 = Date.now();
  book.enter('evaluate', 'validation split');
  const metrics = await gpu('evaluate on the validation split').evaluateModel({ cfg, checkpoint: lastCheckpoint, dataDir: data.dataDir });
  book.leave('evaluate', t0);
  if (!metrics) book.noEvaluation(cfg, data.blockSize);

  t0 = Date.now();
  book.enter('generate', `${cfg.generation.prompts.length} prompts`);
  const samples = await gpu('generate samples').generateSamples({ cfg, checkpoint: lastCheckpoint });
  book.leave('generate', t0);

  return await finish({ modelDir: exported.modelDir, dataDir: data.dataDir, eval: metrics, samples }, `eval loss ${metrics?.loss.toFixed(3) ?? '-'}, model in ${exported.modelDir}`);

  /** Stopped before any training step: a report of what was done, no model (export/evaluate/generate skipped). */
  async function stoppedBeforeTraining(prepared: PreparedData | null): Promise<FinetuneReport> {
    book.skipAfterPrepare(prepared !== null);
    notes.push(prepared
      ? `stopped after preparing the data (${prepared.train.sequences} train / ${prepared.validation.sequences} validation sequences in ${prepared.dataDir}): no training step ran, so there is no model to export, evaluate or generate from`
      : 'stopped before the data was prepared: nothing was trained, exported, evaluated or generated');
    return await finish({ modelDir: null, dataDir: prepared?.dataDir ?? '', eval: null, samples: [] }, 'stopped before training: no model');
  }

  /** The report, whose training numbers come back from the run's metrics log (activities/finalize.ts). */
  async function finish(outcome: Pick<FinetuneReport, 'modelDir' | 'dataDir' | 'eval' | 'samples'>, detail: string): Promise<FinetuneReport> {
    const report: FinetuneReport = {
      workflowId: info.workflowId, name: cfg.name, runDir: run.runDir, modelDir: outcome.modelDir, dataDir: outcome.dataDir,
      baseModel: run.baseModel, train: summary, eval: outcome.eval, samples: outcome.samples, stageMs: book.stageMs, notes,
    };
    const fin = await cpu('write the report').finalizeRun({ report, seriesDir: run.seriesDir, totalMs: Date.now() - book.startedAtMs });
    book.enter('done', detail);
    // Histories from before the metrics log recorded a result without `report`.
    return fin.report ?? report;
  }
}
