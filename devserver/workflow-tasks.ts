// Workflow tasks from the worker's side: taking a task for a poller (WorkflowTaskStarted + full history; no
// sticky queues — the worker accepts full histories for cached runs), completing it (sdk_metadata kept in
// WorkflowTaskCompleted, commands applied, buffered events written after them, UnhandledCommand when a closing
// command meets buffered events), and failing it. Queries are delivered as direct ("legacy") query tasks.
import type { temporal as T } from '@temporalio/proto';
import { status } from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { ServiceError } from './contract.js';
import type { RunState } from './run.js';
import { applyCommands, CLOSING } from './commands.js';
import { CommandError, type EngineHost as Engine, type PendingQuery } from './host.js';
import { api, ET, WS, WftFailedCause, HistoryEvent, dur, decodeToken, encodeToken, notFound, invalid, googleStatus } from './proto.js';

type CompleteRequest = T.api.workflowservice.v1.IRespondWorkflowTaskCompletedRequest;

function history(engine: Engine, runId: string, lastEventId: number) {
  return { events: engine.store.readEvents(runId, 1, lastEventId + 1).map((b) => HistoryEvent.decode(b)) };
}

function taskBase(s: RunState) {
  return {
    workflowExecution: { workflowId: s.workflowId, runId: s.runId },
    workflowType: { name: s.type },
    workflowExecutionTaskQueue: { name: s.taskQueue, kind: 1 },
    previousStartedEventId: s.lastCompletedStartedEventId,
  };
}

/** Takes the next workflow task (or query) on the queue for a poller, or returns null. */
export function takeWorkflowTask(engine: Engine, ns: string, queue: string, identity: string): object | null {
  const query = takeQuery(engine, ns, queue);
  if (query) return query;
  return engine.store.tx(() => {
    for (;;) {
      const rows = engine.store.peekTasks(ns, 'wf', queue);
      if (rows.length === 0) return null;
      for (const row of rows) {
        engine.store.deleteTask(row.id);
        const st = engine.loadState(row.run_id);
        const w = st?.wft;
        if (!st || st.status !== WS.WORKFLOW_EXECUTION_STATUS_RUNNING || !w || w.state !== 'scheduled' || w.scheduledEventId !== row.ref || w.attempt !== row.attempt) continue;
        return engine.withRun(row.run_id, (r) => {
          const wft = r.startWorkflowTask(identity, randomUUID());
          return {
            ...taskBase(r.s),
            taskToken: encodeToken({ k: 'w', ns, r: r.s.runId, s: wft.scheduledEventId, a: wft.attempt }),
            startedEventId: wft.startedEventId,
            attempt: wft.attempt,
            history: history(engine, r.s.runId, wft.startedEventId),
            scheduledTime: dur(wft.scheduledMs),
            startedTime: dur(wft.startedMs),
          };
        });
      }
    }
  });
}

export function completeWorkflowTask(engine: Engine, req: CompleteRequest): object {
  const t = decodeToken(req.taskToken, 'w');
  const identity = req.identity ?? '';
  const outcome = engine.withRun(t.r, (r) => {
    const s = r.s;
    const wft = s.wft;
    if (!r.open) throw notFound('workflow execution already completed');
    if (!wft || wft.state !== 'started' || wft.scheduledEventId !== t.s || wft.attempt !== t.a) throw notFound('Workflow task not found.');
    const commands = req.commands ?? [];
    const closingAt = commands.findIndex((c) => CLOSING.has(c.commandType ?? 0));
    if (closingAt >= 0 && s.buffered.length > 0) {
      // New events arrived while the worker decided to close: it must see them first.
      engine.failWorkflowTask(r, { cause: WftFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND, identity }, 1);
      return new ServiceError(status.INVALID_ARGUMENT, 'UnhandledCommand');
    }
    const snapshot = JSON.stringify(s);
    try {
      engine.store.savepoint(() => {
        const completedId = r.append({
          eventType: ET.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
          workflowTaskCompletedEventAttributes: {
            scheduledEventId: wft.scheduledEventId, startedEventId: wft.startedEventId, identity,
            binaryChecksum: req.binaryChecksum ?? '', sdkMetadata: req.sdkMetadata, meteringMetadata: req.meteringMetadata,
            workerVersion: req.workerVersionStamp,
          },
        });
        s.wft = null;
        s.lastCompletedStartedEventId = wft.startedEventId;
        r.deferWake = true;
        applyCommands(engine, r, commands, completedId, identity, req.messages ?? []);
      });
    } catch (e) {
      if (!(e instanceof CommandError)) throw e;
      for (const k of Object.keys(s)) delete (s as any)[k];
      Object.assign(s, JSON.parse(snapshot));
      r.deferWake = false;
      // "BadStartTimerAttributes: ...", as the real server words it (Go's shorthand enum names), in the
      // answer and in the WorkflowTaskFailed event's failure alike.
      const enumName = Object.entries(WftFailedCause).find(([, v]) => v === e.cause)?.[0]?.replace('WORKFLOW_TASK_FAILED_CAUSE_', '') ?? 'UNSPECIFIED';
      const causeName = enumName.toLowerCase().replace(/(^|_)([a-z])/g, (_, __, c: string) => c.toUpperCase());
      const message = `${causeName}: ${e.message}`;
      engine.failWorkflowTask(r, { cause: e.cause, failure: { message, source: 'Server' }, identity });
      engine.log(`workflow task failed: ${s.workflowId}/${s.runId}: ${message}`);
      return invalid(message);
    }
    r.deferWake = false;
    if (r.open) {
      const hadBuffered = r.flushBuffered();
      if (hadBuffered || r.wokeUp || req.forceCreateNewWorkflowTask) r.scheduleWorkflowTask(1);
    }
    engine.store.afterCommit(() => engine.matching.notify(s.namespace, 'wf', s.taskQueue)); // held queries
    return null;
  });
  if (outcome) throw outcome;
  return {};
}

