// Streaming a text file as batches of lines, with bounded memory: the file is read in 1 MiB chunks, decoded as
// strict UTF-8, and split at '\n'. Invalid UTF-8 and NUL bytes (binary data) fail with the file and line.
// A line longer than `maxLineChars` is delivered in pieces (`more` set on all but the last) so one enormous
// line never has to sit in memory whole.
import { createReadStream } from 'node:fs';
import { badInput, checkAborted, DataError } from '../errors.js';
import { safeCut } from '../pieces.js';

export interface LineBatch {
  /** Complete lines without their '\n' (a trailing '\r' is kept; callers that strip remove it). */
  lines: string[];
  /** 1-based line number of lines[0]. */
  firstLine: number;
  /** For a piece of an over-long line: index in `lines` of the pieces that continue into the next entry. */
  more?: Set<number>;
  /** File bytes consumed since the previous batch. */
  bytes: number;
}

/** Offset of the first byte that is not valid UTF-8 in `b`, or -1. Only runs on the error path. */
function firstBadUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    const n = c < 0x80 ? 0 : c >= 0xc2 && c < 0xe0 ? 1 : c >= 0xe0 && c < 0xf0 ? 2 : c >= 0xf0 && c < 0xf5 ? 3 : -1;
    if (n < 0) return i;
    if (i + n >= b.length) return -1; // cut by the chunk end: the next chunk decides
    for (let k = 1; k <= n; k++) if ((b[i + k]! & 0xc0) !== 0x80) return i;
    i += n + 1;
  }
  return -1;
}

function countNewlines(b: Uint8Array, end: number): number {
  let n = 0;
  for (let i = 0; i < end; i++) if (b[i] === 10) n++;
  return n;
}

export async function* readLines(
  file: string,
  opts: { signal?: AbortSignal; maxLineChars?: number; chunkBytes?: number } = {},
): AsyncGenerator<LineBatch> {
  const maxLine = opts.maxLineChars ?? 1 << 20;
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let stream;
  try {
    stream = createReadStream(file, { highWaterMark: opts.chunkBytes ?? 1 << 20 });
  } catch (e) {
    throw badInput(file, `cannot open: ${(e as Error).message}`);
  }
  let carry = ''; // the unfinished last line
  let lineNo = 1; // number of the line `carry` belongs to
  let sawBom = false;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      checkAborted(opts.signal);
      if (chunk.indexOf(0) >= 0) {
        const at = chunk.indexOf(0);
        const utf16 = lineNo === 1 && chunk.length >= 2 && ((chunk[0] === 0xff && chunk[1] === 0xfe) || (chunk[0] === 0xfe && chunk[1] === 0xff));
        throw badInput(
          `${file}:${lineNo + countNewlines(chunk, at)}`,
          utf16 ? 'UTF-16 text: convert the file to UTF-8 (iconv -f UTF-16 -t UTF-8)' : 'NUL byte: this looks like binary data, not text',
        );
      }
      let text: string;
      try {
        text = decoder.decode(chunk, { stream: true });
      } catch {
        const at = firstBadUtf8(chunk);
        const line = lineNo + countNewlines(chunk, at < 0 ? 0 : at);
        throw badInput(`${file}:${line}`, 'invalid UTF-8 (convert the file to UTF-8, e.g. iconv -t UTF-8)');
      }
      if (!sawBom) {
        sawBom = true;
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      }
      const parts = (carry + text).split('\n');
      carry = parts.pop()!;
      const batch: LineBatch = { lines: parts, firstLine: lineNo, bytes: chunk.length };
      lineNo += parts.length;
      // An over-long unfinished line: hand out all but a safe tail now, marked as continuing.
      while (carry.length > maxLine) {
        let cut = safeCut(carry, maxLine >> 1, maxLine);
        if (cut < 0) cut = maxLine;
        (batch.more ??= new Set()).add(batch.lines.length);
        batch.lines.push(carry.slice(0, cut));
        carry = carry.slice(cut);
      }
      if (batch.lines.length) yield batch;
      else if (batch.bytes) yield { lines: [], firstLine: lineNo, bytes: batch.bytes };
    }
    try {
      carry += decoder.decode();
    } catch {
      throw badInput(`${file}:${lineNo}`, 'invalid UTF-8 at the end of the file (truncated multi-byte character)');
    }
    if (carry.length) yield { lines: [carry], firstLine: lineNo, bytes: 0 };
  } catch (e) {
    if (e instanceof DataError) throw e;
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'ENOENT') throw badInput(file, 'no such file');
    if (err.code === 'EISDIR') throw badInput(file, 'is a directory, expected a file');
    throw new DataError('IO', `read failed: ${err.message}`, file, { cause: e });
  } finally {
    stream.destroy();
  }
}
