// Optimisation, parallelism and checkpointing. Defaults are the fine-tuning defaults of nanoGPT/run_clm.
import { z } from 'zod';

export const TrainingConfig = z
  .object({
    /** cpu: the fp32 reference engine; cuda: the GPU engine; auto: cuda when a GPU is present, else cpu. */
    backend: z.enum(['auto', 'cpu', 'cuda']).default('auto'),
    /** Sequences per micro-batch per device (B). */
    microBatchSize: z.number().int().min(1).default(8),
    /**
     * Micro-batches accumulated into one optimizer step, counted over ALL GPUs: with N GPUs each takes every Nth,
     * so it must be a multiple of N, and losses equal one-GPU training with the same value.
     */
    gradAccumSteps: z.number().int().min(1).default(1),
    /** Optimizer steps; 0 = derive from `epochs`. */
    maxSteps: z.number().int().min(0).default(0),
    epochs: z.number().positive().default(1),
    learningRate: z.number().positive().default(3e-4),
    /** Floor of the decayed learning rate, as a fraction of learningRate. */
    minLrRatio: z.number().min(0).max(1).default(0.1),
    warmupSteps: z.number().int().min(0).default(10),
    schedule: z.enum(['cosine', 'linear', 'constant']).default('cosine'),
    weightDecay: z.number().min(0).default(0.1),
    beta1: z.number().min(0).lt(1).default(0.9),
    beta2: z.number().min(0).lt(1).default(0.95),
    eps: z.number().positive().default(1e-8),
    /** Clip gradients to this global L2 norm; 0 disables clipping. */
    gradClip: z.number().min(0).default(1.0),
    /** cuda backend: bf16 compute with fp32 master weights, or fp32 throughout. The cpu backend is always fp32. */
    precision: z.enum(['bf16', 'fp32']).default('bf16'),
    /** cuda backend: recompute activations in backward to save memory. */
    recompute: z.enum(['none', 'gelu', 'gelu-layernorm']).default('none'),
    /** Shuffle the training sequences each epoch with this seed (the data cursor is part of the checkpoint). */
    shuffleSeed: z.number().int().nonnegative().default(0),
    /** Steps per `trainSegment` activity: the unit of heartbeat, resume and continue-as-new. */
    segmentSteps: z.number().int().min(1).default(50),
    /** Stop with a non-retryable divergence error when the loss is non-finite or exceeds this. */
    divergenceLoss: z.number().positive().default(1e4),
    logEverySteps: z.number().int().min(1).default(10),
  })
  .strict();
export type TrainingConfig = z.infer<typeof TrainingConfig>;

export const ParallelismConfig = z
  .object({
    /**
     * GPUs each worker drives (one engine thread per GPU): 'all' = every visible GPU, a count (the first N
     * visible), or a list of CUDA ordinals ([0, 2, 3]). With several workers, give a count or a list: every worker
     * must agree on the world size before its GPUs are visible to the workflow.
     */
    devices: z
      .union([
        z.literal('all'),
        z.number().int().min(1),
        z
          .array(z.number().int().min(0).max(1023))
          .min(1)
          .refine((a) => new Set(a).size === a.length, 'each CUDA ordinal at most once'),
      ])
      .default(1),
    /**
     * Workers (processes, usually one per host), each with `devices` GPUs, joined through an NCCL unique id that
     * the workflow hands from rank 0 to the others (Temporal is the rendezvous). World size = nodes x devices.
     */
    nodes: z.number().int().min(1).default(1),
    /** 0: plain data parallel; 1: optimizer state sharded; 2: + gradients; 3: + parameters. */
    zeroStage: z.union([z.literal(0), z.literal(1), z.literal(2), z.literal(3)]).default(0),
    offload: z
      .object({
        /** Keep optimizer state and fp32 master weights in pinned host memory, updated by a CPU AdamW. */
        optimizer: z.enum(['none', 'cpu']).default('none'),
        /** Overlap the CPU step with the next forward by applying each update one step late (documented drift). */
        delayedUpdate: z.boolean().default(false),
      })
      .strict()
      .default({}),
  })
  .strict()
  .superRefine((p, ctx) => {
    if (p.offload.delayedUpdate && p.offload.optimizer !== 'cpu')
      ctx.addIssue({
        code: 'custom',
        path: ['offload', 'delayedUpdate'],
        message: "delayedUpdate overlaps the CPU optimizer step: it needs offload.optimizer 'cpu'",
      });
    if (p.nodes > 1 && p.devices === 'all')
      ctx.addIssue({
        code: 'custom',
        path: ['devices'],
        message: `with nodes ${p.nodes} give a GPU count or a list of ordinals, not 'all': every worker must agree on the world size`,
      });
  });
export type ParallelismConfig = z.infer<typeof ParallelismConfig>;

export const CheckpointConfig = z
  .object({
    /** Commit a checkpoint every N optimizer steps (0 = only at segment ends). */
    everySteps: z.number().int().min(0).default(50),
    /** ... and at least every N minutes of training (0 = off). */
    everyMinutes: z.number().min(0).default(10),
    /** Committed checkpoints kept; older ones are deleted after a newer one commits. At least 2 for fallback. */
    keepLast: z.number().int().min(2).default(3),
  })
  .strict();

export const EvaluationConfig = z
  .object({
    /** Batches of the validation split to score; 0 = all of it. */
    maxBatches: z.number().int().min(0).default(0),
    batchSize: z.number().int().min(1).default(8),
  })
  .strict();

export const GenerationConfig = z
  .object({
    prompts: z.array(z.string()).default(['Call me Ishmael.']),
    maxNewTokens: z.number().int().min(0).default(64),
    temperature: z.number().min(0).default(0.8),
    /** 0 = no top-k filtering. */
    topK: z.number().int().min(0).default(40),
    topP: z.number().gt(0).max(1).default(0.95),
    seed: z.number().int().nonnegative().default(7),
  })
  .strict();
