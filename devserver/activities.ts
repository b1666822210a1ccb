// Activities, done server-side as Temporal does: timeout normalisation and retry defaults when scheduling,
// dispatch to pollers, heartbeats (details kept for the next attempt; cancellation delivered in the answer),
// retries with backoff that leave no trace in history, the four timeouts, and ActivityTaskStarted written only
// when an attempt closes, right before its closing event.
import type { temporal as T } from '@temporalio/proto';
import { CommandError, type EngineHost as Engine } from './host.js';

export { CommandError } from './host.js';
import type { RunTx, ActivityState, RetryPolicy } from './run.js';
import type { TimerRow } from './store.js';
import { api, ET, RetryState, TimeoutType, WftFailedCause, dur, ms, b64, unb64, encodeToken, type IFailure } from './proto.js';

const Payloads = api.common.v1.Payloads;
const Failure = api.failure.v1.Failure;

const badSchedule = (m: string) => new CommandError(WftFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_SCHEDULE_ACTIVITY_ATTRIBUTES, m);

function retryPolicy(p: T.api.common.v1.IRetryPolicy | null | undefined): RetryPolicy {
  const initialMs = ms(p?.initialInterval) || 1000;
  const coefficient = p?.backoffCoefficient || 2;
  const maxIntervalMs = ms(p?.maximumInterval) || 100 * initialMs;
  const maxAttempts = p?.maximumAttempts ?? 0;
  if (coefficient < 1) throw badSchedule('BackoffCoefficient cannot be less than 1.');
  if (maxIntervalMs < initialMs) throw badSchedule('MaximumInterval cannot be less than InitialInterval on retry policy.');
  if (maxAttempts < 0) throw badSchedule('MaximumAttempts cannot be negative on retry policy.');
  return { initialMs, coefficient, maxIntervalMs, maxAttempts, nonRetryable: [...(p?.nonRetryableErrorTypes ?? [])] };
}

/** COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK. */
export function schedule(r: RunTx, a: T.api.command.v1.IScheduleActivityTaskCommandAttributes, completedId: number): void {
  const s = r.s;
  if (!a.activityId) throw badSchedule('ActivityId is not set on command.');
  if (!a.activityType?.name) throw badSchedule('ActivityType is not set on command.');
  if (Object.values(s.activities).some((x) => x.activityId === a.activityId)) throw badSchedule(`Activity ID ${a.activityId} is already in use.`);
  let s2c = ms(a.scheduleToCloseTimeout), s2s = ms(a.scheduleToStartTimeout), stc = ms(a.startToCloseTimeout), hb = ms(a.heartbeatTimeout);
  if (s2c < 0 || s2s < 0 || stc < 0 || hb < 0) throw badSchedule('Activity timeouts cannot be negative.');
  const run = s.runTimeoutMs;
  if (s2c > 0) {
    s2s = s2s > 0 ? Math.min(s2s, s2c) : s2c;
    stc = stc > 0 ? Math.min(stc, s2c) : s2c;
  } else if (stc > 0) {
    s2c = run;
    if (s2s === 0) s2s = run;
  } else {
    throw badSchedule('A valid StartToClose or ScheduleToCloseTimeout is not set on command.');
  }
  if (run > 0) [s2c, s2s, stc] = [s2c, s2s, stc].map((t) => (t > 0 ? Math.min(t, run) : run)) as [number, number, number];
  if (stc > 0) hb = Math.min(hb, stc);
  const retry = retryPolicy(a.retryPolicy);
  const taskQueue = a.taskQueue?.name || s.taskQueue;
  const id = r.append({
    eventType: ET.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    activityTaskScheduledEventAttributes: {
      activityId: a.activityId, activityType: a.activityType, taskQueue: { name: taskQueue, kind: 1 }, header: a.header,
      input: a.input, scheduleToCloseTimeout: dur(s2c), scheduleToStartTimeout: dur(s2s), startToCloseTimeout: dur(stc),
      heartbeatTimeout: dur(hb), workflowTaskCompletedEventId: completedId, priority: a.priority,
      retryPolicy: { initialInterval: dur(retry.initialMs), backoffCoefficient: retry.coefficient, maximumInterval: dur(retry.maxIntervalMs), maximumAttempts: retry.maxAttempts, nonRetryableErrorTypes: retry.nonRetryable },
    },
  });
  const act: ActivityState = {
    scheduledEventId: id, activityId: a.activityId, type: a.activityType.name, taskQueue, attempt: 1, state: 'scheduled',
    scheduledMs: r.now, attemptScheduledMs: r.now, startedMs: 0, lastHeartbeatMs: 0, s2cMs: s2c, s2sMs: s2s, stcMs: stc,
    hbMs: hb, retry, cancelRequestedEventId: 0,
  };
  s.activities[id] = act;
  queueAttempt(r, act);
  if (s2c > 0) r.addTimer(r.now + s2c, 'a_s2c', String(id), 0);
}

function queueAttempt(r: RunTx, act: ActivityState): void {
  act.state = 'scheduled';
  act.attemptScheduledMs = r.now;
  r.enqueue('act', act.taskQueue, act.scheduledEventId, act.attempt);
  if (act.s2sMs > 0) r.addTimer(r.now + act.s2sMs, 'a_s2s', String(act.scheduledEventId), act.attempt);
}

