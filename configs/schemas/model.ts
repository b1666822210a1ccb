// Model architecture and initialisation. Names follow Hugging Face's GPT2Config (n_layer → nLayer, ...).
import { z } from 'zod';

export const ModelConfig = z
  .object({
    /** Architecture family; with `init: 'pretrained'` it is read from the checkpoint's config.json instead. */
    family: z.enum(['gpt2', 'llama', 'gpt_neox', 'gptj']).default('gpt2'),
    /** random: fresh weights from `seed`; pretrained: a local Hugging Face directory; resume: our own model dir. */
    init: z.enum(['random', 'pretrained']).default('random'),
    /** Local Hugging Face model directory (config.json + model.safetensors) when init = pretrained. */
    path: z.string().min(1).optional(),
    nLayer: z.number().int().min(1).default(2),
    nHead: z.number().int().min(1).default(4),
    nEmbd: z.number().int().min(8).default(128),
    /** Maximum sequence length (learned position table size). */
    nPositions: z.number().int().min(2).default(1024),
    vocabSize: z.number().int().min(2).default(50257),
    /** Dropout during training; 0 is the fine-tuning default. */
    dropout: z.number().min(0).max(1).default(0),
    initSeed: z.number().int().nonnegative().default(42),
    // --- llama / gpt_neox / gptj (random init; a pretrained model takes them from its config.json). Unset = the
    // family's Hugging Face default. HF names in native/engine/families.cpp, the one place they are mapped.
    /** llama num_key_value_heads (grouped-query attention); default nHead. */
    nKvHead: z.number().int().min(1).optional(),
    /** llama head_dim; default nEmbd / nHead. */
    headDim: z.number().int().min(1).optional(),
    /** MLP width (intermediate_size / n_inner); default 4 * nEmbd (llama: 8/3 * nEmbd rounded up to 64). */
    intermediateSize: z.number().int().min(1).optional(),
    /** Rotary dims per head (gptj rotary_dim, default min(64, head dim)); llama rotates the whole head. */
    rotaryDim: z.number().int().min(2).optional(),
    /** gpt_neox rotary_pct: fraction of each head that is rotated (default 0.25). */
    rotaryPct: z.number().gt(0).max(1).optional(),
    /** rope_theta / rotary_emb_base (default 10000). */
    ropeTheta: z.number().positive().optional(),
    /** rope_scaling: linear or llama3 (Llama 3.1+); none when unset. */
    ropeScaling: z
      .object({
        type: z.enum(['linear', 'llama3']),
        factor: z.number().positive(),
        lowFreqFactor: z.number().positive().default(1),
        highFreqFactor: z.number().positive().default(4),
        originalMaxPositionEmbeddings: z.number().int().min(1).default(8192),
      })
      .strict()
      .optional(),
    /** Output head shares the token embedding (gpt2: always; llama: default false; gpt_neox/gptj: false). */
    tieWordEmbeddings: z.boolean().optional(),
    /** gpt_neox use_parallel_residual (default true). */
    parallelResidual: z.boolean().optional(),
    /** LayerNorm epsilon (gpt2/gpt_neox/gptj, default 1e-5). */
    layerNormEps: z.number().positive().max(1).optional(),
    /** llama rms_norm_eps (default 1e-6). */
    rmsNormEps: z.number().positive().max(1).optional(),
    /**
     * Scheduled retraining: start from the newest model an earlier run of this `name` exported (the series'
     * latest.json under storage.root), falling back to the init above for the first run of the series.
     */
    continueSeries: z.boolean().default(false),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.nKvHead !== undefined && m.nHead % m.nKvHead !== 0)
      ctx.addIssue({ code: 'custom', path: ['nKvHead'], message: `nHead (${m.nHead}) must be a multiple of nKvHead (${m.nKvHead})` });
    if (m.nKvHead !== undefined && m.nKvHead !== m.nHead && m.family !== 'llama')
      ctx.addIssue({ code: 'custom', path: ['nKvHead'], message: `grouped-query attention (nKvHead < nHead) is a llama option, not ${m.family}` });
    if (m.nEmbd % m.nHead !== 0)
      ctx.addIssue({ code: 'custom', path: ['nEmbd'], message: `nEmbd (${m.nEmbd}) must be divisible by nHead (${m.nHead})` });
    if (m.init === 'pretrained' && !m.path)
      ctx.addIssue({ code: 'custom', path: ['path'], message: "init 'pretrained' needs model.path (a local Hugging Face directory)" });
  });
export type ModelConfig = z.infer<typeof ModelConfig>;
