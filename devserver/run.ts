// One run's mutable state and the primitive transitions every RPC composes: appending events (with Temporal's
// event-ID bookkeeping), buffering events that arrive while a workflow task is in flight, scheduling and
// starting workflow tasks, and persistent timers. A RunTx lives for one SQLite transaction.
import type { Store } from './store.js';
import { HistoryEvent, ET, WS, dur, ts, type IHistoryEvent } from './proto.js';

/** An update's place in its lifecycle (devserver/updates.ts). */
export interface UpdateState {
  stage: number; // 1 admitted, 2 accepted, 3 completed
  acceptedEventId?: number;
  outcome?: string; // base64 temporal.api.update.v1.Outcome
}

export interface RetryPolicy {
  initialMs: number;
  coefficient: number;
  maxIntervalMs: number;
  maxAttempts: number;
  nonRetryable: string[];
}

export interface ActivityState {
  scheduledEventId: number;
  activityId: string;
  type: string;
  taskQueue: string;
  attempt: number;
  state: 'scheduled' | 'started' | 'backoff';
  scheduledMs: number; // first scheduling (schedule-to-close is measured from here)
  attemptScheduledMs: number;
  startedMs: number;
  lastHeartbeatMs: number;
  s2cMs: number; // schedule-to-close, 0 = none
  s2sMs: number; // schedule-to-start
  stcMs: number; // start-to-close
  hbMs: number; // heartbeat
  retry: RetryPolicy;
  heartbeatDetails?: string; // base64 Payloads
  lastFailure?: string; // base64 Failure
  identity?: string;
  requestId?: string;
  nextAttemptMs?: number;
  cancelRequestedEventId: number;
}

export interface WftState {
  state: 'scheduled' | 'started';
  scheduledEventId: number;
  startedEventId: number;
  attempt: number;
  scheduledMs: number;
  startedMs: number;
  identity?: string;
}

/** An event held back while a workflow task is started; `link` names the attributes field whose
 *  startedEventId must point at the previous buffered event (an activity's Started → its close event). */
export interface Buffered {
  data: string;
  type: number;
  ref: string;
  link?: string;
}

export interface RunState {
  namespace: string;
  workflowId: string;
  runId: string;
  firstRunId: string;
  type: string;
  taskQueue: string;
  status: number;
  nextEventId: number;
  startMs: number;
  executionMs: number;
  closeMs: number | null;
  wftTimeoutMs: number;
  runTimeoutMs: number;
  execTimeoutMs: number;
  execExpirationMs: number; // 0 = none
  wft: WftState | null;
  lastCompletedStartedEventId: number;
  buffered: Buffered[];
  activities: Record<string, ActivityState>;
  timers: Record<string, { startedEventId: number; fireMs: number }>;
  cancelRequested: boolean;
  memo: string | null; // base64 Memo
  searchAttributes: string | null; // base64 SearchAttributes
  searchJson: Record<string, unknown>;
  historySize: number;
  requestIds: string[];
  startRequestId: string;
  closeEventId: number;
  newRunId: string | null;
  updates?: Record<string, UpdateState>;
  /** Child workflows by initiated event ID. */
  children?: Record<string, ChildState>;
  /** Set on child runs: where to report the close. */
  parent?: { namespace: string; workflowId: string; runId: string; initiatedEventId: number };
  /** Set on child runs: the run at the top of the parent chain (RootWorkflowId/RootRunId); unset = this run. */
  root?: { workflowId: string; runId: string };
  /** Committed updates of this run's state (StateTransitionCount). */
  stateTransitions?: number;
  stickyQueue?: string;
}

export interface ChildState {
  namespace: string;
  workflowId: string;
  type: string;
  runId: string; // '' until started
  startedEventId: number; // 0 until the started event is written
  policy: number; // ParentClosePolicy
}

export interface RunEffects {
  wakeQueue(namespace: string, kind: 'wf' | 'act', queue: string): void;
  armTimer(id: number, dueMs: number): void;
  historyChanged(runId: string): void;
}

const SUGGEST_CAN_EVENTS = 4096;
const SUGGEST_CAN_BYTES = 4 * 1024 * 1024;

export class RunTx {
  /** Set while a completion's commands are processed: wake-ups are collected and one task scheduled at the end. */
  deferWake = false;
  wokeUp = false;
  /** The user metadata (summary/details) of the command being applied; goes on the next appended event. */
  commandMetadata: unknown = null;

  constructor(
    readonly s: RunState,
    private readonly store: Store,
    private readonly fx: RunEffects,
    readonly now: number,
  ) {}

  get open(): boolean {
    return this.s.status === WS.WORKFLOW_EXECUTION_STATUS_RUNNING;
  }

  /** Appends an event now, assigning the next event ID. Returns the ID. */
  append(event: IHistoryEvent): number {
    const id = this.s.nextEventId++;
    const userMetadata = event.userMetadata ?? this.commandMetadata;
    this.commandMetadata = null;
    const msg = HistoryEvent.fromObject({ ...event, eventId: id, eventTime: event.eventTime ?? ts(this.now), userMetadata });
    const data = HistoryEvent.encode(msg).finish();
    this.store.appendEvent(this.s.runId, id, data);
    this.s.historySize += data.length;
    const runId = this.s.runId;
    this.store.afterCommit(() => this.fx.historyChanged(runId));
    return id;
  }

