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
    /**
     * Scheduled retraining: start from the newest model an earlier run of this `name` exported (the series'
     * latest.json under storage.root), falling back to the init above for the first run of the series.
     */
    continueSeries: z.boolean().default(false),
  })
  .strict()
  .superRefine((m, ctx) => {
    if (m.nEmbd % m.nHead !== 0)
      ctx.addIssue({ code: 'custom', path: ['nEmbd'], message: `nEmbd (${m.nEmbd}) must be divisible by nHead (${m.nHead})` });
    if (m.init === 'pretrained' && !m.path)
      ctx.addIssue({ code: 'custom', path: ['path'], message: "init 'pretrained' needs model.path (a local Hugging Face directory)" });
  });
export type ModelConfig = z.infer<typeof ModelConfig>;
