// A pool of worker threads that tokenize batches of texts, one Rust tokenizer per worker, so tokenization runs
// on every core while the main thread reads the corpus and writes shards. Results come back per batch as one
// flat Int32Array plus offsets (transferred, not copied).
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { DataError } from './errors.js';

export interface Encoded {
  /** All ids of the batch, text after text. */
  ids: Int32Array;
  /** (n + 1) offsets: text i is ids[offsets[i] .. offsets[i+1]). */
  offsets: Int32Array;
}

interface Pending {
  resolve: (e: Encoded) => void;
  reject: (e: Error) => void;
}

export class EncodePool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  private readonly load: number[] = [];
  private readonly owner = new Map<number, number>();
  private nextId = 0;
  private failed?: Error;

  /** `threads` 0 = one per core. */
  constructor(tokenizerJson: string, threads = 0) {
    const n = threads > 0 ? threads : availableParallelism();
    for (let w = 0; w < n; w++) {
      // A worker holds one batch at a time: cap its heap so GC slack stays constant however long the corpus is.
      const worker = new Worker(new URL('./encode-worker.mjs', import.meta.url), {
        workerData: { json: tokenizerJson },
        resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 8 },
      });
      worker.on('message', (m: { id: number; ids?: Int32Array; offsets?: Int32Array; error?: string }) => {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        this.load[w]!--;
        if (m.error !== undefined) p.reject(new DataError('BAD_INPUT', `tokenizer failed: ${m.error}`));
        else p.resolve({ ids: m.ids!, offsets: m.offsets! });
      });
      worker.on('error', (e) => this.fail(new DataError('IO', `tokenizer worker crashed: ${e.message}`, undefined, { cause: e })));
      this.workers.push(worker);
      this.load.push(0);
    }
  }

  get size(): number {
    return this.workers.length;
  }

  private fail(e: Error): void {
    this.failed ??= e;
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  /** Tokenize `texts` on the least-loaded worker. */
  encode(texts: string[]): Promise<Encoded> {
    if (this.failed) return Promise.reject(this.failed);
    let w = 0;
    for (let i = 1; i < this.load.length; i++) if (this.load[i]! < this.load[w]!) w = i;
    const id = this.nextId++;
    this.load[w]!++;
    this.owner.set(id, w);
    return new Promise<Encoded>((resolve, reject) => {
      this.pending.set(id, {
        resolve: (e) => (this.owner.delete(id), resolve(e)),
        reject: (e) => (this.owner.delete(id), reject(e)),
      });
      this.workers[w]!.postMessage({ id, texts });
    });
  }

  async close(): Promise<void> {
    this.fail(new DataError('CANCELLED', 'encode pool closed'));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
