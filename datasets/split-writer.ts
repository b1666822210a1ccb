// Turns one split's token stream into blockSize sequences and writes them as Parquet shards while they fill,
// so memory holds one shard, never the split. Three ways in:
//   stream(ids)          concat mode: ids run on across sequence boundaries; the final partial block is dropped
//   padded(ids, loss)    one example per sequence, truncated or right-padded
//   packed(ids, loss)    whole examples packed greedily, the rest of a sequence padded when the next won't fit
// labels[t] is the target AT position t (not shifted): == input_ids[t], or -100 on padding and prompt tokens.
// `loss` says which tokens of an example carry loss: a count of leading prompt tokens that do not (lines,
// instruct), or a 0/1 mask (chat: the assistant turns). An example left with no loss token once truncated to
// the room it gets (an answer cut off by blockSize, a conversation without an assistant turn) is dropped and
// counted in droppedExamples: it would train on nothing, and a batch of nothing but such examples has no loss.
// Only tokens after an example's first can carry loss (the model predicts labels[t+1] from position t).
//
// Packed layouts (`packedLayout`) also write position_ids: each token's position within its example, 0 at its
// first token (padding at the end of a sequence counts as one more example), and the first label of each example
// is -100, so that the engine's attention and loss stay within each example: a packed example trains exactly as
// it would alone (the model never predicts one example's first token from the end of the one before).
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ShardEntry, SplitStats } from './manifest.js';
import { encodeShard, IGNORE_INDEX } from './shards.js';

export class SplitWriter {
  private ids: Int32Array; // (S, T) the shard being filled
  private labels: Int32Array; // (S, T)
  private mask?: Int8Array; // (S, T), padded layouts only
  private pos?: Int32Array; // (S, T), packed layouts only
  private packedExamples = 0; // examples placed in packed sequences
  private row = 0; // rows complete in the current shard
  private col = 0; // positions filled in the current row
  private readonly shards: (ShardEntry & { tmpName: string })[] = [];
  readonly stats: Omit<SplitStats, 'shards'> = {
    examples: 0,
    sequences: 0,
    tokens: 0,
    paddingTokens: 0,
    lossTokens: 0,
    truncatedExamples: 0,
    truncatedTokens: 0,
    droppedExamples: 0,
    droppedTokens: 0,
    sourceTokens: 0,
  };

  constructor(
    readonly split: 'train' | 'validation',
    private readonly dir: string, // the attempt's private directory
    private readonly T: number,
    private readonly perShard: number,
    private readonly padId: number,
    withMask: boolean,
    private readonly onSequences: (n: number) => void = () => {},
    private readonly packedLayout = false,
  ) {
    // Buffers grow (doubling) up to one shard: a small corpus never touches the full perShard * T.
    this.cap = Math.min(perShard, 64);
    this.ids = new Int32Array(this.cap * T);
    this.labels = new Int32Array(this.cap * T);
    if (withMask) this.mask = new Int8Array(this.cap * T);
    if (packedLayout) this.pos = new Int32Array(this.cap * T);
    mkdirSync(join(dir, 'data'), { recursive: true });
  }

  private cap: number; // rows the buffers hold now

  /** Make room for row `this.row` (called whenever a row is started). */
  private ensureRow(): void {
    if (this.row === this.perShard) this.flushShard(); // a full shard is written when the next row begins
    if (this.row < this.cap) return;
    this.cap = Math.min(this.perShard, this.cap * 2);
    const grow = <A extends Int32Array | Int8Array>(a: A, C: { new (n: number): A }): A => {
      const b = new C(this.cap * this.T);
      b.set(a);
      return b;
    };
    this.ids = grow(this.ids, Int32Array);
    this.labels = grow(this.labels, Int32Array);
    if (this.mask) this.mask = grow(this.mask, Int8Array);
    if (this.pos) this.pos = grow(this.pos, Int32Array);
  }

