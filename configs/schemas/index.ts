// FinetuneConfig: the one schema for the whole pipeline. Every stage reads its own section; nothing else
// configures the pipeline. Types are inferred from here, so a field has the same name everywhere.
import { z } from 'zod';
import { DataConfig, PreprocessConfig, TokenizerConfig } from './data.js';
import { ModelConfig } from './model.js';
import { CheckpointConfig, EvaluationConfig, GenerationConfig, ParallelismConfig, TrainingConfig } from './training.js';

export * from './data.js';
export * from './model.js';
export * from './training.js';

export const StorageConfig = z
  .object({
    /** Root for every artifact: prepared data (content-addressed), runs, checkpoints, exported models. */
    root: z.string().min(1).default('./runs'),
  })
  .strict();

export const TemporalConfig = z
  .object({
    /** Default: the connection profile's (TEMPORAL_NAMESPACE, temporal.toml), else 'default'. */
    namespace: z.string().min(1).optional(),
    /** Queue of the workflow and the CPU activities (load, tokenize, shard). */
    taskQueue: z.string().min(1).default('finetune'),
    /** Queue of train/evaluate/generate; served by GPU hosts. */
    gpuTaskQueue: z.string().min(1).default('finetune-gpu'),
    /** Workflow id; default derived from the run name. Re-running with the same id attaches to the run. */
    workflowId: z.string().min(1).optional(),
    /** Heartbeat timeout of the long activities: how soon a dead worker is noticed and its work retried elsewhere. */
    heartbeatTimeoutSeconds: z.number().positive().default(60),
    /** Continue as new (carrying only the last checkpoint and the summary) once the history has this many events. */
    continueAsNewAfterEvents: z.number().int().min(50).default(5000),
    /**
     * Multi-worker training (parallelism.nodes > 1): the task queue of each rank's worker, rank 0 first (one host
     * each; `finetune worker --queues <name>`). Default `<gpuTaskQueue>-rank-<r>`. Listing queues with nodes 1
     * also sends a single worker's training through the rank path (rendezvous + rank activity).
     */
    rankTaskQueues: z.array(z.string().min(1)).min(1).optional(),
    /** Multi-worker training: how many times in a row (no segment completing between) all ranks are restarted together after one fails, before the run fails. */
    maxRestarts: z.number().int().min(0).default(10),
    /**
     * Multi-worker training: how long a rank's activity may wait for its worker to pick it up. The other ranks wait
     * for it inside the communicator setup, so a missing worker fails the group after this and it restarts.
     */
    rankStartTimeoutSeconds: z.number().positive().default(600),
  })
  .strict();

export const FinetuneConfig = z
  .object({
    /** Run name: names the run directory and the default workflow id. */
    name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'letters, digits, . _ - only').default('finetune'),
    data: DataConfig.default({}),
    preprocess: PreprocessConfig.default({}),
    /** Default: the model folder's own tokenizer (model.init 'pretrained'), else GPT-2's. */
    tokenizer: TokenizerConfig.optional(),
    model: ModelConfig.default({}),
    training: TrainingConfig.default({}),
    parallelism: ParallelismConfig.default({}),
    checkpoint: CheckpointConfig.default({}),
    evaluation: EvaluationConfig.default({}),
    generation: GenerationConfig.default({}),
    storage: StorageConfig.default({}),
    temporal: TemporalConfig.default({}),
  })
  .strict()
  .superRefine((c, ctx) => {
    // A pretrained model's context is its config.json's, checked against blockSize at validate and prepare.
    if (c.model.init === 'random' && c.preprocess.blockSize > c.model.nPositions)
      ctx.addIssue({
        code: 'custom',
        path: ['preprocess', 'blockSize'],
        message: `blockSize ${c.preprocess.blockSize} exceeds the model's nPositions ${c.model.nPositions}`,
      });
    const p = c.parallelism;
    const queues = c.temporal.rankTaskQueues;
    if (queues && queues.length !== p.nodes)
      ctx.addIssue({
        code: 'custom',
        path: ['temporal', 'rankTaskQueues'],
        message: `lists ${queues.length} queue${queues.length === 1 ? '' : 's'} but parallelism.nodes is ${p.nodes}: one queue per worker, rank 0 first`,
      });
    if (queues && new Set(queues).size !== queues.length)
      ctx.addIssue({ code: 'custom', path: ['temporal', 'rankTaskQueues'], message: 'every rank needs its own queue (a name is listed twice)' });
    const perWorker = p.devices === 'all' ? null : typeof p.devices === 'number' ? p.devices : p.devices.length;
    const world = perWorker === null ? null : p.nodes * perWorker;
    if (world !== null && world > 1 && c.training.gradAccumSteps % world !== 0)
      ctx.addIssue({
        code: 'custom',
        path: ['training', 'gradAccumSteps'],
        message: `counts micro-batches over all ${world} GPUs (each takes every ${world}th): use a multiple of ${world}, e.g. ${Math.max(1, Math.round(c.training.gradAccumSteps / world)) * world}`,
      });
    if (c.training.backend === 'cpu' && (p.nodes > 1 || (perWorker ?? 1) > 1))
      ctx.addIssue({
        code: 'custom',
        path: ['parallelism', p.nodes > 1 ? 'nodes' : 'devices'],
        message: `the cpu backend trains in one process on one device; nodes ${p.nodes} x devices ${JSON.stringify(p.devices)} needs training.backend 'cuda' (or 'auto' on GPU hosts)`,
      });
    for (const split of ['train', 'validation'] as const) {
      const src = c.data[split];
      if ((c.preprocess.mode === 'instruct' || c.preprocess.mode === 'chat') && src && !RECORD_SOURCES.includes(src.type))
        ctx.addIssue({
          code: 'custom',
          path: ['data', split, 'type'],
          message: `${c.preprocess.mode} mode reads records: data.${split}.type must be 'jsonl', 'json' or 'parquet', not '${src.type}'`,
        });
    }
  })
  .transform((c) => ({
    ...c,
    tokenizer:
      c.tokenizer ??
      (c.model.init === 'pretrained' && c.model.path ? { type: 'huggingface' as const, path: c.model.path } : { type: 'gpt2' as const }),
  }));

/** Sources whose rows are whole records (instruct and chat modes). */
export const RECORD_SOURCES: readonly string[] = ['jsonl', 'json', 'parquet'];

/** The validated config: every default applied. */
export type FinetuneConfig = z.infer<typeof FinetuneConfig>;
/** What a user writes: every field optional where a default exists. */
export type FinetuneConfigInput = z.input<typeof FinetuneConfig>;
