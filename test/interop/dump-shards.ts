// Writes what our own reader sees in each shard of a prepared directory (row count, first row, sums), so
// check_shards.py can compare it with what pyarrow and Hugging Face datasets read on a machine that has them.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readManifest, readShard } from '../../datasets/index.js';

const [dir, out] = process.argv.slice(2);
if (!dir || !out) throw new Error('usage: tsx test/interop/dump-shards.ts <prepared-dir> <out.json>');
const manifest = readManifest(dir);
const shards: Record<string, unknown> = {};
for (const [split, s] of Object.entries(manifest.splits)) {
  for (const sh of s.shards) {
    const d = await readShard(join(dir, sh.path));
    let idSum = 0, labelSum = 0, maskSum = 0;
    for (const v of d.inputIds) idSum += v;
    for (const v of d.labels) labelSum += v;
    if (d.attentionMask) for (const v of d.attentionMask) maskSum += v;
    shards[sh.path] = {
      split, nSeq: d.nSeq, blockSize: d.blockSize, idSum, labelSum, maskSum: d.attentionMask ? maskSum : null,
      firstIds: Array.from(d.inputIds.subarray(0, d.blockSize)), firstLabels: Array.from(d.labels.subarray(0, d.blockSize)),
    };
  }
}
writeFileSync(out, JSON.stringify({ manifest, shards }));
