// Matching: waiting pollers live in memory per (namespace, kind, queue); tasks are rows (store.ts), so nothing
// is lost when a poll is cancelled or the process dies. A poll first tries to take a task; otherwise it waits
// until notify() finds it a task, its deadline is near (answered with the empty response, as the SDK expects),
// or its call is cancelled. A task is only taken for a poller whose call is still open, and taking it (writing
// WorkflowTaskStarted or marking the activity started) is one transaction.
import { status } from '@grpc/grpc-js';
import type { CallContext } from './grpc.js';
import { ServiceError, type Clock } from './contract.js';

const MAX_POLL_MS = 60_000;
const DEADLINE_MARGIN_MS = 1_000;
/** DescribeTaskQueue's add and dispatch rates are tasks per second over this window. */
export const RATE_WINDOW_MS = 30_000;
/** A long poll must leave the server at least this long (Temporal's minimum long-poll timeout). */
export const MIN_LONG_POLL_MS = 2_000;

/**
 * Temporal's check on every long poll of a task queue: a call without a deadline is INVALID_ARGUMENT, one whose
 * deadline is under 2 s away is FAILED_PRECONDITION (both before anything else, as on a real server). Deadlines
 * are wall-clock time, also under time skipping.
 */
export function checkLongPollDeadline(ctx: CallContext): void {
  if (!Number.isFinite(ctx.deadline)) throw new ServiceError(status.INVALID_ARGUMENT, 'Context timeout is not set.');
  if (ctx.deadline - Date.now() < MIN_LONG_POLL_MS) throw new ServiceError(status.FAILED_PRECONDITION, 'Context timeout is too short.');
}

interface Waiter {
  ctx: CallContext;
  take: () => object | null;
  finish: (v: object | null) => void;
}

export class Matching {
  private readonly waiters = new Map<string, Waiter[]>();
  /** Who polled each queue lately (DescribeTaskQueue): key → identity → last poll time. */
  private readonly pollers = new Map<string, Map<string, number>>();
  /** When tasks were added to / handed out from each queue in the last RATE_WINDOW_MS (DescribeTaskQueue stats). */
  private readonly added = new Map<string, number[]>();
  private readonly dispatched = new Map<string, number[]>();
  private closed = false;

  constructor(private readonly clock: Clock, private readonly log: (l: string) => void) {}

  private static key(ns: string, kind: string, queue: string): string {
    return `${ns}\u0000${kind}\u0000${queue}`;
  }

  /** Long poll: resolves with a task, or with `empty` at the deadline / on cancellation / on shutdown. */
  poll(ns: string, kind: 'wf' | 'act', queue: string, ctx: CallContext, take: () => object | null, empty: object, identity = ''): Promise<object> {
    const seen = this.pollers.get(Matching.key(ns, kind, queue)) ?? new Map<string, number>();
    this.pollers.set(Matching.key(ns, kind, queue), seen);
    seen.set(identity, this.clock.now());
    const key = Matching.key(ns, kind, queue);
    const first = this.closed ? null : take();
    if (first) {
      this.count(this.dispatched, key);
      return Promise.resolve(first);
    }
    if (this.closed) return Promise.resolve(empty);
    return new Promise((resolve) => {
      const list = this.waiters.get(key) ?? [];
      this.waiters.set(key, list);
      const waitMs = Math.max(0, Math.min(MAX_POLL_MS, ctx.deadline - this.clock.now() - DEADLINE_MARGIN_MS));
      let cancelTimer = () => {};
      const w: Waiter = {
        ctx,
        take,
        finish: (v) => {
          cancelTimer();
          const i = list.indexOf(w);
          if (i >= 0) list.splice(i, 1);
          resolve(v ?? empty);
        },
      };
      list.push(w);
      cancelTimer = this.clock.at(this.clock.now() + waitMs, () => w.finish(null));
      ctx.onCancel(() => w.finish(null));
    });
  }

  /** Tasks may be available on this queue: hand them to waiting pollers, oldest first. */
  notify(ns: string, kind: 'wf' | 'act', queue: string): void {
    const list = this.waiters.get(Matching.key(ns, kind, queue));
    if (!list) return;
    while (list.length > 0) {
      const w = list[0]!;
      if (w.ctx.cancelled) {
        w.finish(null);
        continue;
      }
      let task: object | null = null;
      try {
        task = w.take();
      } catch (e) {
        this.log(`error: dispatch on ${queue} failed: ${(e as Error).stack}`);
      }
      if (!task) return;
      this.count(this.dispatched, Matching.key(ns, kind, queue));
      w.finish(task);
    }
  }

  /** A task was added to a queue (after its commit); notify() hands it out. */
  taskAdded(ns: string, kind: 'wf' | 'act', queue: string): void {
    this.count(this.added, Matching.key(ns, kind, queue));
  }

  private count(times: Map<string, number[]>, key: string): void {
    const now = this.clock.now();
    const list = times.get(key) ?? [];
    times.set(key, list);
    list.push(now);
    while (list.length > 0 && list[0]! < now - RATE_WINDOW_MS) list.shift();
  }

  /** Tasks per second added to and dispatched from a queue over the last RATE_WINDOW_MS. */
  rates(ns: string, kind: 'wf' | 'act', queue: string): { addRate: number; dispatchRate: number } {
    const key = Matching.key(ns, kind, queue);
    const since = this.clock.now() - RATE_WINDOW_MS;
    const perSecond = (list: number[] | undefined) => (list ?? []).filter((t) => t >= since).length / (RATE_WINDOW_MS / 1000);
    return { addRate: perSecond(this.added.get(key)), dispatchRate: perSecond(this.dispatched.get(key)) };
  }

  /** Notifies every queue that has waiters (e.g. queries released after a workflow task completed). */
  notifyAll(): void {
    for (const key of [...this.waiters.keys()]) {
      const [ns, kind, queue] = key.split('\u0000') as [string, 'wf' | 'act', string];
      this.notify(ns, kind, queue);
    }
  }

  /** Pollers seen on a queue in the last 5 minutes, as DescribeTaskQueue reports them. */
  recentPollers(ns: string, kind: 'wf' | 'act', queue: string): { identity: string; lastAccessMs: number }[] {
    const seen = this.pollers.get(Matching.key(ns, kind, queue));
    const since = this.clock.now() - 5 * 60_000;
    return [...(seen ?? [])].filter(([, t]) => t >= since).map(([identity, lastAccessMs]) => ({ identity, lastAccessMs }));
  }

  /** Server shutdown: answer every waiting poll with its empty response. */
  close(): void {
    this.closed = true;
    for (const list of this.waiters.values()) for (const w of [...list]) w.finish(null);
    this.waiters.clear();
  }
}
