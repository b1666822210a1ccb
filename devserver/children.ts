// Child workflows and external signals/cancellations. A command writes its "initiated" event and a transfer row
// in the persistent timer table, due at once; the row fires in its own transaction right after the commit (and
// again after a crash, since rows are re-armed on start) and performs the cross-run work: start the child,
// signal or cancel the target, report a child's close to its parent, apply the parent-close policy.
import type { temporal as T } from '@temporalio/proto';
import { status } from '@grpc/grpc-js';
import { ServiceError } from './contract.js';
import type { EngineHost as Engine } from './host.js';
import type { RunTx, RunState } from './run.js';
import type { TimerRow } from './store.js';
import { CommandError } from './host.js';
import { api, ET, WS, WftFailedCause as C, HistoryEvent, checkBlob, checkMemo } from './proto.js';

const POLICY = api.enums.v1.ParentClosePolicy;

function blob(engine: Engine, cause: number, what: string, payloads: any, memo?: T.api.common.v1.IMemo | null): void {
  try {
    checkBlob(what, payloads?.payloads, engine.log);
    checkMemo('child workflow memo', memo, engine.log);
  } catch (e) {
    throw new CommandError(cause, (e as Error).message);
  }
}

// ─── commands ────────────────────────────────────────────────────────────────────────────────────────────

export function startChild(engine: Engine, r: RunTx, a: T.api.command.v1.IStartChildWorkflowExecutionCommandAttributes, completedId: number): void {
  const bad = (m: string) => new CommandError(C.WORKFLOW_TASK_FAILED_CAUSE_BAD_START_CHILD_EXECUTION_ATTRIBUTES, m);
  if (!a.workflowId) throw bad('Required field WorkflowId is not set on command.');
  if (!a.workflowType?.name) throw bad('Required field WorkflowType is not set on command.');
  if (a.cronSchedule) throw bad('cron_schedule is not supported by the finetune dev server; use a schedule');
  blob(engine, C.WORKFLOW_TASK_FAILED_CAUSE_BAD_START_CHILD_EXECUTION_ATTRIBUTES, 'child workflow input', a.input, a.memo);
  const namespace = a.namespace || r.s.namespace;
  const taskQueue = a.taskQueue?.name || r.s.taskQueue;
  const id = r.append({
    eventType: ET.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED,
    startChildWorkflowExecutionInitiatedEventAttributes: {
      namespace, workflowId: a.workflowId, workflowType: a.workflowType, taskQueue: { name: taskQueue, kind: 1 }, input: a.input,
      workflowExecutionTimeout: a.workflowExecutionTimeout, workflowRunTimeout: a.workflowRunTimeout,
      workflowTaskTimeout: a.workflowTaskTimeout, parentClosePolicy: a.parentClosePolicy, control: a.control,
      workflowTaskCompletedEventId: completedId, workflowIdReusePolicy: a.workflowIdReusePolicy, retryPolicy: a.retryPolicy,
      cronSchedule: a.cronSchedule, header: a.header, memo: a.memo, searchAttributes: a.searchAttributes, priority: a.priority,
    },
  });
  (r.s.children ??= {})[id] = {
    namespace, workflowId: a.workflowId, type: a.workflowType.name, runId: '', startedEventId: 0,
    policy: a.parentClosePolicy || POLICY.PARENT_CLOSE_POLICY_TERMINATE,
  };
  r.addTimer(r.now, 'x_child', String(id), 0);
}

export function signalExternal(engine: Engine, r: RunTx, a: T.api.command.v1.ISignalExternalWorkflowExecutionCommandAttributes, completedId: number): void {
  if (!a.execution?.workflowId) throw new CommandError(C.WORKFLOW_TASK_FAILED_CAUSE_BAD_SIGNAL_WORKFLOW_EXECUTION_ATTRIBUTES, 'Required field WorkflowId is not set on command.');
  if (!a.signalName) throw new CommandError(C.WORKFLOW_TASK_FAILED_CAUSE_BAD_SIGNAL_WORKFLOW_EXECUTION_ATTRIBUTES, 'SignalName is not set on command.');
  blob(engine, C.WORKFLOW_TASK_FAILED_CAUSE_BAD_SIGNAL_WORKFLOW_EXECUTION_ATTRIBUTES, 'signal input', a.input);
  const id = r.append({
    eventType: ET.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    signalExternalWorkflowExecutionInitiatedEventAttributes: {
      workflowTaskCompletedEventId: completedId, namespace: a.namespace || r.s.namespace, workflowExecution: a.execution,
      signalName: a.signalName, input: a.input, control: a.control, childWorkflowOnly: a.childWorkflowOnly, header: a.header,
    },
  });
  r.addTimer(r.now, 'x_signal', String(id), 0);
}