  /** concat mode: append ids (with loss) to the running stream. */
  stream(ids: Int32Array): void {
    this.stats.sourceTokens += ids.length;
    let at = 0;
    while (at < ids.length) {
      this.ensureRow();
      const n = Math.min(ids.length - at, this.T - this.col);
      const base = this.row * this.T + this.col;
      this.ids.set(ids.subarray(at, at + n), base);
      this.labels.set(ids.subarray(at, at + n), base);
      this.col += n;
      at += n;
      if (this.col === this.T) this.endRow();
    }
  }

  /** One example in its own sequence (`loss`: see the top of this file). */
  padded(ids: Int32Array, loss: number | Uint8Array): void {
    this.stats.examples++;
    if (this.dropIfNoLoss(ids, loss, this.T)) return;
    this.place(ids, loss);
    this.padRow();
  }

  /** Pack whole examples; start a new sequence when this one does not fit in what is left. */
  packed(ids: Int32Array, loss: number | Uint8Array): void {
    this.stats.examples++;
    const fits = Math.min(ids.length, this.T) <= this.T - this.col;
    if (this.dropIfNoLoss(ids, loss, fits ? this.T - this.col : this.T)) return;
    if (this.col > 0 && !fits) this.padRow();
    this.place(ids, loss);
    if (this.col === this.T) this.endRow();
  }

  /** Drop (and count) an example whose first `room` tokens carry no loss. */
  private dropIfNoLoss(ids: Int32Array, loss: number | Uint8Array, room: number): boolean {
    const n = Math.min(ids.length, room);
    const any = typeof loss === 'number' ? Math.max(loss, 1) < n : loss.subarray(1, n).includes(1);
    if (any) return false;
    this.stats.droppedExamples++;
    this.stats.sourceTokens += ids.length;
    this.stats.droppedTokens += ids.length;
    return true;
  }

  private place(ids: Int32Array, loss: number | Uint8Array): void {
    this.ensureRow();
    this.stats.sourceTokens += ids.length;
    let n = ids.length;
    if (n > this.T - this.col) {
      const cut = n - (this.T - this.col);
      this.stats.truncatedExamples++;
      this.stats.truncatedTokens += cut;
      this.stats.droppedTokens += cut;
      n = this.T - this.col;
    }
    const base = this.row * this.T + this.col;
    this.ids.set(ids.subarray(0, n), base);
    if (typeof loss === 'number') {
      const p = Math.min(loss, n);
      this.labels.fill(IGNORE_INDEX, base, base + p);
      this.labels.set(ids.subarray(p, n), base + p);
    } else {
      for (let k = 0; k < n; k++) this.labels[base + k] = loss[k] ? ids[k]! : IGNORE_INDEX;
    }
    this.mask?.fill(1, base, base + n);
    if (this.pos) {
      for (let k = 0; k < n; k++) this.pos[base + k] = k;
      this.labels[base] = IGNORE_INDEX; // never a target within its example; keeps the previous one from predicting it
      this.packedExamples++;
    }
    this.col += n;
  }

  /** Pad the rest of the current row (no loss) and close it; an empty row stays open. */
  private padRow(): void {
    if (this.col === 0) return;
    this.ensureRow();
    const base = this.row * this.T;
    this.ids.fill(this.padId, base + this.col, base + this.T);
    this.labels.fill(IGNORE_INDEX, base + this.col, base + this.T);
    this.mask?.fill(0, base + this.col, base + this.T);
    if (this.pos) for (let t = this.col; t < this.T; t++) this.pos[base + t] = t - this.col;
    this.stats.paddingTokens += this.T - this.col;
    this.col = this.T;
    this.endRow();
  }

  private endRow(): void {
    const base = this.row * this.T;
    let loss = 0;
    for (let t = 0; t < this.T; t++) if (this.labels[base + t] !== IGNORE_INDEX) loss++;
    this.stats.lossTokens += loss;
    this.stats.sequences++;
    this.row++;
    this.col = 0;
    this.onSequences(1);
  }