/** Hands the attempt to a poller: marks it started and arms start-to-close and heartbeat timeouts. */
export function dispatch(engine: Engine, r: RunTx, act: ActivityState, identity: string, requestId: string): object {
  const s = r.s;
  act.state = 'started';
  act.startedMs = r.now;
  act.lastHeartbeatMs = 0;
  act.identity = identity;
  act.requestId = requestId;
  const ref = String(act.scheduledEventId);
  if (act.stcMs > 0) r.addTimer(r.now + act.stcMs, 'a_stc', ref, act.attempt);
  if (act.hbMs > 0) r.addTimer(r.now + act.hbMs, 'a_hb', ref, act.attempt);
  const ev = api.history.v1.HistoryEvent.decode(engine.store.readEvent(s.runId, act.scheduledEventId)!);
  const a = ev.activityTaskScheduledEventAttributes!;
  return {
    taskToken: encodeToken({ k: 'a', ns: s.namespace, r: s.runId, s: act.scheduledEventId, a: act.attempt }),
    workflowNamespace: s.namespace, workflowType: { name: s.type },
    workflowExecution: { workflowId: s.workflowId, runId: s.runId }, activityType: a.activityType, activityId: act.activityId,
    header: a.header, input: a.input, heartbeatDetails: unb64(Payloads, act.heartbeatDetails) ?? null,
    scheduledTime: dur(act.scheduledMs), currentAttemptScheduledTime: dur(act.attemptScheduledMs), startedTime: dur(r.now),
    attempt: act.attempt, scheduleToCloseTimeout: dur(act.s2cMs), startToCloseTimeout: dur(act.stcMs),
    heartbeatTimeout: dur(act.hbMs), retryPolicy: a.retryPolicy, priority: a.priority,
  };
}

function startedEvent(act: ActivityState) {
  return {
    eventType: ET.EVENT_TYPE_ACTIVITY_TASK_STARTED,
    activityTaskStartedEventAttributes: {
      scheduledEventId: act.scheduledEventId, identity: act.identity ?? '', requestId: act.requestId ?? '',
      attempt: act.attempt, lastFailure: unb64(Failure, act.lastFailure) ?? null,
    },
  };
}

function remove(engine: Engine, r: RunTx, act: ActivityState): void {
  delete r.s.activities[act.scheduledEventId];
  engine.store.deleteTasksOf(r.s.runId, 'act', act.scheduledEventId);
}

export function completed(engine: Engine, r: RunTx, act: ActivityState, result: any, identity: string): void {
  act.identity = identity || act.identity;
  remove(engine, r, act);
  r.addActivityClose(startedEvent(act), {
    eventType: ET.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
    activityTaskCompletedEventAttributes: { result, scheduledEventId: act.scheduledEventId, identity },
  }, 'activityTaskCompletedEventAttributes', String(act.scheduledEventId));
}

export function canceled(engine: Engine, r: RunTx, act: ActivityState, details: any, identity: string): void {
  remove(engine, r, act);
  const closing = {
    eventType: ET.EVENT_TYPE_ACTIVITY_TASK_CANCELED,
    activityTaskCanceledEventAttributes: { details, scheduledEventId: act.scheduledEventId, latestCancelRequestedEventId: act.cancelRequestedEventId, identity },
  };
  if (act.state === 'started') r.addActivityClose(startedEvent(act), closing, 'activityTaskCanceledEventAttributes', String(act.scheduledEventId));
  else r.addWaking(closing, String(act.scheduledEventId));
}

/** Decides whether a failed or timed-out attempt is retried; records the final failure otherwise. */
export function failed(engine: Engine, r: RunTx, act: ActivityState, failure: IFailure, opts: { timeout?: number; identity?: string; details?: any }): void {
  if (opts.details?.payloads?.length) act.heartbeatDetails = b64(Payloads, opts.details);
  const type = opts.timeout ? `TemporalTimeout:${timeoutName(opts.timeout)}` : (failure.applicationFailureInfo?.type ?? '');
  let retryState: number = RetryState.RETRY_STATE_IN_PROGRESS;
  let delay = 0;
  if (failure.applicationFailureInfo?.nonRetryable || act.retry.nonRetryable.includes(type)) retryState = RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE;
  else if (act.retry.maxAttempts > 0 && act.attempt >= act.retry.maxAttempts) retryState = RetryState.RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED;
  else if (act.cancelRequestedEventId > 0) retryState = RetryState.RETRY_STATE_CANCEL_REQUESTED;
  else {
    const next = ms(failure.applicationFailureInfo?.nextRetryDelay);
    delay = next > 0 ? next : Math.min(act.retry.initialMs * Math.pow(act.retry.coefficient, act.attempt - 1), act.retry.maxIntervalMs);
    if (act.s2cMs > 0 && r.now + delay >= act.scheduledMs + act.s2cMs) retryState = RetryState.RETRY_STATE_TIMEOUT;
  }
  if (retryState === RetryState.RETRY_STATE_IN_PROGRESS) {
    act.lastFailure = b64(Failure, failure);
    act.state = 'backoff';
    act.attempt += 1;
    act.nextAttemptMs = r.now + delay;
    r.addTimer(r.now + delay, 'a_retry', String(act.scheduledEventId), act.attempt);
    return;
  }
  remove(engine, r, act);
  const ref = String(act.scheduledEventId);
  if (opts.timeout) {
    r.addActivityClose(startedEvent(act), {
      eventType: ET.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
      activityTaskTimedOutEventAttributes: { failure, scheduledEventId: act.scheduledEventId, retryState },
    }, 'activityTaskTimedOutEventAttributes', ref);
  } else {
    r.addActivityClose(startedEvent(act), {
      eventType: ET.EVENT_TYPE_ACTIVITY_TASK_FAILED,
      activityTaskFailedEventAttributes: { failure, scheduledEventId: act.scheduledEventId, identity: opts.identity ?? '', retryState },
    }, 'activityTaskFailedEventAttributes', ref);
  }
}

