// What the `finetune` workflow, its activities and its clients (CLI, tests) share: task-queue names, the stage
// search attribute and every small JSON shape that crosses Temporal (activity inputs and results, progress, the
// report). Workflows and activities both import this module and never each other (the workflow names its
// activities only through `import type`). Only references, hashes and summaries travel; never tensors or token
// arrays. Plain types and constants: safe in the workflow sandbox.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import type { FinetuneConfig } from '../configs/schemas/index.js';

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

/** What continue-as-new carries: the raw input stays the input; the rest is the validated run and its last committed state. */
export interface FinetuneCarry {
  step: number;
  lastCheckpoint: CheckpointRef | null;
  train: TrainSummary;
  stageMs: Partial<Record<Stage, number>>;
  notes: string[];
  stopRequested: boolean;
  startedAtMs: number;
  /** The validated run: a continued run does not validate again. */
  run: ValidatedRun;
  /** The training group's restart budget and generation (workflows/train.ts); absent: a fresh group. */
  ranks?: { restarts: number; generation: number };
}

// ---- activity inputs and results ----

/** validateConfig's result: the config with every default applied and the directories the run owns. */
export interface ValidatedRun {
  cfg: FinetuneConfig;
  /** sha256 over everything that changes the trained weights. */
  fingerprint: string;
  /** `<storage.root>/<name>/<workflowId>-<fingerprint[0:10]>`: checkpoints/, model/, report.json. */
  runDir: string;
  checkpointRoot: string;
  modelDir: string;
  /** `<storage.root>/<name>`: the series (latest.json points at its newest model; temporal.db of `finetune run`). */
  seriesDir: string;
  /** The model this run starts from: the series' latest export when it continues one, a pretrained folder, or null. */
  baseModel: string | null;
  /** The series model this run continues (model.continueSeries and an earlier run exported one), else null. */
  continuedFrom?: string | null;
  /** A few readable fields for the Web UI's memo. */
  memo: Record<string, string | number>;
  /**
   * The namespace has the FinetuneStage search attribute registered as a Keyword: the workflow keeps it at the
   * current stage. Absent in histories from before it existed (then the workflow upserts nothing, as then).
   */
  stageSearchAttribute?: boolean;
}

/** The series pointer written by finalizeRun after each successful run. */
export interface SeriesPointer {
  modelDir: string;
  workflowId: string;
  step: number;
  evalLoss: number | null;
  finishedAt: string;
}

export interface SplitSummary {
  sequences: number;
  tokens: number;
  shards: number;
  /** Validation only: sequences held out from the end of the train split (no document was drawn for validation). */
  heldOutFromTrain?: number;
}

/** prepareData's result: where the shards are and the step plan, never the data. */
export interface PreparedData {
  dataDir: string;
  fingerprint: string;
  reused: boolean;
  blockSize: number;
  train: SplitSummary;
  validation: SplitSummary;
  /** Optimizer steps of the whole run: training.maxSteps, or epochs over the train split. */
  totalSteps: number;
  tokensPerStep: number;
  /** Milliseconds per stage as the data layer reported them (load, tokenize, shard, ...). */
  stageMs: Record<string, number>;
  /** The manifest's warnings: heavy truncation, examples dropped for having no loss token. */
  warnings?: string[];
  /** Packed layouts: the train split's examples per sequence and fraction of positions holding real tokens. */
  packing?: { examplesPerSequence: number; efficiency: number };
}

/** One segment of training, fromStep → toStep (activities/train.ts). */
export interface TrainSegmentInput {
  cfg: FinetuneConfig;
  /** The run directory (its metrics log); a rank's input leaves it out: the parent of checkpointRoot. */
  runDir?: string;
  checkpointRoot: string;
  dataDir: string;
  fromStep: number;
  toStep: number;
  totalSteps: number;
  /**
   * The workflow's last committed checkpoint. One worker: a hint (the disk is the authority, the newest checkpoint
   * that verifies). A rank of a group: where it starts, exactly (all ranks must load the same one).
   */
  resumeFrom: CheckpointRef | null;
}

/** A rank of a training group: a segment trained in lockstep with the other workers (rank 0 made the NCCL id). */
export interface TrainRankInput extends TrainSegmentInput {
  /** Worker index (0 = the one that made the NCCL id). */
  rank: number;
  nodes: number;
  group: Rendezvous;
}

export interface SegmentResult {
  step: number;
  checkpoint: CheckpointRef;
  firstLoss: number | null;
  lastLoss: number | null;
  tokens: number;
  tokensPerSec: number;
  /** Set when this segment loaded its start from disk (retry, another worker, fallback, group restart), null when it continued in memory. */
  resume: ResumeRecord | null;
}

export interface RendezvousInput {
  /** Workers in the group; one needs no NCCL id (its engine makes its own communicator for its GPUs). */
  nodes: number;
  /** Increases with every (re)start of the group; logged so operators can follow restarts. */
  generation: number;
}

export interface Rendezvous {
  /** NCCL unique id (256 hex digits), null for a single worker. */
  ncclId: string | null;
  /** Where rank 0 runs (for the notes and the logs). */
  host: string;
  pid: number;
  generation: number;
}
