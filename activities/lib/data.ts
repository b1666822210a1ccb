// Reading prepared shards into the engine's buffers (whole Int32Arrays from datasets/readShard, no per-token copies).
import { join } from 'node:path';
import { readManifest, readShard } from '../../datasets/index.js';
import type { ShardData } from '../../native/index.js';

export async function loadSplit(dataDir: string, split: 'train' | 'validation', signal?: AbortSignal): Promise<ShardData[]> {
  const manifest = await readManifest(dataDir);
  const out: ShardData[] = [];
  for (const s of manifest.splits[split].shards) {
    signal?.throwIfAborted();
    out.push(await readShard(join(dataDir, s.path)));
  }
  return out;
}