export function cancelExternal(r: RunTx, a: T.api.command.v1.IRequestCancelExternalWorkflowExecutionCommandAttributes, completedId: number): void {
  if (!a.workflowId) throw new CommandError(C.WORKFLOW_TASK_FAILED_CAUSE_BAD_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_ATTRIBUTES, 'Required field WorkflowId is not set on command.');
  const id = r.append({
    eventType: ET.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED,
    requestCancelExternalWorkflowExecutionInitiatedEventAttributes: {
      workflowTaskCompletedEventId: completedId, namespace: a.namespace || r.s.namespace,
      workflowExecution: { workflowId: a.workflowId, runId: a.runId }, control: a.control,
      childWorkflowOnly: a.childWorkflowOnly, reason: a.reason,
    },
  });
  r.addTimer(r.now, 'x_cancel', String(id), 0);
}

// ─── close hook (inside the closing run's transaction) ───────────────────────────────────────────────────

/** Queues the report to the parent and the parent-close policy for the children, as durable transfer rows. */
export function onClosed(engine: Engine, s: RunState): void {
  const now = engine.clock.now();
  const queue = (runId: string, kind: string, ref: string) => {
    const id = engine.store.insertTimer(now, runId, kind, ref, 0);
    engine.store.afterCommit(() => engine.armTimer(id, now));
  };
  if (s.parent && s.status !== WS.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW) queue(s.parent.runId, 'x_childclosed', `${s.parent.initiatedEventId}|${s.runId}`);
  for (const c of Object.values(s.children ?? {})) {
    if (!c.runId || c.policy === POLICY.PARENT_CLOSE_POLICY_ABANDON) continue;
    const current = engine.store.currentRunId(c.namespace, c.workflowId);
    if (current) queue(current, 'x_pclose', String(c.policy));
  }
}

// ─── transfer rows ───────────────────────────────────────────────────────────────────────────────────────

function initiated(engine: Engine, r: RunTx, eventId: string) {
  return HistoryEvent.decode(engine.store.readEvent(r.s.runId, Number(eventId))!);
}

/** Runs a transition on another run; a run may not be nested inside its own transaction. */
function onOther(engine: Engine, r: RunTx, runId: string, fn: (o: RunTx) => void): void {
  if (runId === r.s.runId) fn(r);
  else engine.withRun(runId, fn);
}

