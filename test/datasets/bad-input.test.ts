// Bad input fails with a DataError('BAD_INPUT') naming the file and line or row, and leaves nothing behind that
// looks complete (no output directory, no temporary directory).
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tableToIPC, tableFromArrays } from 'apache-arrow';
import * as pq from 'parquet-wasm';
import { describe, expect, it } from 'vitest';
import type { FinetuneConfigInput } from '../../configs/index.js';
import { DataError, prepareData } from '../../datasets/index.js';
import { config, tmp } from './helpers.js';

async function expectBadInput(over: FinetuneConfigInput, message: RegExp) {
  const cfg = config({ ...over, data: { validationFraction: 0, ...over.data } });
  const err = await prepareData(cfg).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(DataError);
  expect((err as DataError).code).toBe('BAD_INPUT');
  expect((err as DataError).retryable).toBe(false);
  expect((err as Error).message).toMatch(message);
  const dataDir = join(cfg.storage.root, 'data');
  expect(existsSync(dataDir) ? readdirSync(dataDir) : []).toEqual([]);
}

function file(name: string, content: string | Uint8Array): string {
  const p = join(tmp(), name);
  writeFileSync(p, content);
  return p;
}

describe('bad input', () => {
  it('a missing file', async () => {
    await expectBadInput({ data: { train: { type: 'text', path: '/nonexistent/corpus.txt' } } }, /\/nonexistent\/corpus\.txt: no such file/);
  });

  it('an empty corpus, and one too small for a single sequence', async () => {
    const empty = file('empty.txt', '\n\n   \n');
    await expectBadInput({ data: { train: { type: 'text', path: empty } } }, /empty\.txt: empty corpus: no training examples/);
    const small = file('small.txt', 'Hello world\n');
    await expectBadInput({ data: { train: { type: 'text', path: small } }, preprocess: { blockSize: 64 } }, /small\.txt: empty corpus: 1 examples, 3 tokens, not enough for one sequence of 64/);
  });

  it('invalid UTF-8, named by line', async () => {
    const p = file('latin1.txt', Buffer.concat([Buffer.from('line one\nline two\ncaf'), Buffer.from([0xe9]), Buffer.from(' au lait\n')]));
    await expectBadInput({ data: { train: { type: 'text', path: p } } }, /latin1\.txt:3: invalid UTF-8/);
  });

  it('binary data, named by line', async () => {
    const p = file('blob.txt', Buffer.concat([Buffer.from('ok\n'), Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 0, 1])]));
    await expectBadInput({ data: { train: { type: 'text', path: p } } }, /blob\.txt:2: NUL byte: this looks like binary data/);
    const u16 = file('utf16.txt', Buffer.from('\ufeffHello\n', 'utf16le'));
    await expectBadInput({ data: { train: { type: 'text', path: u16 } } }, /utf16\.txt:1: UTF-16 text: convert the file to UTF-8/);
  });

  it('a bad JSONL row and a missing field, named by line', async () => {
    const bad = file('bad.jsonl', '{"text": "fine"}\n{"text": "broken\n');
    await expectBadInput({ data: { train: { type: 'jsonl', path: bad } } }, /bad\.jsonl:2: not a JSON object/);
    const missing = file('missing.jsonl', '{"text": "fine"}\n\n{"body": "no text field"}\n');
    await expectBadInput({ data: { train: { type: 'jsonl', path: missing } } }, /missing\.jsonl:3: no field 'text' \(fields: body\)/);
    const notStr = file('num.jsonl', '{"text": 5}\n');
    await expectBadInput({ data: { train: { type: 'jsonl', path: notStr } } }, /num\.jsonl:1: field 'text' is number/);
  });

  it('instruct records without their fields', async () => {
    const p = file('alpaca.jsonl', '{"instruction": "a", "output": "b"}\n{"instruction": "a"}\n');
    await expectBadInput({ data: { train: { type: 'jsonl', path: p } }, preprocess: { mode: 'instruct' } }, /alpaca\.jsonl:2: no field 'output'/);
  });

  it('a missing CSV, Parquet or Arrow column', async () => {
    const csv = file('t.csv', 'a,b\n1,2\n');
    await expectBadInput({ data: { train: { type: 'csv', path: csv, column: 'text' } } }, /t\.csv:1: no column 'text' in the header \(columns: a, b\)/);
    const table = tableFromArrays({ body: ['x'] });
    const parquet = file('t.parquet', pq.writeParquet(pq.Table.fromIPCStream(tableToIPC(table, 'stream'))));
    await expectBadInput({ data: { train: { type: 'parquet', path: parquet, column: 'text' } } }, /t\.parquet: no column 'text' \(columns: body\)/);
    const arrow = file('t.arrow', tableToIPC(table, 'file'));
    await expectBadInput({ data: { train: { type: 'arrow', path: arrow, column: 'text' } } }, /t\.arrow: no column 'text' \(columns: body\)/);
    const notParquet = file('fake.parquet', 'this is not parquet');
    await expectBadInput({ data: { train: { type: 'parquet', path: notParquet, column: 'text' } } }, /fake\.parquet: not a readable Parquet file/);
  });

  it('a block size the model cannot take', async () => {
    const cfg = config({ model: { nPositions: 1024 } });
    const err = await prepareData({ ...cfg, preprocess: { ...cfg.preprocess, blockSize: 2048 } }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as DataError).code).toBe('BAD_INPUT');
    expect((err as Error).message).toMatch(/preprocess\.blockSize: blockSize 2048 exceeds the model's nPositions 1024/);
  });

  it('cancellation: AbortSignal stops the run mid-tokenization and leaves nothing (in-process and worker paths)', async () => {
    for (const workers of [0, 2]) {
      const cfg = config({ preprocess: { workers } });
      const ac = new AbortController();
      const err = await prepareData(cfg, {
        signal: ac.signal,
        // abort once batches are in flight: their rejections must not escape as unhandled
        onProgress: (p) => p.stage === 'tokenize' && p.bytes > 0 && ac.abort(new Error('stop now')),
      }).catch((e: unknown) => e);
      expect((err as DataError).code).toBe('CANCELLED');
      expect((err as Error).message).toMatch(/stop now/);
      expect(readdirSync(join(cfg.storage.root, 'data'))).toEqual([]);
    }
  });
});
