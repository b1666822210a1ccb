// The fingerprint that names a prepared data directory: a hash chain over the input bytes (content, never
// paths or mtimes), the preprocessing settings with defaults applied and non-semantic fields left out, the
// tokenizer.json bytes, and the code version. Bump PREPARE_VERSION whenever the output for the same inputs
// changes (tokenization, splitting, blocking, shard layout).
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { fingerprintOf, type FinetuneConfig, type Source } from '../configs/index.js';
import { badInput, checkAborted } from './errors.js';
import { sourceFiles } from './readers/index.js';

export const PREPARE_VERSION = 'prepare@3'; // 2: Snappy instead of ZSTD; 3: examples without loss tokens dropped, packed position_ids

export interface SourceDigest {
  type: Source['type'];
  /** field/column/name: which part of each record is read. */
  select?: string;
  files: { sha256: string; bytes: number }[];
}

async function hashFile(file: string, signal: AbortSignal | undefined, onBytes: (n: number) => void): Promise<string> {
  const h = createHash('sha256');
  try {
    for await (const b of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
      checkAborted(signal);
      h.update(b);
      onBytes(b.length);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code) throw badInput(file, `cannot read: ${(e as Error).message}`);
    throw e;
  }
  return h.digest('hex');
}

/** Files and total bytes of the configured sources (train, then validation). */
export function listInputs(cfg: FinetuneConfig): { src: Source; files: string[]; bytes: number }[] {
  const out = [];
  for (const src of [cfg.data.train, cfg.data.validation]) {
    if (!src) continue;
    const files = sourceFiles(src);
    let bytes = 0;
    for (const f of files) {
      try {
        bytes += statSync(f).size;
      } catch {
        throw badInput(f, 'no such file');
      }
    }
    out.push({ src, files, bytes });
  }
  return out;
}

export async function digestSources(
  inputs: { src: Source; files: string[] }[],
  signal?: AbortSignal,
  onBytes: (n: number) => void = () => {},
): Promise<SourceDigest[]> {
  const out: SourceDigest[] = [];
  for (const { src, files } of inputs) {
    const digests = [];
    for (const f of files) digests.push({ sha256: await hashFile(f, signal, onBytes), bytes: statSync(f).size });
    const select = 'field' in src ? src.field : 'column' in src ? src.column : 'name' in src ? src.name : undefined;
    out.push({ type: src.type, ...(select ? { select } : {}), files: digests });
  }
  return out;
}

/** The semantic settings: what changes the bytes of the output. `workers` and paths are left out. */
export function semanticSettings(cfg: FinetuneConfig) {
  const p = cfg.preprocess;
  return {
    mode: p.mode,
    blockSize: p.blockSize,
    sequencesPerShard: effectiveSequencesPerShard(p.sequencesPerShard),
    ...(p.mode === 'lines' ? { dropSpeakerLines: p.dropSpeakerLines, pad: p.pad } : {}),
    ...(p.mode === 'instruct' ? { pad: p.pad, instructFields: p.instructFields } : {}),
    ...(p.mode === 'chat' ? { pad: p.pad, chat: p.chat } : {}),
    split: cfg.data.validation ? 'validation-source' : { fraction: cfg.data.validationFraction, seed: cfg.data.splitSeed },
  };
}

/** Shards hold a multiple of 8 sequences (when at least 8), so each deals evenly to 1, 2, 4 or 8 ranks. */
export function effectiveSequencesPerShard(n: number): number {
  return n < 8 ? n : Math.ceil(n / 8) * 8;
}

export function dataFingerprint(sources: SourceDigest[], settings: object, tokenizerSha256: string): string {
  return fingerprintOf(PREPARE_VERSION, { sources }, settings, { tokenizer: tokenizerSha256 });
}