export function onTransfer(engine: Engine, r: RunTx, t: TimerRow): void {
  switch (t.kind) {
    case 'x_child': {
      const child = r.s.children?.[t.ref];
      if (!child || child.runId) return;
      const a = initiated(engine, r, t.ref).startChildWorkflowExecutionInitiatedEventAttributes!;
      const base = { namespace: child.namespace, initiatedEventId: Number(t.ref), workflowType: a.workflowType };
      try {
        const { runId } = engine.start(child.namespace, {
          workflowId: a.workflowId, workflowType: a.workflowType, taskQueue: a.taskQueue, input: a.input,
          workflowExecutionTimeout: a.workflowExecutionTimeout, workflowRunTimeout: a.workflowRunTimeout,
          workflowTaskTimeout: a.workflowTaskTimeout, workflowIdReusePolicy: a.workflowIdReusePolicy,
          workflowIdConflictPolicy: 1, retryPolicy: a.retryPolicy, cronSchedule: a.cronSchedule, header: a.header,
          memo: a.memo, searchAttributes: a.searchAttributes, priority: a.priority, identity: `parent:${r.s.workflowId}`,
          requestId: `${r.s.runId}/${t.ref}`,
        }, undefined, { namespace: r.s.namespace, workflowId: r.s.workflowId, runId: r.s.runId, initiatedEventId: Number(t.ref) });
        child.runId = runId;
        child.startedEventId = r.addWaking({
          eventType: ET.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_STARTED,
          childWorkflowExecutionStartedEventAttributes: { ...base, workflowExecution: { workflowId: a.workflowId, runId }, header: a.header },
        }, t.ref);
      } catch (e) {
        if (!(e instanceof ServiceError) || (e.code !== status.ALREADY_EXISTS && e.code !== status.NOT_FOUND)) throw e;
        delete r.s.children![t.ref];
        r.addWaking({
          eventType: ET.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED,
          startChildWorkflowExecutionFailedEventAttributes: {
            ...base, workflowId: a.workflowId, control: a.control, workflowTaskCompletedEventId: a.workflowTaskCompletedEventId,
            cause: e.code === status.ALREADY_EXISTS ? 1 : 2,
          },
        });
      }
      return;
    }

    case 'x_childclosed': {
      const [initiatedId, childRunId] = t.ref.split('|') as [string, string];
      const child = r.s.children?.[initiatedId];
      if (!child) return;
      delete r.s.children![initiatedId];
      const cs = engine.loadState(childRunId)!;
      const close = HistoryEvent.decode(engine.store.readEvent(childRunId, cs.closeEventId)!);
      const base = {
        namespace: child.namespace, workflowExecution: { workflowId: child.workflowId, runId: childRunId },
        workflowType: { name: cs.type }, initiatedEventId: Number(initiatedId), startedEventId: child.startedEventId,
      };
      const [eventType, field, extra] = childCloseEvent(close);
      r.addWaking({ eventType, [field]: { ...base, ...extra } }, initiatedId, child.startedEventId ? undefined : field);
      return;
    }

    case 'x_signal': {
      const a = initiated(engine, r, t.ref).signalExternalWorkflowExecutionInitiatedEventAttributes!;
      const target = { namespace: a.namespace, workflowExecution: a.workflowExecution, initiatedEventId: Number(t.ref), control: a.control };
      try {
        const runId = engine.resolveRun(a.namespace ?? '', a.workflowExecution?.workflowId ?? '', a.workflowExecution?.runId);
        onOther(engine, r, runId, (o) => {
          if (!o.open) throw new ServiceError(status.NOT_FOUND, 'closed');
          o.addWaking({
            eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
            workflowExecutionSignaledEventAttributes: { signalName: a.signalName, input: a.input, header: a.header, identity: `workflow:${r.s.workflowId}` },
          });
        });
        r.addWaking({ eventType: ET.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_SIGNALED, externalWorkflowExecutionSignaledEventAttributes: target });
      } catch (e) {
        if (!(e instanceof ServiceError) || e.code !== status.NOT_FOUND) throw e;
        r.addWaking({
          eventType: ET.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_FAILED,
          signalExternalWorkflowExecutionFailedEventAttributes: { ...target, cause: 1, workflowTaskCompletedEventId: a.workflowTaskCompletedEventId },
        });
      }
      return;
    }

    case 'x_cancel': {
      const a = initiated(engine, r, t.ref).requestCancelExternalWorkflowExecutionInitiatedEventAttributes!;
      const target = { namespace: a.namespace, workflowExecution: a.workflowExecution, initiatedEventId: Number(t.ref) };
      try {
        const runId = engine.resolveRun(a.namespace ?? '', a.workflowExecution?.workflowId ?? '', a.workflowExecution?.runId);
        onOther(engine, r, runId, (o) => engine.requestCancelTx(o, a.reason || `requested by workflow ${r.s.workflowId}`, `workflow:${r.s.workflowId}`));
        r.addWaking({ eventType: ET.EVENT_TYPE_EXTERNAL_WORKFLOW_EXECUTION_CANCEL_REQUESTED, externalWorkflowExecutionCancelRequestedEventAttributes: target });
      } catch (e) {
        if (!(e instanceof ServiceError) || e.code !== status.NOT_FOUND) throw e;
        r.addWaking({
          eventType: ET.EVENT_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION_FAILED,
          requestCancelExternalWorkflowExecutionFailedEventAttributes: { ...target, control: a.control, cause: 1, workflowTaskCompletedEventId: a.workflowTaskCompletedEventId },
        });
      }
      return;
    }

    case 'x_pclose':
      // r is the child; its parent has closed.
      if (Number(t.ref) === POLICY.PARENT_CLOSE_POLICY_TERMINATE) engine.terminateTx(r, 'by parent close policy', 'history-service');
      else if (Number(t.ref) === POLICY.PARENT_CLOSE_POLICY_REQUEST_CANCEL) engine.requestCancelTx(r, 'by parent close policy', 'history-service');
      return;
  }
}

function childCloseEvent(close: T.api.history.v1.IHistoryEvent): [number, string, object] {
  if (close.workflowExecutionCompletedEventAttributes) return [ET.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED, 'childWorkflowExecutionCompletedEventAttributes', { result: close.workflowExecutionCompletedEventAttributes.result }];
  if (close.workflowExecutionFailedEventAttributes) return [ET.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED, 'childWorkflowExecutionFailedEventAttributes', { failure: close.workflowExecutionFailedEventAttributes.failure, retryState: close.workflowExecutionFailedEventAttributes.retryState }];
  if (close.workflowExecutionCanceledEventAttributes) return [ET.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED, 'childWorkflowExecutionCanceledEventAttributes', { details: close.workflowExecutionCanceledEventAttributes.details }];
  if (close.workflowExecutionTimedOutEventAttributes) return [ET.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT, 'childWorkflowExecutionTimedOutEventAttributes', { retryState: close.workflowExecutionTimedOutEventAttributes.retryState }];
  return [ET.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED, 'childWorkflowExecutionTerminatedEventAttributes', {}];
}
