// Every source type, and the shard format read back by an independent Parquet implementation (hyparquet) as
// pyarrow would see it: list<int32> columns of exactly blockSize values.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tableToIPC, tableFromArrays } from 'apache-arrow';
import { parquetMetadata, parquetReadObjects } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import * as pq from 'parquet-wasm';
import { describe, expect, it } from 'vitest';
import { decodeShard, encodeShard, prepareData, readManifest, readShard, verifyShards } from '../../datasets/index.js';
import { config, FIXTURES, readSplit, tmp } from './helpers.js';

const H = 15496, W = 995, EOS = 50256;

describe('sources', () => {
  it('parquet and arrow columns', async () => {
    const d = tmp();
    const table = tableFromArrays({ id: Int32Array.of(1, 2), body: ['Hello world', 'Hello world'] });
    writeFileSync(join(d, 'c.arrow'), tableToIPC(table, 'file'));
    writeFileSync(join(d, 'c.parquet'), pq.writeParquet(pq.Table.fromIPCStream(tableToIPC(table, 'stream'))));
    for (const type of ['arrow', 'parquet'] as const) {
      const cfg = config({ data: { train: { type, path: join(d, `c.${type}`), column: 'body' }, validationFraction: 0 }, preprocess: { blockSize: 3 } });
      const { dir, manifest: m } = await prepareData(cfg);
      expect((await readSplit(dir, m, 'train')).ids, type).toEqual([H, W, EOS, H, W, EOS]);
    }
  });

  it('a JSON array, a directory, a glob, a list of files', async () => {
    const d = tmp();
    mkdirSync(join(d, 'docs'));
    writeFileSync(join(d, 'docs', 'a.txt'), 'Hello world\n');
    writeFileSync(join(d, 'docs', 'b.txt'), 'Hello world');
    writeFileSync(join(d, 'r.json'), JSON.stringify([{ text: 'Hello world' }, { text: 'Hello world' }]));
    const want = [H, W, EOS, H, W, EOS];
    for (const train of [
      { type: 'json' as const, path: join(d, 'r.json') },
      { type: 'text' as const, path: join(d, 'docs') },
      { type: 'text' as const, path: join(d, 'docs', '*.txt') },
      { type: 'text' as const, path: [join(d, 'docs', 'a.txt'), join(d, 'docs', 'b.txt')] },
    ]) {
      const cfg = config({ data: { train, validationFraction: 0 }, preprocess: { blockSize: 3 } });
      const { dir, manifest: m } = await prepareData(cfg);
      expect((await readSplit(dir, m, 'train')).ids, JSON.stringify(train.path)).toEqual(want);
    }
  });

  it('the built-in Moby Dick corpus: one document per chapter, 5% held out', async () => {
    const cfg = config({});
    const { manifest: m } = await prepareData(cfg);
    expect(m.splits.train.examples + m.splits.validation.examples).toBe(139); // contents, etymology, extracts, 135 chapters, epilogue
    expect(m.splits.validation.examples).toBeGreaterThan(0);
    expect(m.splits.train.sequences).toBeGreaterThan(2000);
  });

  it('a separate validation source', async () => {
    const cfg = config({
      data: { train: { type: 'text', path: `${FIXTURES}/hello.txt` }, validation: { type: 'jsonl', path: `${FIXTURES}/hello.jsonl` } },
      preprocess: { blockSize: 2 },
    });
    const { manifest: m } = await prepareData(cfg);
    expect(m.splits.train.examples).toBe(2);
    expect(m.splits.validation.examples).toBe(2);
    expect(m.splits.validation.sequences).toBe(3);
  });
});

describe('shards', () => {
  it('round-trip: readShard gives contiguous Int32Arrays; hyparquet reads the same lists', async () => {
    const nSeq = 37, T = 16;
    const inputIds = Int32Array.from({ length: nSeq * T }, (_, i) => i);
    const labels = inputIds.map((v, i) => (i % 5 === 0 ? -100 : v));
    const attentionMask = Int8Array.from({ length: nSeq * T }, (_, i) => (i % T < 12 ? 1 : 0));
    const bytes = encodeShard({ nSeq, blockSize: T, inputIds, labels, attentionMask });
    const s = decodeShard(bytes);
    expect(s.nSeq).toBe(nSeq);
    expect(s.blockSize).toBe(T);
    expect(s.inputIds).toBeInstanceOf(Int32Array);
    expect(Array.from(s.inputIds)).toEqual(Array.from(inputIds));
    expect(Array.from(s.labels)).toEqual(Array.from(labels));
    expect(Array.from(s.attentionMask!)).toEqual(Array.from(attentionMask));

    const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
    const meta = parquetMetadata(buf);
    expect(Number(meta.num_rows)).toBe(nSeq);
    expect(meta.row_groups.length).toBe(1);
    const names = meta.schema.map((e) => e.name);
    expect(names).toEqual(expect.arrayContaining(['input_ids', 'labels', 'attention_mask']));
    const rows = (await parquetReadObjects({ file: buf, compressors })) as Record<string, number[]>[];
    expect(rows.length).toBe(nSeq);
    rows.forEach((r, i) => {
      expect(Array.from(r.input_ids!)).toEqual(Array.from(inputIds.subarray(i * T, (i + 1) * T)));
      expect(Array.from(r.labels!)).toEqual(Array.from(labels.subarray(i * T, (i + 1) * T)));
    });
    // the physical types pyarrow will map to list<int32> / list<int8>
    const leaf = (n: string) => meta.schema.find((e) => e.name === 'item' && e.type && meta.schema.indexOf(e) > meta.schema.findIndex((x) => x.name === n));
    expect(leaf('input_ids')?.type).toBe('INT32');
  });

  it('a prepared directory: manifest validated, DONE required, shards verified by sha256', async () => {
    const cfg = config({ data: { train: { type: 'text', path: `${FIXTURES}/hello.txt` }, validationFraction: 0 }, preprocess: { blockSize: 2, sequencesPerShard: 1 } });
    const { dir, manifest } = await prepareData(cfg);
    expect(readManifest(dir)).toEqual(manifest);
    expect(manifest.splits.train.shards.map((s) => s.path)).toEqual([
      'data/train-00000-of-00003.parquet',
      'data/train-00001-of-00003.parquet',
      'data/train-00002-of-00003.parquet',
    ]);
    await verifyShards(dir, manifest);
    expect(readFileSync(join(dir, 'tokenizer.json'), 'utf8')).toContain('<|endoftext|>');
    const shard = join(dir, manifest.splits.train.shards[1]!.path);
    expect((await readShard(shard)).inputIds).toEqual(Int32Array.of(EOS, H));
    const b = readFileSync(shard);
    b[b.length >> 1]! ^= 0xff;
    writeFileSync(shard, b);
    await expect(verifyShards(dir, manifest)).rejects.toThrow(/train-00001-of-00003\.parquet: sha256 .* does not match/);
  });
});
