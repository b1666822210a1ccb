// Worker thread of the encode pool: loads its own Rust tokenizer (HF `tokenizers`) from the tokenizer.json text
// and answers {id, texts} with the ids of every text, flattened: ids (Int32Array) and offsets (n + 1).
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

parentPort.on('message', async ({ id, texts }) => {
  if (loadError) return parentPort.postMessage({ id, error: loadError, load: true });
  try {
    const encs = await tok.encodeBatch(texts, { addSpecialTokens: false });
    const lists = encs.map((e) => e.getIds());
    const offsets = new Int32Array(lists.length + 1);
    for (let i = 0; i < lists.length; i++) offsets[i + 1] = offsets[i] + lists[i].length;
    const ids = new Int32Array(offsets[lists.length]);
    for (let i = 0; i < lists.length; i++) ids.set(lists[i], offsets[i]);
    parentPort.postMessage({ id, ids, offsets }, [ids.buffer, offsets.buffer]);
  } catch (e) {
    parentPort.postMessage({ id, error: String(e?.message ?? e) });
  }
});
