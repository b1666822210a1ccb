// Worker thread of the encode pool: loads its own Rust tokenizer (HF `tokenizers`) from the tokenizer.json text
// and answers {id, texts, starts} with the ids of every text, flattened: ids (Int32Array) and offsets (n + 1), and
// with `starts` each token's first character in its text (code points, parallel to ids).
// Plain .mjs so workers start without a TypeScript loader.
import { parentPort, workerData } from 'node:worker_threads';
import tokenizers from 'tokenizers';

let tok;
let loadError;
try {
  tok = tokenizers.Tokenizer.fromString(workerData.json);
} catch (e) {
  loadError = `${workerData.source ?? 'tokenizer.json'}: cannot load the tokenizer: ${e?.message ?? e}`;
}

parentPort.on('message', async ({ id, texts, starts: withStarts }) => {
  if (loadError) return parentPort.postMessage({ id, error: loadError, load: true });
  try {
    const encs = await tok.encodeBatch(texts, { addSpecialTokens: false });
    const lists = encs.map((e) => e.getIds());
    const offsets = new Int32Array(lists.length + 1);
    for (let i = 0; i < lists.length; i++) offsets[i + 1] = offsets[i] + lists[i].length;
    const ids = new Int32Array(offsets[lists.length]);
    for (let i = 0; i < lists.length; i++) ids.set(lists[i], offsets[i]);
    if (!withStarts) return parentPort.postMessage({ id, ids, offsets }, [ids.buffer, offsets.buffer]);
    const starts = new Int32Array(ids.length);
    encs.forEach((e, i) => e.getOffsets().forEach((o, k) => (starts[offsets[i] + k] = o[0])));
    parentPort.postMessage({ id, ids, offsets, starts }, [ids.buffer, offsets.buffer, starts.buffer]);
  } catch (e) {
    parentPort.postMessage({ id, error: String(e?.message ?? e) });
  }
});
