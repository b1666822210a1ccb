// What the server's core (devserver/engine.ts, class Engine) offers the modules that apply commands and events to a
// run: activities, children, updates, timers, workflow retries, workflow tasks. They take an EngineHost, never the
// Engine class, so the layers stay one-way:
//   proto, contract, store, clock → run, attributes, matching → host → activities, children, updates,
//   workflow-retry → timers, commands → workflow-tasks → engine → rpc-*, server.
import type { temporal as T } from '@temporalio/proto';
import type { Clock } from './contract.js';
import type { SearchAttributeRegistry } from './attributes.js';
import type { Matching } from './matching.js';
import type { RunState, RunTx } from './run.js';
import type { Store } from './store.js';

export type StartRequest = T.api.workflowservice.v1.IStartWorkflowExecutionRequest;

/** Everything a new run needs; used by start, signal-with-start, continue-as-new and schedules. */
export interface NewRun {
  namespace: string;
  workflowId: string;
  type: string;
  taskQueue: string;
  input?: T.api.common.v1.IPayloads | null;
  header?: T.api.common.v1.IHeader | null;
  memo?: T.api.common.v1.IMemo | null;
  searchAttributes?: T.api.common.v1.ISearchAttributes | null;
  wftTimeoutMs: number;
  runTimeoutMs: number;
  execTimeoutMs: number;
  execExpirationMs: number;
  requestId: string;
  identity: string;
  firstRunId?: string;
  continuedRunId?: string;
  initiator?: number;
  lastCompletionResult?: T.api.common.v1.IPayloads | null;
  continuedFailure?: T.api.failure.v1.IFailure | null;
  backoffMs?: number;
  retryPolicy?: T.api.common.v1.IRetryPolicy | null;
  cronSchedule?: string;
  userMetadata?: T.api.sdk.v1.IUserMetadata | null;
  priority?: T.api.common.v1.IPriority | null;
  signal?: { name: string; input?: T.api.common.v1.IPayloads | null; header?: T.api.common.v1.IHeader | null; identity: string };
  parent?: { namespace: string; workflowId: string; runId: string; initiatedEventId: number };
  attempt?: number;
}

/** A command the server refuses: the workflow task fails with `cause`. */
export class CommandError extends Error {
  constructor(override readonly cause: number, message: string) {
    super(message);
  }
}

export interface PendingQuery {
  id: string;
  ns: string;
  runId: string;
  queue: string;
  query: T.api.query.v1.IWorkflowQuery;
  dispatched: boolean;
  resolve(v: object): void;
  reject(e: Error): void;
}
export type QueryRegistry = Map<string, PendingQuery>;

export interface EngineHost {
  readonly store: Store;
  readonly clock: Clock;
  readonly log: (line: string) => void;
  readonly sa: SearchAttributeRegistry;
  readonly queries: QueryRegistry;
  matching: Matching;
  readonly shuttingDown: boolean;
  loadState(runId: string): RunState | undefined;
  /** Runs `fn` on the run's state in one transaction and saves it. Throws NOT_FOUND for unknown runs. */
  withRun<R>(runId: string, fn: (r: RunTx) => R): R;
  resolveRun(ns: string, workflowId: string, runId?: string | null): string;
  checkChain(runId: string, firstRunId: string | null | undefined): void;
  waitHistory(runId: string, timeoutMs: number, onCancel: (fn: () => void) => void): Promise<void>;
  start(ns: string, req: StartRequest, signal?: NewRun['signal'], parent?: NewRun['parent']): { runId: string; started: boolean };
  createRun(p: NewRun): string;
  requestCancelTx(r: RunTx, reason: string, identity: string): void;
  forceClose(r: RunTx, status: number, event: T.api.history.v1.IHistoryEvent): void;
  terminateTx(r: RunTx, reason: string, identity: string, details?: any): void;
  failWorkflowTask(r: RunTx, how: { timeout: true } | { cause: number; failure?: any; identity?: string }, nextAttempt?: number): void;
  armTimer(id: number, dueMs: number): void;
}
