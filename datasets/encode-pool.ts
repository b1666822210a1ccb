// A pool of worker threads that tokenize batches of texts, one Rust tokenizer per worker, so tokenization runs
// on every core while the main thread reads the corpus and writes shards. Results come back per batch as one
// flat Int32Array plus offsets (transferred, not copied).
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { Tokenizer } from 'tokenizers';
import { DataError } from './errors.js';

export interface Encoded {
  /** All ids of the batch, text after text. */
  ids: Int32Array;
  /** (n + 1) offsets: text i is ids[offsets[i] .. offsets[i+1]). */
  offsets: Int32Array;
  /** When asked for: each token's first character in its text (Unicode code points), parallel to ids. */
  starts?: Int32Array;
}

interface Pending {
  resolve: (e: Encoded) => void;
  reject: (e: Error) => void;
}

// Rust tokenizers built on this thread, by tokenizer.json text: a long-lived worker process that prepares many
// data sets parses each tokenizer once. Its encodeBatch holds no per-call state, so sharing is safe.
const shared = new Map<string, Tokenizer>();

function sharedTokenizer(json: string, source: string): Tokenizer {
  let tok = shared.get(json);
  if (!tok) {
    try {
      tok = Tokenizer.fromString(json);
    } catch (e) {
      throw new DataError('BAD_INPUT', `${source}: cannot load the tokenizer: ${(e as Error).message}`);
    }
    if (shared.size >= 4) shared.delete(shared.keys().next().value!);
    shared.set(json, tok);
  }
  return tok;
}

export class EncodePool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly load: number[] = [];
  private readonly owner = new Map<number, number>();
  private nextId = 0;
  private failed?: Error;
  private inProcess?: Tokenizer;

  /**
   * `threads` 0 = one per core. `threads` -1 = no worker threads: encode on this thread's Rust tokenizer, whose
   * encodeBatch still runs off the event loop on all cores (rayon). For small corpora that saves the workers'
   * start-up (an isolate and a tokenizer parse each), which costs more than it wins below a few MB.
   */
  /** `source`: the tokenizer.json file, named by every load error. */
  constructor(tokenizerJson: string, threads = 0, source = 'tokenizer.json') {
    if (threads < 0) {
      this.inProcess = sharedTokenizer(tokenizerJson, source);
      return;
    }
    const n = threads > 0 ? threads : availableParallelism();
    for (let w = 0; w < n; w++) {
      // A worker holds one batch at a time: cap its heap so GC slack stays constant however long the corpus is.
      const worker = new Worker(new URL('./encode-worker.mjs', import.meta.url), {
        workerData: { json: tokenizerJson, source },
        resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8 },
      });
      worker.on('message', (m: { id: number; ids?: Int32Array; offsets?: Int32Array; starts?: Int32Array; error?: string; load?: boolean }) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        this.load[w]!--;
        if (m.error !== undefined) p.reject(new DataError('BAD_INPUT', m.load ? m.error : `tokenizer failed: ${m.error}`));
        else p.resolve({ ids: m.ids!, offsets: m.offsets!, ...(m.starts ? { starts: m.starts } : {}) });
      });
      worker.on('error', (e) => this.fail(new DataError('IO', `tokenizer worker crashed: ${e.message}`, undefined, { cause: e })));
      this.workers.push(worker);
      this.load.push(0);
    }
  }

  get size(): number {
    return Math.max(1, this.workers.length);
  }

  private fail(e: Error): void {
    this.failed ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  /** Tokenize `texts` on the least-loaded worker; `withStarts`: also each token's start offset (chat loss masks). */
  encode(texts: string[], withStarts = false): Promise<Encoded> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.inProcess) {
      const p = this.encodeHere(this.inProcess, texts, withStarts);
      p.catch(() => {}); // see below
      return p;
    }
    let w = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[w]!) w = i;
    const id = this.nextId++;
    this.load[w]!++;
    this.owner.set(id, w);
    const p = new Promise<Encoded>((resolve, reject) => {
      this.pending.set(id, {
        resolve: (e) => (this.owner.delete(id), resolve(e)),
        reject: (e) => (this.owner.delete(id), reject(e)),
      });
      this.workers[w]!.postMessage({ id, texts, starts: withStarts });
    });
    // A caller that stops early (cancellation, a bad row) leaves batches in flight; close() rejects them, and
    // nobody awaits those: mark them handled so they cannot crash the process as unhandled rejections.
    p.catch(() => {});
    return p;
  }

  private async encodeHere(tok: Tokenizer, texts: string[], withStarts: boolean): Promise<Encoded> {
    let encs;
    try {
      encs = await tok.encodeBatch(texts, { addSpecialTokens: false });
    } catch (e) {
      throw new DataError('BAD_INPUT', `tokenizer failed: ${(e as Error).message}`);
    }
    const lists = encs.map((e) => e.getIds());
    const offsets = new Int32Array(lists.length + 1);
    for (let i = 0; i < lists.length; i++) offsets[i + 1] = offsets[i]! + lists[i]!.length;
    const ids = new Int32Array(offsets[lists.length]!);
    for (let i = 0; i < lists.length; i++) ids.set(lists[i]!, offsets[i]!);
    if (!withStarts) return { ids, offsets };
    const starts = new Int32Array(ids.length);
    encs.forEach((e, i) => e.getOffsets().forEach((o, k) => (starts[offsets[i]! + k] = o[0]!)));
    return { ids, offsets, starts };
  }

  async close(): Promise<void> {
    this.fail(new DataError('CANCELLED', 'encode pool closed'));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
