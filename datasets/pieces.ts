// Cutting text into bounded pieces without changing its tokenization.
//
// Byte-level BPE (GPT-2 and its descendants) first splits text with the pre-tokenizer regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// and merges within each pre-token only. A single ' ' or '\n' that sits between two non-whitespace characters
// always starts a new pre-token (no alternative ends in whitespace, and the whitespace alternatives cannot
// take it because a non-space follows), so cutting just BEFORE it gives the same pre-tokens, hence the same ids,
// as encoding the whole string. We prefer newlines, then spaces; only text with neither in a whole window (binary
// junk, one enormous "word") is cut hard, which may change a token or two at the cut.

const isWs = (c: number) => c === 32 || c === 10 || c === 13 || c === 9 || c === 11 || c === 12;

/** Index in (lo, hi] before which `text` may be cut safely, preferring '\n' over ' '; -1 when there is none. */
export function safeCut(text: string, lo: number, hi: number): number {
  let space = -1;
  for (let i = Math.min(hi, text.length - 2); i > lo; i--) {
    const c = text.charCodeAt(i);
    if ((c === 10 || c === 32) && !isWs(text.charCodeAt(i - 1)) && !isWs(text.charCodeAt(i + 1))) {
      if (c === 10) return i;
      if (space < 0) space = i;
    }
  }
  return space;
}

/** Split `text` into pieces of at most `maxChars` UTF-16 units (except where no safe cut exists). */
export function* safePieces(text: string, maxChars: number): Generator<string> {
  let start = 0;
  while (text.length - start > maxChars) {
    let cut = safeCut(text, start + (maxChars >> 1), start + maxChars);
    if (cut < 0) cut = safeCut(text, start, start + maxChars);
    if (cut < 0) {
      cut = start + maxChars;
      // never split a surrogate pair
      const c = text.charCodeAt(cut - 1);
      if (c >= 0xd800 && c <= 0xdbff) cut--;
    }
    yield text.slice(start, cut);
    start = cut;
  }
  if (start < text.length || text.length === 0) yield text.slice(start);
}
