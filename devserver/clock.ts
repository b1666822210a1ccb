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
