// The real-time clock. Every "now" and every timer of the server goes through a Clock (contract.ts), so a virtual
// clock for time-skipping tests can replace this one without touching the state machines.
import type { Clock } from './contract.js';

const MAX_TIMEOUT = 2 ** 31 - 1; // setTimeout's limit (~24.8 days); longer waits are chained

export class RealClock implements Clock {
  private readonly pending = new Set<NodeJS.Timeout>();

  now(): number {
    return Date.now();
  }

  at(atMs: number, fn: () => void): () => void {
    let handle: NodeJS.Timeout | undefined;
    let cancelled = false;
    const arm = () => {
      const delay = Math.max(0, atMs - Date.now());
      handle = setTimeout(() => {
        this.pending.delete(handle!);
        if (cancelled) return;
        if (Date.now() < atMs) arm();
        else fn();
      }, Math.min(delay, MAX_TIMEOUT));
      this.pending.add(handle);
    };
    arm();
    return () => {
      cancelled = true;
      if (handle) {
        clearTimeout(handle);
        this.pending.delete(handle);
      }
    };
  }

  /** Cancels every timer (server shutdown). */
  stopAll(): void {
    for (const h of this.pending) clearTimeout(h);
    this.pending.clear();
  }
}

interface Pending {
  atMs: number;
  fn: () => void;
  done: boolean;
  real?: NodeJS.Timeout;
}

/**
 * A clock for time-skipping tests (the TestService of @temporalio/testing's createTimeSkipping, as the Java test
 * server's SelfAdvancingTimer): it runs in real time, but whenever time skipping is unlocked and the server is
 * idle — no workflow or activity task queued or running — it jumps to the next pending timer and fires it.
 * Clients lock skipping by default; the testing client unlocks it while it waits for a result or sleeps.
 */
export class SkippingClock implements Clock {
  private offsetMs = 0;
  private locks = 1; // locked until a client unlocks, as in the Java test server
  private readonly pending: Pending[] = [];
  private checkQueued = false;
  busy: () => boolean = () => false;

  now(): number {
    return Date.now() + this.offsetMs;
  }

  at(atMs: number, fn: () => void): () => void {
    const p: Pending = { atMs, fn, done: false };
    this.pending.push(p);
    this.armReal(p);
    this.maybeSkip();
    return () => this.finish(p);
  }

  lock(): void {
    this.locks++;
  }

  unlock(): void {
    if (this.locks === 0) throw new Error('time skipping is not locked');
    this.locks--;
    this.maybeSkip();
  }

  /** Checks, on the next turn, whether time can jump to the next timer. Call after every state change. */
  maybeSkip(): void {
    if (this.checkQueued) return;
    this.checkQueued = true;
    setImmediate(() => {
      this.checkQueued = false;
      if (this.locks > 0) return;
      const next = this.pending.reduce<Pending | undefined>((a, p) => (!a || p.atMs < a.atMs ? p : a), undefined);
      if (!next || this.busy()) return;
      const now = this.now();
      if (next.atMs > now) {
        this.offsetMs += next.atMs - now;
        for (const p of this.pending) this.armReal(p); // real delays shrank
      }
      this.fire(next);
      this.maybeSkip();
    });
  }

  stopAll(): void {
    for (const p of [...this.pending]) this.finish(p);
  }

  private armReal(p: Pending): void {
    if (p.real) clearTimeout(p.real);
    p.real = setTimeout(() => this.fire(p), Math.min(Math.max(0, p.atMs - this.now()), MAX_TIMEOUT));
  }

  private fire(p: Pending): void {
    if (p.done) return;
    if (this.now() < p.atMs) return this.armReal(p);
    this.finish(p);
    p.fn();
    this.maybeSkip();
  }

  private finish(p: Pending): void {
    p.done = true;
    if (p.real) clearTimeout(p.real);
    const i = this.pending.indexOf(p);
    if (i >= 0) this.pending.splice(i, 1);
  }
}
