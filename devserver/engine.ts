// The core of the server: loads a run's mutable state into a RunTx inside one SQLite transaction, applies a
// transition, saves it, and after the commit wakes pollers, timers and history long polls. Holds the
// run-lifecycle transitions that several RPCs share: start (ID reuse/conflict policies, request-ID dedupe),
// signal, cancel request, terminate, workflow-task timeout/failure, and every persistent timer.
import type { temporal as T } from '@temporalio/proto';
import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { ServiceError, type Clock } from './contract.js';
import type { Store } from './store.js';
import { RunTx, type RunState } from './run.js';
import { SearchAttributeRegistry, checkSearchAttributeLimits } from './attributes.js';
import type { Matching } from './matching.js';
import { api, ET, WS, WftFailedCause, TimeoutType, dur, ms, b64, checkBlob, checkMemo, notFound, invalid } from './proto.js';
import { googleStatus } from './proto.js';
import * as children from './children.js';
import { onTimer } from './timers.js';
import type { EngineHost, NewRun, QueryRegistry, StartRequest } from './host.js';

export type { NewRun, StartRequest } from './host.js';

type ClosedListener = (e: { namespace: string; workflowId: string; runId: string; status: number }) => void;

const DEFAULT_WFT_TIMEOUT_MS = 10_000;
const MAX_WFT_TIMEOUT_MS = 120_000;
/** Temporal's limit.maxIDLength: workflow IDs longer than this are refused. */
const MAX_ID_LENGTH = 1000;
const CLOSED_STATUSES_RETRYABLE = new Set([WS.WORKFLOW_EXECUTION_STATUS_FAILED, WS.WORKFLOW_EXECUTION_STATUS_CANCELED, WS.WORKFLOW_EXECUTION_STATUS_TERMINATED, WS.WORKFLOW_EXECUTION_STATUS_TIMED_OUT]);


export class Engine implements EngineHost {
  readonly sa: SearchAttributeRegistry;
  readonly queries: QueryRegistry = new Map();
  matching!: Matching;
  private readonly closedListeners: ClosedListener[] = [];
  private readonly historyWaiters = new Map<string, Set<() => void>>();
  private readonly timerCancels = new Map<number, () => void>();
  private stopped = false;

  constructor(
    readonly store: Store,
    readonly clock: Clock,
    readonly log: (line: string) => void,
  ) {
    this.sa = new SearchAttributeRegistry(store);
  }

  // ─── run transactions ────────────────────────────────────────────────────────────────────────────────

  loadState(runId: string): RunState | undefined {
    const row = this.store.getRun(runId);
    return row ? (JSON.parse(row.state) as RunState) : undefined;
  }

  private saveState(s: RunState): void {
    s.stateTransitions = (s.stateTransitions ?? 0) + 1;
    this.store.updateRun({
      run_id: s.runId, workflow_type: s.type, task_queue: s.taskQueue, status: s.status, close_ms: s.closeMs,
      history_length: s.nextEventId - 1, search_json: JSON.stringify(s.searchJson), state: JSON.stringify(s),
    });
  }

  private newTx(s: RunState): RunTx {
    return new RunTx(s, this.store, {
      wakeQueue: (ns, kind, queue) => {
        this.matching.taskAdded(ns, kind, queue);
        this.matching.notify(ns, kind, queue);
      },
      armTimer: (id, due) => this.armTimer(id, due),
      historyChanged: (runId) => this.historyChanged(runId),
    }, this.clock.now());
  }

  /** Runs `fn` on the run's state in one transaction and saves it. Throws NOT_FOUND for unknown runs. */
  withRun<T>(runId: string, fn: (r: RunTx) => T): T {
    return this.store.tx(() => {
      const s = this.loadState(runId);
      if (!s) throw notFound(`workflow execution not found for run ${runId}`);
      const r = this.newTx(s);
      const wasOpen = r.open;
      const before = { events: s.nextEventId - 1, bytes: s.historySize };
      const out = fn(r);
      if (r.open) this.checkHistoryLimits(r, before);
      this.saveState(s);
      if (wasOpen && !r.open) {
        children.onClosed(this, s);
        this.afterClose(s);
      }
      return out;
    });
  }

  /**
   * Temporal's history limits: a warning in the log at 10,240 events / 10 MB, and termination at 51,200 events /
   * 50 MB, so a workflow that forgets to continue-as-new fails here as it would in production.
   */
  historyLimits = { warnEvents: 10_240, errorEvents: 51_200, warnBytes: 10 * 1024 * 1024, errorBytes: 50 * 1024 * 1024 };

