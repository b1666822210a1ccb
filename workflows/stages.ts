// The `finetune` workflow's bookkeeping beside its recipe (workflows/finetune.ts): the stage it is in and how each
// went, the notes for the user, the training summary, the `progress` query and the signals that steer training,
// the current details the Web UI shows, and the FinetuneStage search attribute. Deterministic: workflow state only.
import * as wf from '@temporalio/workflow';
import {
  STAGES,
  STAGE_SEARCH_ATTRIBUTE,
  checkpointNowSignal,
  progressQuery,
  stopSignal,
  trainProgressSignal,
  type CheckpointRef,
  type FinetuneCarry,
  type Progress,
  type Stage,
  type StageStatus,
  type TrainProgress,
  type TrainSummary,
} from './messages.js';
import type { FinetuneConfig } from '../configs/schemas/index.js';
import type { PreparedData, ValidatedRun } from '../common/index.js';
import { usesRankPath } from '../configs/parallel.js';
import { trainDetails } from './details.js';

/** wf.patched id: a stop before training ends with a report instead of failing with NO_CHECKPOINT. */
export const STOP_BEFORE_TRAINING = 'stop-before-training-ends-with-a-report';

export class Stages {
  stage: Stage | 'done';
  readonly stages: Progress['stages'];
  readonly stageMs: Partial<Record<Stage, number>>;
  readonly notes: string[];
  readonly summary: TrainSummary;
  readonly startedAtMs: number;
  stopRequested: boolean;
  checkpointRequested = false;
  /** The running segment's scope, while one worker trains: "checkpoint now" and "stop" cancel it. */
  segmentScope: wf.CancellationScope | null = null;
  /** The running prepare's scope: a stop before training cancels it. */
  prepareScope: wf.CancellationScope | null = null;
  /** Training runs as a group of ranks, which checkpoint together only at segment ends (workflows/train.ts). */
  groupTraining = false;
  /** Keep the FinetuneStage search attribute (only where the namespace has it registered). */
  searchAttribute = false;
  runDir: string | undefined;
  private live: TrainProgress | null = null;

  constructor(private readonly workflowId: string, carry?: FinetuneCarry) {
    this.startedAtMs = carry?.startedAtMs ?? Date.now();
    this.stages = Object.fromEntries(STAGES.map((s) => [s, { status: 'pending' as StageStatus }])) as Progress['stages'];
    this.stageMs = { ...carry?.stageMs };
    for (const s of STAGES) if (this.stageMs[s] !== undefined) this.stages[s] = { status: 'done', ms: this.stageMs[s] };
    this.notes = [...(carry?.notes ?? [])];
    this.summary = carry?.train ?? {
      steps: 0, totalSteps: 0, firstLoss: null, lastLoss: null, resumedFromSteps: [], resumes: [],
      tokens: 0, tokensPerSec: 0, stoppedEarly: false, lastCheckpoint: null,
    };
    this.stage = carry ? 'train' : 'validate';
    this.stopRequested = carry?.stopRequested ?? false;
    this.runDir = carry?.run.runDir;
    this.searchAttribute = carry?.run.stageSearchAttribute ?? false;
    this.handleMessages();
  }

  private handleMessages(): void {
    wf.setHandler(progressQuery, (): Progress => {
      const { summary, live, stage } = this;
      const step = Math.max(live?.step ?? 0, summary.steps);
      const total = summary.totalSteps;
      const sps = live?.stepsPerSec ?? 0;
      return {
        workflowId: this.workflowId, stage, stages: this.stages, step, totalSteps: total,
        loss: live?.loss ?? summary.lastLoss, tokensPerSec: live?.tokensPerSec ?? (summary.tokensPerSec || null),
        etaSeconds: stage === 'train' && sps > 0 && total > step ? Math.round((total - step) / sps) : null,
        lastCheckpoint: newer(live?.lastCheckpoint ?? null, summary.lastCheckpoint),
        stopRequested: this.stopRequested, checkpointRequested: this.checkpointRequested, notes: this.notes, runDir: this.runDir,
      };
    });
    wf.setHandler(trainProgressSignal, (p) => {
      if (this.stage !== 'train' || p.step < (this.live?.step ?? 0)) return;
      this.live = p;
      wf.setCurrentDetails(trainDetails(p.step, p.totalSteps, p.loss, p.tokensPerSec, p.lastCheckpoint, p.stepsPerSec));
    });
    wf.setHandler(checkpointNowSignal, () => {
      if (this.stage === 'train' && this.groupTraining) {
        this.notes.push('checkpoint now: with several workers the ranks checkpoint together at the end of the running segment');
        return;
      }
      if (this.stage !== 'train' || !this.segmentScope) return; // nothing to checkpoint outside training
      this.checkpointRequested = true;
      this.segmentScope.cancel(); // the segment checkpoints at the next step boundary, then training goes on
    });
    wf.setHandler(stopSignal, (arg) => {
      if (this.stopRequested) return;
      this.stopRequested = true;
      const why = arg?.reason ? ` (${arg.reason})` : '';
      const stage = this.stage;
      if (stage === 'validate' || stage === 'prepare') {
        this.notes.push(`stop requested during ${stage}${why}: no training; the run ends with a report of what was done`);
        // Preparing is content-addressed and committed atomically: a cancelled one leaves nothing half-written.
        if (this.prepareScope && wf.patched(STOP_BEFORE_TRAINING)) this.prepareScope.cancel();
      } else if (stage === 'train') this.notes.push(`stop requested${why}: training ends at the next checkpoint`);
      else this.notes.push(`stop requested during ${stage}${why}: training had ended; the remaining stages run on its last checkpoint`);
      this.segmentScope?.cancel();
    });
  }

