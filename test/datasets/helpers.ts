// Shared helpers of the datasets suites: configs over temporary directories, reading all shards of a split.
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseConfig, type FinetuneConfig, type FinetuneConfigInput } from '../../configs/index.js';
import { readShard, type Manifest } from '../../datasets/index.js';

export const FIXTURES = resolve(import.meta.dirname, '../fixtures/datasets');
export const SHAKESPEARE = resolve(import.meta.dirname, '../../../shared/data/tinyshakespeare.txt');
/** Shakespeare text for tests that need real text but no exact corpus counts: the whole file where ../shared
 *  exists (development machines), else the committed ~100 KB excerpt (a clean CI clone has no ../shared). */
export const SHAKESPEARE_TEXT = existsSync(SHAKESPEARE) ? SHAKESPEARE : join(FIXTURES, 'shakespeare-excerpt.txt');
export const ALPACA_SEED = resolve(import.meta.dirname, '../../../shared/data/alpaca-seed-tasks.json');

export function tmp(prefix = 'ds-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** A validated config whose storage root is a fresh temporary directory. */
export function config(over: FinetuneConfigInput): FinetuneConfig {
  return parseConfig({ storage: { root: tmp() }, ...over });
}

/** Every sequence of a split, concatenated: (nSeq * T) ids, labels and (when present) attention mask. */
export async function readSplit(dir: string, m: Manifest, split: 'train' | 'validation') {
  const ids: number[] = [];
  const labels: number[] = [];
  const mask: number[] = [];
  for (const s of m.splits[split].shards) {
    const sh = await readShard(join(dir, s.path));
    for (const v of sh.inputIds) ids.push(v);
    for (const v of sh.labels) labels.push(v);
    for (const v of sh.attentionMask ?? []) mask.push(v);
  }
  return { ids, labels, mask };
}

export function readText(file: string): string {
  return readFileSync(file, 'utf8');
}