function timeoutName(t: number): string {
  return ({ 1: 'StartToClose', 2: 'ScheduleToStart', 3: 'ScheduleToClose', 4: 'Heartbeat' } as Record<number, string>)[t] ?? 'Unspecified';
}

function timeoutFailure(act: ActivityState, type: number, cause?: IFailure): IFailure {
  return {
    message: `activity ${timeoutName(type)} timeout`,
    source: 'Server',
    cause: cause ?? null,
    timeoutFailureInfo: { timeoutType: type, lastHeartbeatDetails: unb64(Payloads, act.heartbeatDetails) ?? null },
  };
}

/** COMMAND_TYPE_REQUEST_CANCEL_ACTIVITY_TASK. */
export function requestCancel(engine: Engine, r: RunTx, scheduledEventId: number, completedId: number): void {
  const act = r.s.activities[scheduledEventId];
  const finishedButBuffered = !act && r.s.buffered.some((b) => b.ref === String(scheduledEventId));
  if (!act && !finishedButBuffered) {
    throw new CommandError(WftFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_REQUEST_CANCEL_ACTIVITY_ATTRIBUTES, `invalid scheduled event ID ${scheduledEventId}: no pending activity`);
  }
  const id = r.append({
    eventType: ET.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED,
    activityTaskCancelRequestedEventAttributes: { scheduledEventId, workflowTaskCompletedEventId: completedId },
  });
  if (!act) return; // its result is already on the way (buffered)
  act.cancelRequestedEventId = id;
  if (act.state !== 'started') canceled(engine, r, act, null, '');
}

/** Activity timers: schedule-to-start, start-to-close, heartbeat, schedule-to-close and retry backoff. */
export function onTimer(engine: Engine, r: RunTx, t: TimerRow): void {
  const act = r.s.activities[t.ref];
  if (!act) return;
  const now = r.now;
  switch (t.kind) {
    case 'a_retry':
      if (act.state === 'backoff' && act.attempt === t.attempt) queueAttempt(r, act);
      return;
    case 'a_s2s':
      if (act.state === 'scheduled' && act.attempt === t.attempt) {
        remove(engine, r, act);
        r.addWaking({
          eventType: ET.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
          activityTaskTimedOutEventAttributes: { failure: timeoutFailure(act, TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START), scheduledEventId: act.scheduledEventId, retryState: RetryState.RETRY_STATE_TIMEOUT },
        }, t.ref);
      }
      return;
    case 'a_stc':
      if (act.state === 'started' && act.attempt === t.attempt) failed(engine, r, act, timeoutFailure(act, TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE), { timeout: TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE });
      return;
    case 'a_hb': {
      if (act.state !== 'started' || act.attempt !== t.attempt) return;
      const due = Math.max(act.startedMs, act.lastHeartbeatMs) + act.hbMs;
      if (due > now) r.addTimer(due, 'a_hb', t.ref, t.attempt);
      else failed(engine, r, act, timeoutFailure(act, TimeoutType.TIMEOUT_TYPE_HEARTBEAT), { timeout: TimeoutType.TIMEOUT_TYPE_HEARTBEAT });
      return;
    }
    case 'a_s2c': {
      remove(engine, r, act);
      const failure = timeoutFailure(act, TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_CLOSE, unb64(Failure, act.lastFailure));
      const closing = {
        eventType: ET.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT,
        activityTaskTimedOutEventAttributes: { failure, scheduledEventId: act.scheduledEventId, retryState: RetryState.RETRY_STATE_TIMEOUT },
      };
      if (act.state === 'started') r.addActivityClose(startedEvent(act), closing, 'activityTaskTimedOutEventAttributes', t.ref);
      else r.addWaking(closing, t.ref);
      return;
    }
  }
}

/** Finds the activity an activity task token names; stale attempts and closed runs are NOT_FOUND. */
export function byToken(r: RunTx, scheduledEventId: number, attempt: number): ActivityState | undefined {
  const act = r.s.activities[scheduledEventId];
  if (!act || act.attempt !== attempt || act.state !== 'started') return undefined;
  return act;
}