  /** Enter a stage: its status, the current details and the search attribute. */
  enter(s: Stage | 'done', detail: string): void {
    this.stage = s;
    if (s !== 'done') this.stages[s] = { status: 'running' };
    wf.setCurrentDetails(`**${s}**: ${detail}`);
    if (this.searchAttribute) wf.upsertSearchAttributes([{ key: STAGE_SEARCH_ATTRIBUTE, value: s }]);
  }

  /** Leave a stage begun at `t0`: its time adds up over continue-as-new. */
  leave(s: Stage, t0: number, status: StageStatus = 'done'): void {
    this.stageMs[s] = (this.stageMs[s] ?? 0) + (Date.now() - t0);
    this.stages[s] = { status, ms: this.stageMs[s] };
  }

  /** The run is validated: its directory, whether it keeps the search attribute, how it trains. */
  validated(run: ValidatedRun): void {
    this.runDir = run.runDir;
    this.searchAttribute = run.stageSearchAttribute ?? false;
    this.groupTraining = usesRankPath(run.cfg);
  }

  /** Data prepared (in `t0`): the notes say what came out. */
  prepared(t0: number, data: PreparedData, cfg: FinetuneConfig): void {
    this.leave('prepare', t0);
    this.notes.push(`data ${data.reused ? 'reused' : 'prepared'}: ${data.train.sequences} train / ${data.validation.sequences} validation sequences of ${data.blockSize} tokens`);
    if (data.validation.heldOutFromTrain)
      this.notes.push(`validation: no document of the corpus was drawn for it (one document?), so the last ${data.validation.heldOutFromTrain} sequences of the train split were held out (data.validationFraction ${cfg.data.validationFraction})`);
    if (data.packing) this.notes.push(`packed: ${data.packing.examplesPerSequence} examples per sequence, ${(100 * data.packing.efficiency).toFixed(1)}% of positions real tokens`);
    for (const w of data.warnings ?? []) this.notes.push(`data warning: ${w}`);
  }

  /** Evaluation had no validation sequences: say why. */
  noEvaluation(cfg: FinetuneConfig, blockSize: number): void {
    this.notes.push(cfg.data.validationFraction === 0 && !cfg.data.validation
      ? 'no validation split (data.validationFraction is 0 and no data.validation): evaluation skipped'
      : `no validation sequences (data.validationFraction ${cfg.data.validationFraction}${cfg.data.validation ? ', data.validation given' : ''}): too little data was held out for one sequence of ${blockSize} tokens; evaluation skipped`);
  }

  /** A segment starts (its scope) or ends (null): "checkpoint now" and "stop" cancel the running one. */
  training(scope: wf.CancellationScope | null): void {
    this.segmentScope = scope;
    if (scope) this.checkpointRequested = false;
  }

  /** After each training segment: where training stands, for the query and the Web UI. */
  trained(step: number, lastCheckpoint: CheckpointRef | null, totalSteps: number, detail?: string): void {
    this.summary.steps = step;
    this.summary.lastCheckpoint = lastCheckpoint;
    this.live = null;
    wf.setCurrentDetails(detail ?? trainDetails(step, totalSteps, this.summary.lastLoss, this.summary.tokensPerSec, lastCheckpoint));
  }

  /** Training ended (begun at `t0`) at `step`: the last step, or earlier after a stop. */
  trainingEnded(t0: number, step: number): void {
    this.summary.stoppedEarly = step < this.summary.totalSteps;
    if (this.summary.stoppedEarly) this.notes.push(`training stopped at step ${step} of ${this.summary.totalSteps}`);
    this.leave('train', t0);
  }

  /** Every later stage skipped: the run stopped before training. */
  skipAfterPrepare(prepared: boolean): void {
    for (const s of ['train', 'export', 'evaluate', 'generate'] as const) this.stages[s] = { status: 'skipped' };
    if (!prepared) this.stages.prepare = { status: 'skipped', ms: this.stageMs.prepare };
    this.summary.stoppedEarly = true;
  }
}

function newer(a: CheckpointRef | null, b: CheckpointRef | null): CheckpointRef | null {
  if (!a) return b;
  if (!b) return a;
  return a.step >= b.step ? a : b;
}
