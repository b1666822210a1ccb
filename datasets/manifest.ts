// manifest.json of a prepared data directory: what was made, from what, and how to check it. Written last
// before the DONE marker; readManifest refuses a directory without DONE, so half-written results never load.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { DataError } from './errors.js';

export const MANIFEST_FORMAT = 'durable-finetune/data@1';
export const DONE_MARKER = 'DONE';

export const ShardEntry = z
  .object({
    /** Relative to the data directory, '/'-separated: `data/train-00000-of-00002.parquet`. */
    path: z.string().min(1),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
    bytes: z.number().int().nonnegative(),
    sequences: z.number().int().nonnegative(),
  })
  .strict();
export type ShardEntry = z.infer<typeof ShardEntry>;

export const SplitStats = z
  .object({
    /** Training examples that went in: documents (concat), lines (lines), records (instruct). */
    examples: z.number().int().nonnegative(),
    sequences: z.number().int().nonnegative(),
    /** Real (non-padding) token positions in the sequences. tokens + paddingTokens = sequences * blockSize. */
    tokens: z.number().int().nonnegative(),
    paddingTokens: z.number().int().nonnegative(),
    /** Positions whose label is not -100 (the loss is averaged over these). */
    lossTokens: z.number().int().nonnegative(),
    /** Examples longer than blockSize that were cut (lines, instruct, chat). */
    truncatedExamples: z.number().int().nonnegative(),
    /** Tokens cut from those examples (part of droppedTokens). */
    truncatedTokens: z.number().int().nonnegative().default(0),
    /**
     * Examples dropped because no token of theirs would carry loss (an answer that blockSize cuts off, a
     * conversation without an assistant turn); their tokens are in droppedTokens. Counted in `examples`.
     */
    droppedExamples: z.number().int().nonnegative().default(0),
    /** Tokens that reached no sequence: the concat tail shorter than blockSize, truncated-away tokens, dropped examples. */
    droppedTokens: z.number().int().nonnegative(),
    /** Every token the tokenizer produced for this split, EOS tokens added by the pipeline included. = tokens + droppedTokens. */
    sourceTokens: z.number().int().nonnegative(),
    /** Validation only: sequences taken from the end of the train split (a corpus with no document drawn for validation). */
    heldOutFromTrain: z.number().int().positive().optional(),
    /**
     * Packed layouts only: examples per sequence and the fraction of positions holding real tokens
     * (tokens / (sequences * blockSize)); the rest is padding at the end of a sequence the next example did not fit.
     */
    packing: z.object({ examplesPerSequence: z.number().nonnegative(), efficiency: z.number().min(0).max(1) }).strict().optional(),
    shards: z.array(ShardEntry),
  })
  .strict();
export type SplitStats = z.infer<typeof SplitStats>;

export const Manifest = z
  .object({
    format: z.literal(MANIFEST_FORMAT),
    /** Content fingerprint: input bytes, preprocessing settings, tokenizer, code version. Names the directory. */
    fingerprint: z.string().regex(/^[0-9a-f]{64}$/),
    codeVersion: z.string(),
    createdAt: z.string(),
    mode: z.enum(['lines', 'concat', 'instruct', 'chat']),
    blockSize: z.number().int().min(2),
    /** Whether sequences were padded per example (lines/instruct with pad) or packed. */
    padded: z.boolean(),
    sequencesPerShard: z.number().int().min(1),
    columns: z.array(z.enum(['input_ids', 'labels', 'attention_mask', 'position_ids'])),
    tokenizer: z
      .object({
        name: z.string(),
        sha256: z.string().regex(/^[0-9a-f]{64}$/),
        /** The tokenizer.json used, copied into the data directory. */
        file: z.literal('tokenizer.json'),
        vocabSize: z.number().int().positive(),
      })
      .strict(),
    eosId: z.number().int().nonnegative(),
    padId: z.number().int().nonnegative(),
    /** The fingerprinted inputs: sources with their files' sha256, the settings, the split. */
    inputs: z.record(z.unknown()),
    splits: z.object({ train: SplitStats, validation: SplitStats }).strict(),
    /** What a person should look at before training on this data: heavy truncation, dropped examples. */
    warnings: z.array(z.string()).default([]),
  })
  .strict();
export type Manifest = z.infer<typeof Manifest>;

/** Read and validate `dir/manifest.json`; throws DataError unless the DONE marker is there. */
export function readManifest(dir: string): Manifest {
  if (!existsSync(join(dir, DONE_MARKER)))
    throw new DataError('CORRUPT', `no ${DONE_MARKER} marker: not a completed prepare output; re-run prepare`, dir);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  } catch (e) {
    throw new DataError('CORRUPT', `unreadable manifest.json: ${(e as Error).message}`, dir);
  }
  const r = Manifest.safeParse(raw);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new DataError('CORRUPT', `manifest.json does not match ${MANIFEST_FORMAT}: ${issues}`, dir);
  }
  return r.data;
}

export function sha256File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (b) => h.update(b))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/** Check every shard's sha256 (and the tokenizer's); throws DataError naming the first bad file. */
export async function verifyShards(dir: string, manifest: Manifest): Promise<void> {
  const check = async (rel: string, sha: string) => {
    const file = join(dir, rel);
    let got: string;
    try {
      got = await sha256File(file);
    } catch (e) {
      throw new DataError('CORRUPT', `missing or unreadable: ${(e as Error).message}; re-run prepare`, file);
    }
    if (got !== sha) throw new DataError('CORRUPT', `sha256 ${got} does not match the manifest's ${sha}; re-run prepare`, file);
  };
  for (const split of [manifest.splits.train, manifest.splits.validation])
    for (const s of split.shards) await check(s.path, s.sha256);
  await check(manifest.tokenizer.file, manifest.tokenizer.sha256);
}
