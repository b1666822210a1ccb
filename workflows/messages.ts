// Everything the `finetune` workflow and its clients (CLI, activities, tests) share: task-queue names, the
// signal/query definitions and the small JSON shapes that cross Temporal. Only references, hashes and summaries
// travel; never tensors or token arrays.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { defineQuery, defineSignal } from '@temporalio/workflow';

/** Default queue of the workflow and the CPU activities (cfg.temporal.taskQueue). */
export const TASK_QUEUE = 'finetune';
/** Default queue of train/export/evaluate/generate (cfg.temporal.gpuTaskQueue); GPU hosts poll only this one. */
export const GPU_TASK_QUEUE = 'finetune-gpu';
/** The workflow type, as `temporal workflow start --type finetune` names it. */
export const WORKFLOW_TYPE = 'finetune';

/**
 * The stage of a run as a Keyword search attribute, for listing and filtering runs by stage (Web UI, `temporal
 * workflow list --query 'FinetuneStage="train"'`). Only set where the namespace has it registered
 * (`temporal server start-dev --search-attribute FinetuneStage=Keyword`, or `temporal operator search-attribute
 * create --name FinetuneStage --type Keyword`): a real server fails the workflow task that upserts an unknown one.
 */
export const STAGE_SEARCH_ATTRIBUTE = defineSearchAttributeKey('FinetuneStage', SearchAttributeType.KEYWORD);

export const STAGES = ['validate', 'prepare', 'train', 'export', 'evaluate', 'generate'] as const;
export type Stage = (typeof STAGES)[number];
export type StageStatus = 'pending' | 'running' | 'done' | 'skipped' | 'failed';

/** A committed checkpoint on shared storage (a `step-XXXXXXXX` directory with a DONE marker). */
export interface CheckpointRef {
  dir: string;
  step: number;
}

/** What the train activity reports while it runs (an internal signal, throttled to a few seconds). */
export interface TrainProgress {
  step: number;
  totalSteps: number;
  loss: number;
  tokensPerSec: number;
  /** Optimizer steps per second over the current segment; drives the ETA. */
  stepsPerSec: number;
  lastCheckpoint: CheckpointRef | null;
}

/** The answer of the `progress` query. */
export interface Progress {
  workflowId: string;
  stage: Stage | 'done';
  stages: Record<Stage, { status: StageStatus; ms?: number }>;
  step: number;
  totalSteps: number;
  loss: number | null;
  tokensPerSec: number | null;
  etaSeconds: number | null;
  lastCheckpoint: CheckpointRef | null;
  stopRequested: boolean;
  checkpointRequested: boolean;
  /** Things the user should know: fallbacks to older checkpoints, resumes, graceful stops. */
  notes: string[];
  /** The run directory (metrics.jsonl, loss.svg, report.json), once validated. */
  runDir?: string;
}

/** A resume from disk: after a retry, on another worker, or after falling back past a corrupt checkpoint. */
export interface ResumeRecord {
  atStep: number;
  attempt: number;
  from: CheckpointRef | null;
  skipped: { dir: string; reason: string }[];
  /** Why the attempt did not continue in memory (a retry after a failure, a lost worker, a re-run of the id). */
  cause?: string;
  /** The engine build that wrote the checkpoint it loaded, when that differs from the one that resumed. */
  checkpointBuild?: EngineBuild | null;
}

/** Which compiled engine ran (native/loader.ts addonBuild): checkpoints and the report record it. */
export interface EngineBuild {
  /** Build folder name and a hash of the addon binary: equal ids, same machine code. */
  id: string;
  backends: string;
  blas: string;
  node: string;
}

export interface TrainSummary {
  steps: number;
  totalSteps: number;
  firstLoss: number | null;
  lastLoss: number | null;
  /** Steps from which training resumed off a checkpoint on disk (retries, new workers, fallbacks). */
  resumedFromSteps: number[];
  resumes: ResumeRecord[];
  tokens: number;
  tokensPerSec: number;
  stoppedEarly: boolean;
  lastCheckpoint: CheckpointRef | null;
  /** The engine builds that trained this run (from the metrics log); more than one voids bit-identical resumes. */
  engineBuilds?: EngineBuild[];
}

export interface EvalMetrics {
  loss: number;
  perplexity: number;
  accuracy: number;
  tokens: number;
  sequences: number;
}

export interface Sample {
  prompt: string;
  text: string;
}

/** The workflow's result: small, JSON, printed by `finetune run --json`. */
export interface FinetuneReport {
  workflowId: string;
  name: string;
  runDir: string;
  modelDir: string | null;
  dataDir: string;
  baseModel: string | null;
  train: TrainSummary;
  eval: EvalMetrics | null;
  samples: Sample[];
  stageMs: Partial<Record<Stage, number>>;
  notes: string[];
  /** `<runDir>/metrics.jsonl` (every step, eval point and resume) and the loss curve drawn from it. */
  metricsLog?: string;
  lossCurve?: string | null;
}

/** What continue-as-new carries: the validated config stays the input; the rest is the last committed state. */
export interface FinetuneCarry {
  step: number;
  lastCheckpoint: CheckpointRef | null;
  train: TrainSummary;
  stageMs: Partial<Record<Stage, number>>;
  notes: string[];
  stopRequested: boolean;
  startedAtMs: number;
}

export const progressQuery = defineQuery<Progress>('progress');
/** Commit a checkpoint now (the training segment stops at the next step boundary, saves, and training goes on). */
export const checkpointNowSignal = defineSignal('checkpointNow');
/** Stop training gracefully: checkpoint, then export, evaluate and generate with what exists. */
export const stopSignal = defineSignal<[{ reason?: string }?]>('stop');
/** Internal: live progress from the train activity (the only way a workflow sees mid-activity progress). */
export const trainProgressSignal = defineSignal<[TrainProgress]>('trainProgress');