  private checkHistoryLimits(r: RunTx, before: { events: number; bytes: number }): void {
    const s = r.s;
    const events = s.nextEventId - 1;
    const l = this.historyLimits;
    if (events > l.errorEvents || s.historySize > l.errorBytes) {
      const what = events > l.errorEvents ? 'count' : 'size';
      this.log(`error: ${s.workflowId}/${s.runId}: history ${what} exceeds the limit (${events} events, ${s.historySize} bytes): terminated`);
      this.terminateTx(r, `Workflow history ${what} exceeds limit.`, 'history-service');
    } else if ((before.events < l.warnEvents && events >= l.warnEvents) || (before.bytes < l.warnBytes && s.historySize >= l.warnBytes)) {
      this.log(`warn: ${s.workflowId}/${s.runId}: history has ${events} events / ${s.historySize} bytes; continue-as-new before ${l.errorEvents} events / ${l.errorBytes} bytes or the run is terminated`);
    }
  }

  /** Resolves workflow ID (+ optional run ID) to a run ID: empty run ID means the latest run. */
  resolveRun(ns: string, workflowId: string, runId?: string | null): string {
    if (!workflowId) throw invalid('WorkflowId is not set on request.');
    if (runId) {
      const row = this.store.getRun(runId);
      if (!row || row.namespace !== ns || row.workflow_id !== workflowId) throw notFound(`workflow execution not found for workflow ID "${workflowId}" and run ID "${runId}"`);
      return runId;
    }
    const current = this.store.currentRunId(ns, workflowId);
    if (!current) throw notFound(`workflow not found for ID: ${workflowId}`);
    return current;
  }

  /** Checks `first_execution_run_id` (handles from start() send it): the run must belong to that chain. */
  checkChain(runId: string, firstRunId: string | null | undefined): void {
    if (!firstRunId) return;
    const s = this.loadState(runId);
    if (s && s.firstRunId !== firstRunId) throw notFound(`workflow execution not found for first run ${firstRunId}`);
  }

  private afterClose(s: RunState): void {
    const e = { namespace: s.namespace, workflowId: s.workflowId, runId: s.runId, status: s.status };
    this.store.afterCommit(() => {
      for (const l of this.closedListeners) {
        try {
          l(e);
        } catch (err) {
          this.log(`error: onWorkflowClosed listener threw: ${(err as Error).message}`);
        }
      }
    });
  }

  onWorkflowClosed(l: ClosedListener): void {
    this.closedListeners.push(l);
  }

  // ─── history long polls ──────────────────────────────────────────────────────────────────────────────

  private historyChanged(runId: string): void {
    const set = this.historyWaiters.get(runId);
    if (!set) return;
    this.historyWaiters.delete(runId);
    for (const fn of set) fn();
  }

  /**
   * Set when the server shuts down: long polls answer at once with what they have (status OK), because a
   * retryable error would make the TS client retry on a timer after its channel was closed, and crash.
   */
  get shuttingDown(): boolean {
    return this.stopped;
  }