  private flushShard(): void {
    if (this.row === 0) return;
    const n = this.row * this.T;
    const bytes = encodeShard({
      nSeq: this.row,
      blockSize: this.T,
      inputIds: this.ids.subarray(0, n),
      labels: this.labels.subarray(0, n),
      ...(this.mask ? { attentionMask: this.mask.subarray(0, n) } : {}),
      ...(this.pos ? { positionIds: this.pos.subarray(0, n) } : {}),
    });
    const tmpName = `data/${this.split}-${String(this.shards.length).padStart(5, '0')}.parquet.partial`;
    const fd = openSync(join(this.dir, tmpName), 'w');
    try {
      writeFileSync(fd, bytes);
      fsyncSync(fd); // durable before the DONE marker can exist
    } finally {
      closeSync(fd);
    }
    this.shards.push({
      tmpName,
      path: '',
      sha256: createHash('sha256').update(bytes).digest('hex'),
      bytes: bytes.length,
      sequences: this.row,
    });
    this.row = 0;
  }

  /** Close the last sequence: concat drops its partial tail; packed layouts pad it. */
  private closeTail(): void {
    if (this.col > 0) {
      if (this.mask) this.padRow();
      else {
        this.stats.droppedTokens += this.col; // the group_texts tail: shorter than blockSize
        this.col = 0;
      }
    }
  }

  /**
   * Move the last `n` complete sequences of this split to `to` (a validation split that got no document: a
   * one-document corpus). Only sequences still in memory (the last shard's, up to sequencesPerShard) can move;
   * returns how many did. Token accounting moves with them.
   */
  moveTailTo(to: SplitWriter, n: number): number {
    this.closeTail();
    const k = Math.max(0, Math.min(n, this.row));
    for (let r = this.row - k; r < this.row; r++) {
      const base = r * this.T;
      const ids = this.ids.subarray(base, base + this.T);
      const labels = this.labels.subarray(base, base + this.T);
      const mask = this.mask?.subarray(base, base + this.T);
      let real = this.T, loss = 0;
      if (mask) real = mask.reduce((a, m) => a + m, 0);
      for (let t = 0; t < this.T; t++) if (labels[t] !== IGNORE_INDEX) loss++;
      this.stats.sequences--;
      this.stats.lossTokens -= loss;
      this.stats.paddingTokens -= this.T - real;
      this.stats.sourceTokens -= real;
      to.ensureRow();
      const dst = to.row * this.T;
      to.ids.set(ids, dst);
      to.labels.set(labels, dst);
      if (mask) to.mask?.set(mask, dst);
      to.stats.paddingTokens += this.T - real;
      to.stats.sourceTokens += real;
      to.col = this.T;
      to.endRow();
    }
    this.row -= k;
    this.onSequences(-k); // counted again by `to`
    return k;
  }

  /** Close the split: concat drops its partial tail; packed layouts pad their last sequence. Names the shards. */
  finish(): SplitStats {
    this.closeTail();
    this.flushShard();
    const total = this.shards.length;
    const shards = this.shards.map((s, i) => {
      const path = `data/${this.split}-${String(i).padStart(5, '0')}-of-${String(total).padStart(5, '0')}.parquet`;
      renameSync(join(this.dir, s.tmpName), join(this.dir, path));
      return { path, sha256: s.sha256, bytes: s.bytes, sequences: s.sequences };
    });
    this.stats.tokens = this.stats.sequences * this.T - this.stats.paddingTokens;
    const packing = this.pos
      ? {
          examplesPerSequence: this.stats.sequences ? Math.round((1000 * this.packedExamples) / this.stats.sequences) / 1000 : 0,
          efficiency: this.stats.sequences ? Math.round((10000 * this.stats.tokens) / (this.stats.sequences * this.T)) / 10000 : 0,
        }
      : undefined;
    return { ...this.stats, ...(packing ? { packing } : {}), shards };
  }
}