export function failWorkflowTask(engine: Engine, req: T.api.workflowservice.v1.IRespondWorkflowTaskFailedRequest): object {
  const t = decodeToken(req.taskToken, 'w');
  engine.withRun(t.r, (r) => {
    const wft = r.s.wft;
    if (!r.open) throw notFound('workflow execution already completed');
    if (!wft || wft.state !== 'started' || wft.scheduledEventId !== t.s || wft.attempt !== t.a) throw notFound('Workflow task not found.');
    engine.log(`workflow task failed by worker: ${r.s.workflowId}/${r.s.runId} attempt ${wft.attempt}: ${req.failure?.message ?? ''}`);
    engine.failWorkflowTask(r, { cause: req.cause ?? 0, failure: req.failure, identity: req.identity ?? '' });
  });
  return {};
}

// ─── queries ─────────────────────────────────────────────────────────────────────────────────────────────
// In memory only: a query lives as long as the client's call.


function takeQuery(engine: Engine, ns: string, queue: string): object | null {
  for (const q of engine.queries.values()) {
    if (q.dispatched || q.ns !== ns || q.queue !== queue) continue;
    const s = engine.loadState(q.runId);
    if (!s) continue;
    if (s.wft?.state === 'started') continue; // answered after the in-flight task, so the worker sees its effects
    q.dispatched = true;
    return {
      ...taskBase(s),
      taskToken: encodeToken({ k: 'q', ns, r: s.runId, s: 0, a: 1, q: q.id }),
      startedEventId: 0,
      attempt: 1,
      history: history(engine, s.runId, s.nextEventId - 1),
      query: q.query,
    };
  }
  return null;
}

export function queryWorkflow(engine: Engine, ns: string, req: T.api.workflowservice.v1.IQueryWorkflowRequest, ctx: { onCancel(fn: () => void): void }): Promise<object> {
  const runId = engine.resolveRun(ns, req.execution?.workflowId ?? '', req.execution?.runId);
  const s = engine.loadState(runId)!;
  const closed = s.status !== WS.WORKFLOW_EXECUTION_STATUS_RUNNING;
  const cond = req.queryRejectCondition ?? 0;
  if ((cond === 2 && closed) || (cond === 3 && closed && s.status !== WS.WORKFLOW_EXECUTION_STATUS_COMPLETED)) {
    return Promise.resolve({ queryRejected: { status: s.status } });
  }
  if (!req.query?.queryType) throw invalid('QueryType is not set on request.');
  if (!closed && (s.wft?.attempt ?? 1) > 1) {
    throw new ServiceError(status.FAILED_PRECONDITION, 'Cannot query workflow due to Workflow Task in failed state.');
  }
  if (closed && s.lastCompletedStartedEventId === 0) {
    throw new ServiceError(status.FAILED_PRECONDITION, 'Workflow execution closed before WorkflowTaskStarted event');
  }
  return new Promise((resolve, reject) => {
    const q: PendingQuery = { id: randomUUID(), ns, runId, queue: s.taskQueue, query: req.query!, dispatched: false, resolve, reject };
    engine.queries.set(q.id, q);
    ctx.onCancel(() => {
      engine.queries.delete(q.id);
      reject(new ServiceError(status.CANCELLED, 'query cancelled by the caller'));
    });
    engine.matching.notify(ns, 'wf', s.taskQueue);
  });
}

export function respondQueryTaskCompleted(engine: Engine, req: T.api.workflowservice.v1.IRespondQueryTaskCompletedRequest): object {
  const t = decodeToken(req.taskToken, 'q');
  const q = engine.queries.get(t.q ?? '');
  if (!q) throw notFound('query not found: it was cancelled or timed out');
  engine.queries.delete(q.id);
  if (req.completedType === 2) {
    const failure = req.failure ?? { message: req.errorMessage ?? 'query failed' };
    const detail = api.errordetails.v1.QueryFailedFailure.encode({ failure }).finish();
    const message = req.errorMessage || failure.message || 'query failed';
    q.reject(new ServiceError(status.INVALID_ARGUMENT, message, googleStatus(status.INVALID_ARGUMENT, message, 'temporal.api.errordetails.v1.QueryFailedFailure', detail)));
  } else {
    q.resolve({ queryResult: req.queryResult });
  }
  return {};
}

/** Fails every waiting query (server shutdown). */
export function dropQueries(engine: Engine): void {
  // Not UNAVAILABLE: the TS client would retry it on a timer, possibly after its channel was closed.
  for (const q of engine.queries.values()) q.reject(new ServiceError(status.CANCELLED, 'query abandoned: the server is shutting down'));
  engine.queries.clear();
}