  /** Resolves when the run's history grows, after `timeoutMs`, or at shutdown. */
  waitHistory(runId: string, timeoutMs: number, onCancel: (fn: () => void) => void): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      let set = this.historyWaiters.get(runId);
      if (!set) this.historyWaiters.set(runId, (set = new Set()));
      const done = () => {
        cancel();
        set!.delete(done);
        resolve();
      };
      set.add(done);
      // Real time: this is the caller's wait, not workflow time (a time-skipping clock must not jump for it).
      const timer = setTimeout(done, timeoutMs);
      const cancel = () => clearTimeout(timer);
      onCancel(done);
    });
  }

  // ─── starting runs ───────────────────────────────────────────────────────────────────────────────────

  /** StartWorkflowExecution semantics. Returns the run ID and whether a new run was started. */
  start(ns: string, req: StartRequest, signal?: NewRun['signal'], parent?: NewRun['parent']): { runId: string; started: boolean } {
    const workflowId = req.workflowId ?? '';
    if (!workflowId) throw invalid('WorkflowId is not set on request.');
    if (!req.workflowType?.name) throw invalid('WorkflowType is not set on request.');
    if (workflowId.length > MAX_ID_LENGTH) throw invalid('WorkflowId exceeds maximum allowed length');
    if (!req.taskQueue?.name) throw invalid('missing task queue name');
    if (req.cronSchedule) throw invalid('cron_schedule is not supported by the finetune dev server; create a schedule instead (client.schedule.create)');
    checkSearchAttributeLimits(req.searchAttributes?.indexedFields);
    checkBlob('input', req.input?.payloads, this.log);
    if (signal) checkBlob('signal input', signal.input?.payloads, this.log);
    checkMemo('memo', req.memo, this.log);
    const execTimeoutMs = ms(req.workflowExecutionTimeout);
    let runTimeoutMs = ms(req.workflowRunTimeout);
    for (const [field, value] of [['WorkflowExecutionTimeoutSeconds', execTimeoutMs], ['WorkflowRunTimeoutSeconds', runTimeoutMs], ['WorkflowTaskTimeoutSeconds', ms(req.workflowTaskTimeout)]] as const) {
      if (value < 0) throw invalid(`An invalid ${field} is set on request. cause: negative duration`);
    }
    if (execTimeoutMs > 0 && (runTimeoutMs === 0 || runTimeoutMs > execTimeoutMs)) runTimeoutMs = execTimeoutMs;
    const requestId = req.requestId || randomUUID();

    return this.store.tx(() => {
      const currentId = this.store.currentRunId(ns, workflowId);
      const current = currentId ? this.loadState(currentId) : undefined;
      if (current) {
        if (current.startRequestId === requestId) return { runId: current.runId, started: true };
        if (signal && current.status === WS.WORKFLOW_EXECUTION_STATUS_RUNNING && current.requestIds.includes(requestId)) {
          return { runId: current.runId, started: false };
        }
        const running = current.status === WS.WORKFLOW_EXECUTION_STATUS_RUNNING;
        const reuse = req.workflowIdReusePolicy ?? 0;
        let conflict = req.workflowIdConflictPolicy ?? 0;
        if (conflict === 0) conflict = signal ? 2 : 1;
        if (reuse === 4) conflict = 3; // deprecated TERMINATE_IF_RUNNING
        if (running) {
          if (conflict === 2) {
            if (signal) this.signalTx(current.runId, signal.name, signal.input, signal.header, signal.identity, requestId);
            return { runId: current.runId, started: false };
          }
          if (conflict === 1) throw alreadyStarted(workflowId, current.runId, current.startRequestId);
          this.withRun(current.runId, (r) => this.terminateTx(r, 'terminated by a new start (conflict policy TERMINATE_EXISTING)', req.identity ?? ''));
        } else if (reuse === 3 || (reuse === 2 && !CLOSED_STATUSES_RETRYABLE.has(current.status))) {
          throw alreadyStarted(workflowId, current.runId, current.startRequestId);
        }
      }
      const wftTimeoutMs = clampWft(ms(req.workflowTaskTimeout), runTimeoutMs);
      const now = this.clock.now();
      const backoffMs = signal ? 0 : ms(req.workflowStartDelay);
      return {
        runId: this.createRun({
          namespace: ns, workflowId, type: req.workflowType!.name!, taskQueue: req.taskQueue!.name!, input: req.input,
          header: req.header, memo: req.memo, searchAttributes: req.searchAttributes, wftTimeoutMs, runTimeoutMs,
          execTimeoutMs, execExpirationMs: execTimeoutMs > 0 ? now + execTimeoutMs : 0, requestId,
          identity: req.identity ?? '', backoffMs, retryPolicy: req.retryPolicy, cronSchedule: req.cronSchedule ?? '',
          userMetadata: req.userMetadata, priority: req.priority, signal, parent,
        }),
        started: true,
      };
    });
  }

  /** Creates a run (inside the caller's transaction): started event, first workflow task, run timeouts. */
  createRun(p: NewRun): string {
    const now = this.clock.now();
    const runId = randomUUID();
    const { encoded: sa, json } = this.sa.merge(p.namespace, null, p.searchAttributes?.indexedFields);
    const backoffMs = p.backoffMs ?? 0;
    const s: RunState = {
      namespace: p.namespace, workflowId: p.workflowId, runId, firstRunId: p.firstRunId ?? runId, type: p.type,
      taskQueue: p.taskQueue, status: WS.WORKFLOW_EXECUTION_STATUS_RUNNING, nextEventId: 1, startMs: now,
      executionMs: now + backoffMs, closeMs: null, wftTimeoutMs: p.wftTimeoutMs, runTimeoutMs: p.runTimeoutMs,
      execTimeoutMs: p.execTimeoutMs, execExpirationMs: p.execExpirationMs, wft: null, lastCompletedStartedEventId: 0,
      buffered: [], activities: {}, timers: {}, cancelRequested: false,
      memo: p.memo?.fields && Object.keys(p.memo.fields).length ? b64(api.common.v1.Memo, p.memo) : null,
      searchAttributes: sa, searchJson: json, historySize: 0, requestIds: [p.requestId], startRequestId: p.requestId,
      closeEventId: 0, newRunId: null, parent: p.parent,
      root: p.parent ? (this.loadState(p.parent.runId)?.root ?? { workflowId: p.parent.workflowId, runId: p.parent.runId }) : undefined,
    };
    this.store.insertRun({
      run_id: runId, namespace: p.namespace, workflow_id: p.workflowId, workflow_type: p.type, task_queue: p.taskQueue,
      status: s.status, start_ms: now, execution_ms: s.executionMs, close_ms: null, history_length: 0,
      search_json: JSON.stringify(json), state: '{}',
    });
    this.store.setCurrent(p.namespace, p.workflowId, runId);
    const r = this.newTx(s);
    r.append({
      eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED,
      workflowExecutionStartedEventAttributes: {
        workflowType: { name: p.type }, taskQueue: { name: p.taskQueue, kind: 1 }, input: p.input, header: p.header,
        workflowExecutionTimeout: dur(p.execTimeoutMs), workflowRunTimeout: dur(p.runTimeoutMs),
        workflowTaskTimeout: dur(p.wftTimeoutMs), originalExecutionRunId: runId, firstExecutionRunId: s.firstRunId,
        continuedExecutionRunId: p.continuedRunId ?? '', initiator: p.initiator ?? 0, continuedFailure: p.continuedFailure,
        lastCompletionResult: p.lastCompletionResult, identity: p.identity, attempt: p.attempt ?? 1, retryPolicy: p.retryPolicy,
        cronSchedule: p.cronSchedule ?? '', firstWorkflowTaskBackoff: backoffMs ? dur(backoffMs) : null,
        workflowExecutionExpirationTime: p.execExpirationMs ? dur(p.execExpirationMs) : null,
        memo: p.memo, searchAttributes: this.sa.present(p.namespace, sa), priority: p.priority,
        parentWorkflowNamespace: p.parent?.namespace ?? '', parentWorkflowExecution: p.parent ? { workflowId: p.parent.workflowId, runId: p.parent.runId } : null,
        parentInitiatedEventId: p.parent?.initiatedEventId ?? 0,
      },
      userMetadata: p.userMetadata,
    });
    if (p.signal) {
      r.append({
        eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        workflowExecutionSignaledEventAttributes: { signalName: p.signal.name, input: p.signal.input, header: p.signal.header, identity: p.signal.identity },
      });
    }
    if (backoffMs > 0) r.addTimer(now + backoffMs, 'start', '', 0);
    else r.scheduleWorkflowTask(1);
    if (p.runTimeoutMs > 0) r.addTimer(now + p.runTimeoutMs, 'run', '', 0);
    if (p.execExpirationMs > 0 && p.execExpirationMs !== now + p.runTimeoutMs) r.addTimer(p.execExpirationMs, 'run', 'exec', 0);
    this.saveState(s);
    return runId;
  }

  // ─── client-driven transitions ───────────────────────────────────────────────────────────────────────

  signalTx(runId: string, name: string, input: any, header: any, identity: string, requestId: string): void {
    checkBlob('signal input', input?.payloads, this.log);
    this.withRun(runId, (r) => {
      if (!r.open) throw notFound('workflow execution already completed');
      if (requestId && r.s.requestIds.includes(requestId)) return; // duplicate delivery of the same request
      if (requestId) r.s.requestIds = [...r.s.requestIds.slice(-99), requestId];
      r.addWaking({
        eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
        workflowExecutionSignaledEventAttributes: { signalName: name, input, header, identity },
      });
    });
  }

  requestCancelTx(r: RunTx, reason: string, identity: string): void {
    if (!r.open) return; // as on Temporal, cancelling a closed run succeeds and changes nothing

    if (r.s.cancelRequested) return; // repeated requests are accepted without a second event
    r.s.cancelRequested = true;
    r.addWaking({
      eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED,
      workflowExecutionCancelRequestedEventAttributes: { cause: reason, identity },
    });
  }

  /** Terminate (and run timeouts) close the run at once: an in-flight task is failed, buffered events written. */
  forceClose(r: RunTx, status: number, event: T.api.history.v1.IHistoryEvent): void {
    const wft = r.s.wft;
    if (wft?.state === 'started') {
      r.append({
        eventType: ET.EVENT_TYPE_WORKFLOW_TASK_FAILED,
        workflowTaskFailedEventAttributes: {
          scheduledEventId: wft.scheduledEventId, startedEventId: wft.startedEventId,
          cause: WftFailedCause.WORKFLOW_TASK_FAILED_CAUSE_FORCE_CLOSE_COMMAND, identity: 'history-service',
        },
      });
      r.s.wft = null;
      r.flushBuffered();
    }
    r.close(status, event);
  }

  terminateTx(r: RunTx, reason: string, identity: string, details?: any): void {
    if (!r.open) throw notFound('workflow execution already completed');
    this.forceClose(r, WS.WORKFLOW_EXECUTION_STATUS_TERMINATED, {
      eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
      workflowExecutionTerminatedEventAttributes: { reason, details, identity },
    });
  }

  // ─── workflow task failure / timeout ─────────────────────────────────────────────────────────────────

  /** Records a failed or timed-out attempt, writes buffered events and schedules the next attempt. */
  failWorkflowTask(r: RunTx, how: { timeout: true } | { cause: number; failure?: any; identity?: string }, nextAttempt?: number): void {
    const wft = r.s.wft!;
    if ('timeout' in how) {
      r.append({
        eventType: ET.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
        workflowTaskTimedOutEventAttributes: { scheduledEventId: wft.scheduledEventId, startedEventId: wft.startedEventId, timeoutType: TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE },
      });
    } else {
      r.append({
        eventType: ET.EVENT_TYPE_WORKFLOW_TASK_FAILED,
        workflowTaskFailedEventAttributes: { scheduledEventId: wft.scheduledEventId, startedEventId: wft.startedEventId, cause: how.cause, failure: how.failure, identity: how.identity ?? '' },
      });
    }
    r.s.wft = null;
    r.flushBuffered();
    r.scheduleWorkflowTask(nextAttempt ?? wft.attempt + 1);
    const { namespace, taskQueue } = r.s;
    this.store.afterCommit(() => this.matching.notify(namespace, 'wf', taskQueue)); // held queries may go now
  }

  // ─── timers ──────────────────────────────────────────────────────────────────────────────────────────

  armTimer(id: number, dueMs: number): void {
    if (this.stopped || this.timerCancels.has(id)) return;
    this.timerCancels.set(id, this.clock.at(dueMs, () => {
      this.timerCancels.delete(id);
      try {
        this.fire(id);
      } catch (e) {
        // The transaction rolled back, so the row is still there: try again later rather than losing it.
        this.log(`error: timer ${id} failed, retrying in 5 s: ${(e as Error).stack}`);
        this.armTimer(id, this.clock.now() + 5000);
      }
    }));
  }

  /** Re-arms every persisted timer (after a restart); overdue ones fire at once. */
  rearmAll(): void {
    for (const t of this.store.allTimers()) this.armTimer(t.id, t.due_ms);
  }

  stop(): void {
    this.stopped = true;
    for (const c of this.timerCancels.values()) c();
    this.timerCancels.clear();
    const waiters = [...this.historyWaiters.values()];
    this.historyWaiters.clear();
    for (const set of waiters) for (const fn of set) fn();
  }

  private fire(id: number): void {
    this.store.tx(() => {
      const row = this.store.getTimer(id);
      if (!row) return; // cancelled, or its run closed
      this.store.deleteTimer(id);
      if (!this.store.getRun(row.run_id)) return;
      this.withRun(row.run_id, (r) => {
        if (r.open) onTimer(this, r, row);
      });
    });
  }
}

function clampWft(requested: number, runTimeoutMs: number): number {
  let t = requested > 0 ? requested : DEFAULT_WFT_TIMEOUT_MS;
  t = Math.min(t, MAX_WFT_TIMEOUT_MS);
  if (runTimeoutMs > 0) t = Math.min(t, runTimeoutMs);
  return t;
}
export { clampWft };

function alreadyStarted(workflowId: string, runId: string, startRequestId: string): ServiceError {
  const failure = api.errordetails.v1.WorkflowExecutionAlreadyStartedFailure.encode({ startRequestId, runId }).finish();
  const message = `Workflow execution is already running. WorkflowId: ${workflowId}, RunId: ${runId}.`;
  const details = googleStatus(status.ALREADY_EXISTS, message, 'temporal.api.errordetails.v1.WorkflowExecutionAlreadyStartedFailure', failure);
  return new ServiceError(status.ALREADY_EXISTS, message, details);
}
