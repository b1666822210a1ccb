// JSON syntax errors located by line and column (JSON.parse reports a character offset, or nothing at the end).

/** Where JSON.parse of `text` failed, as 1-based {line, column}, or null when its message names no position. */
export function jsonErrorPosition(text: string, e: unknown): { line: number; column: number } | null {
  const msg = (e as Error)?.message ?? '';
  const lc = /line (\d+) column (\d+)/.exec(msg);
  if (lc) return { line: Number(lc[1]), column: Number(lc[2]) };
  const m = /at position (\d+)/.exec(msg);
  const pos = m ? Number(m[1]) : /Unexpected end of JSON input/.test(msg) ? text.length : null;
  if (pos === null) return null;
  const before = text.slice(0, pos);
  const line = before.split('\n').length;
  return { line, column: pos - (before.lastIndexOf('\n') + 1) + 1 };
}

/** `file:line:column: <what JSON.parse said, without its offset>`. */
export function jsonSyntaxMessage(file: string, text: string, e: unknown): string {
  const at = jsonErrorPosition(text, e);
  const what = ((e as Error)?.message ?? String(e)).replace(/\s*(in JSON )?at position \d+( \(line \d+ column \d+\))?/, '').replace(/ in JSON$/, '');
  return `${file}${at ? `:${at.line}:${at.column}` : ''}: not valid JSON: ${what}`;
}