  /**
   * Adds an event that wakes the workflow (signal, activity or timer result, cancel request). While a workflow
   * task is started it is buffered and written after that task's completion.
   */
  addWaking(event: IHistoryEvent, ref = '', link?: string): number {
    if (this.s.wft?.state === 'started') {
      this.buffer(event, ref, link);
      return 0;
    }
    const id = this.append(event);
    this.wake();
    return id;
  }

  /** An activity's ActivityTaskStarted and its closing event, written together (buffered together while a
   *  workflow task is started); the close event's `link` attributes get the started event's ID. */
  addActivityClose(started: IHistoryEvent, closing: IHistoryEvent, link: string, ref: string): void {
    if (this.s.wft?.state === 'started') {
      this.buffer(started, ref);
      this.buffer(closing, ref, link);
      return;
    }
    const startedId = this.append(started);
    this.append(withLink(closing, link, startedId));
    this.wake();
  }

  private buffer(event: IHistoryEvent, ref: string, link?: string): void {
    const msg = HistoryEvent.fromObject({ ...event, eventTime: event.eventTime ?? ts(this.now) });
    const data = Buffer.from(HistoryEvent.encode(msg).finish()).toString('base64');
    this.s.buffered.push({ data, type: event.eventType as number, ref, link });
  }

  /** Some event needs the workflow to run: schedule a workflow task unless one is pending. */
  wake(): void {
    if (!this.open) return;
    if (this.now < this.s.executionMs) return; // a delayed start: the 'start' timer schedules the first task
    if (this.deferWake) {
      this.wokeUp = true;
      return;
    }
    if (!this.s.wft) this.scheduleWorkflowTask(1);
  }

  /** Writes the buffered events in arrival order (after a task completed, failed or timed out). A closing event
   *  whose started event was buffered too gets that event's new ID (activities and child workflows). */
  flushBuffered(): boolean {
    const buffered = this.s.buffered;
    this.s.buffered = [];
    const startedIds = new Map<string, number>();
    for (const b of buffered) {
      const ev = HistoryEvent.decode(Buffer.from(b.data, 'base64'));
      const started = b.link ? startedIds.get(b.ref) : undefined;
      if (b.link && started) (ev as any)[b.link].startedEventId = started;
      const id = this.append(ev);
      if (b.type === ET.EVENT_TYPE_ACTIVITY_TASK_STARTED || b.type === ET.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED) startedIds.set(b.ref, id);
      if (b.type === ET.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED) {
        const child = this.s.children?.[b.ref];
        if (child) child.startedEventId = id;
      }
    }
    return buffered.length > 0;
  }

  scheduleWorkflowTask(attempt: number): void {
    const s = this.s;
    const id = this.append({
      eventType: ET.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
      workflowTaskScheduledEventAttributes: {
        taskQueue: { name: s.taskQueue, kind: 1 },
        startToCloseTimeout: dur(s.wftTimeoutMs),
        attempt,
      },
    });
    s.wft = { state: 'scheduled', scheduledEventId: id, startedEventId: 0, attempt, scheduledMs: this.now, startedMs: 0 };
    this.enqueue('wf', s.taskQueue, id, attempt);
  }

  /** Appends WorkflowTaskStarted for the scheduled task and arms its start-to-close timeout. */
  startWorkflowTask(identity: string, requestId: string): WftState {
    const s = this.s;
    const wft = s.wft!;
    wft.startedEventId = this.append({
      eventType: ET.EVENT_TYPE_WORKFLOW_TASK_STARTED,
      workflowTaskStartedEventAttributes: {
        scheduledEventId: wft.scheduledEventId,
        identity,
        requestId,
        historySizeBytes: s.historySize,
        suggestContinueAsNew: s.nextEventId > SUGGEST_CAN_EVENTS || s.historySize > SUGGEST_CAN_BYTES,
      },
    });
    wft.state = 'started';
    wft.startedMs = this.now;
    wft.identity = identity;
    this.addTimer(this.now + s.wftTimeoutMs, 'wft', String(wft.scheduledEventId), wft.attempt);
    return wft;
  }

  enqueue(kind: 'wf' | 'act', queue: string, ref: number, attempt: number): void {
    const ns = this.s.namespace;
    this.store.insertTask(ns, kind, queue, this.s.runId, ref, attempt);
    this.store.afterCommit(() => this.fx.wakeQueue(ns, kind, queue));
  }

  addTimer(dueMs: number, kind: string, ref: string, attempt: number): void {
    const id = this.store.insertTimer(dueMs, this.s.runId, kind, ref, attempt);
    this.store.afterCommit(() => this.fx.armTimer(id, dueMs));
  }

  /** Closes the run with its terminal event; pending work is dropped. Returns the event ID. */
  close(status: number, event: IHistoryEvent): number {
    const s = this.s;
    const id = this.append(event);
    s.status = status;
    s.closeMs = this.now;
    s.closeEventId = id;
    s.wft = null;
    s.buffered = [];
    s.activities = {};
    s.timers = {};
    this.store.deleteRunTasks(s.runId);
    this.store.deleteRunTimers(s.runId);
    return id;
  }
}

function withLink(event: IHistoryEvent, field: string, startedEventId: number): IHistoryEvent {
  const attrs = (event as Record<string, any>)[field];
  return { ...event, [field]: { ...attrs, startedEventId } };
}
