// Parquet shards of fixed-length token sequences.
//
// Schema (one row per training sequence, every list exactly blockSize long):
//   input_ids       list<int32>   (nSeq, T) token ids
//   labels          list<int32>   (nSeq, T) == input_ids except -100 where no loss (padding, prompts); NOT shifted
//   attention_mask  list<int8>    (nSeq, T) 1 = real token, 0 = padding; only in shards of padded modes
//   position_ids    list<int32>   (nSeq, T) position of each token within its example, 0 at an example's first
//                                 token; only in packed shards (several examples per sequence, attention within
//                                 each), as transformers' DataCollatorWithFlattening marks example boundaries
// Written with parquet-wasm (arrow-rs's Parquet writer compiled to WebAssembly) from Arrow arrays built by
// apache-arrow, Snappy-compressed (pyarrow's default; ZSTD compresses token ids ~2x better but cost ~9% of the
// pipeline's CPU in bench/tokenize.ts), one row group per shard, so pyarrow / Hugging Face datasets read them as-is
// and readShard gets each column back as one contiguous Arrow child buffer.
import { readFile } from 'node:fs/promises';
import { Field, Int8, Int32, List, makeData, makeVector, Table, tableFromIPC, tableToIPC, type Data } from 'apache-arrow';
import * as pq from 'parquet-wasm';
import { DataError } from './errors.js';

export const IGNORE_INDEX = -100;

export interface ShardArrays {
  nSeq: number;
  blockSize: number;
  /** (nSeq * blockSize) row-major token ids. */
  inputIds: Int32Array;
  /** (nSeq * blockSize) targets at each position, IGNORE_INDEX where no loss. */
  labels: Int32Array;
  /** (nSeq * blockSize) 1/0, present only when the shard has padding. */
  attentionMask?: Int8Array;
  /** (nSeq * blockSize) position within the example, present only in packed shards. */
  positionIds?: Int32Array;
}

function listColumn<T extends Int32 | Int8>(type: T, values: T['TArray'], nSeq: number, blockSize: number): Data<List<T>> {
  const child = makeData({ type, length: nSeq * blockSize, data: values });
  const valueOffsets = new Int32Array(nSeq + 1);
  for (let i = 0; i <= nSeq; i++) valueOffsets[i] = i * blockSize;
  return makeData({ type: new List(new Field('item', type, false)), length: nSeq, nullCount: 0, valueOffsets, child });
}

/** Encode one shard as Parquet bytes. */
export function encodeShard(s: ShardArrays): Uint8Array {
  const { nSeq, blockSize: T } = s;
  if (s.inputIds.length !== nSeq * T || s.labels.length !== nSeq * T)
    throw new Error(`encodeShard: arrays hold ${s.inputIds.length}/${s.labels.length} values, expected ${nSeq}*${T}`);
  const cols: Record<string, ReturnType<typeof makeVector>> = {
    input_ids: makeVector(listColumn(new Int32(), s.inputIds, nSeq, T)),
    labels: makeVector(listColumn(new Int32(), s.labels, nSeq, T)),
  };
  if (s.attentionMask) cols.attention_mask = makeVector(listColumn(new Int8(), s.attentionMask, nSeq, T));
  if (s.positionIds) cols.position_ids = makeVector(listColumn(new Int32(), s.positionIds, nSeq, T));
  const ipc = tableToIPC(new Table(cols), 'stream');
  const wasmTable = pq.Table.fromIPCStream(ipc);
  const props = new pq.WriterPropertiesBuilder()
    .setCompression(pq.Compression.SNAPPY)
    .setDictionaryEnabled(false)
    .setMaxRowGroupSize(Math.max(1, nSeq))
    .setCreatedBy('durable-finetune datasets')
    .build();
  return pq.writeParquet(wasmTable, props);
}

/** The flat values of a list<T> column whose every row has exactly `blockSize` items; copies only when chunked. */
function flatList<A extends Int32Array | Int8Array>(
  table: Table,
  name: string,
  blockSize: number,
  Ctor: { new (n: number): A },
  file: string,
): A | undefined {
  const col = table.getChild(name);
  if (!col) return undefined;
  const chunks: A[] = [];
  let rows = 0;
  for (const d of col.data) {
    const offs = d.valueOffsets as Int32Array;
    const child = d.children[0];
    if (!child) throw new DataError('CORRUPT', `column ${name} is not a list column`, file);
    // Every row must be exactly blockSize long: offsets[i] = offsets[0] + i*T.
    for (let i = 0; i <= d.length; i++)
      if (offs[i]! - offs[0]! !== i * blockSize)
        throw new DataError('CORRUPT', `column ${name} row ${rows + i - 1} is not ${blockSize} tokens long`, file);
    if (d.nullCount > 0 || child.nullCount > 0) throw new DataError('CORRUPT', `column ${name} has nulls`, file);
    const vals = child.values as A;
    chunks.push(vals.subarray(child.offset + offs[0]!, child.offset + offs[d.length]!) as A);
    rows += d.length;
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Ctor(rows * blockSize);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Decode Parquet bytes of a shard; `blockSize` is taken from the first row. */
export function decodeShard(bytes: Uint8Array, file = 'shard'): ShardArrays {
  let table: Table;
  try {
    // batchSize is only a read hint; a large one keeps typical shards in one Arrow batch (zero-copy below).
    const wasm = pq.readParquet(bytes, { batchSize: 1 << 16 });
    table = tableFromIPC(wasm.intoIPCStream());
  } catch (e) {
    throw new DataError('CORRUPT', `not a readable Parquet shard: ${(e as Error).message ?? e}; re-run prepare`, file);
  }
  const ids = table.getChild('input_ids');
  if (!ids) throw new DataError('CORRUPT', 'no input_ids column; was this written by finetune prepare?', file);
  const nSeq = table.numRows;
  const first = ids.data[0];
  const blockSize = nSeq === 0 || !first ? 0 : first.valueOffsets[1]! - first.valueOffsets[0]!;
  const inputIds = flatList(table, 'input_ids', blockSize, Int32Array, file)!;
  const labels = flatList(table, 'labels', blockSize, Int32Array, file);
  if (!labels) throw new DataError('CORRUPT', 'no labels column', file);
  const attentionMask = flatList(table, 'attention_mask', blockSize, Int8Array, file);
  const positionIds = flatList(table, 'position_ids', blockSize, Int32Array, file);
  return { nSeq, blockSize, inputIds, labels, ...(attentionMask ? { attentionMask } : {}), ...(positionIds ? { positionIds } : {}) };
}

/** Read a shard file: (nSeq * blockSize) contiguous Int32Arrays, zero-copy from the Arrow buffers when possible. */
export async function readShard(file: string): Promise<ShardArrays> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new DataError('IO', `cannot read shard: ${(e as Error).message}`, file);
  }
  return decodeShard(bytes, file);
}
