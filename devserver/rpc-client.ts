// Handlers for the RPCs the client calls on workflows: start, signal, signal-with-start, query, cancel,
// terminate, describe, history (including the result() long poll), list and count.
import type { temporal as T } from '@temporalio/proto';
import type { Engine } from './engine.js';
import type { Handler, CallContext } from './grpc.js';
import type { RunState } from './run.js';
import type { ExecutionRow } from './store.js';
import { queryWorkflow } from './workflow-tasks.js';
import { compileQuery } from './visibility.js';
import { updateWorkflowExecution, pollWorkflowExecutionUpdate } from './updates.js';
import { api, HistoryEvent, dur, ts, unb64, invalid } from './proto.js';

const HISTORY_WAIT_MS = 20_000;

/**
 * WorkflowExecutionInfo as the client reads it (start_time is required). A visibility record (list answers) is
 * what Temporal's SQL visibility store holds: history length, size, state transitions and execution duration
 * are only recorded when the run closes.
 */
export function executionInfo(engine: Engine, s: RunState, visibility = false) {
  const closed = s.closeMs != null;
  const recorded = <T,>(v: T) => (!visibility || closed ? v : null);
  return {
    execution: { workflowId: s.workflowId, runId: s.runId },
    type: { name: s.type },
    startTime: ts(s.startMs),
    closeTime: s.closeMs ? ts(s.closeMs) : null,
    executionTime: ts(s.executionMs),
    status: s.status,
    historyLength: recorded(s.nextEventId - 1),
    historySizeBytes: recorded(s.historySize),
    memo: unb64(api.common.v1.Memo, s.memo) ?? { fields: {} },
    searchAttributes: engine.sa.present(s.namespace, s.searchAttributes) ?? { indexedFields: {} },
    taskQueue: s.taskQueue,
    firstRunId: s.firstRunId,
    parentExecution: s.parent ? { workflowId: s.parent.workflowId, runId: s.parent.runId } : null,
    rootExecution: s.root ?? { workflowId: s.workflowId, runId: s.runId },
    stateTransitionCount: recorded(s.stateTransitions ?? 0),
    executionDuration: visibility && closed ? dur(s.closeMs! - s.executionMs) : null,
  };
}

function describe(engine: Engine, s: RunState) {
  const pendingActivities = Object.values(s.activities).map((a) => ({
    activityId: a.activityId,
    activityType: { name: a.type },
    state: a.cancelRequestedEventId > 0 ? 3 : a.state === 'started' ? 2 : 1,
    heartbeatDetails: unb64(api.common.v1.Payloads, a.heartbeatDetails) ?? null,
    lastHeartbeatTime: a.lastHeartbeatMs ? ts(a.lastHeartbeatMs) : null,
    lastStartedTime: a.startedMs ? ts(a.startedMs) : null,
    attempt: a.attempt,
    maximumAttempts: a.retry.maxAttempts,
    scheduledTime: ts(a.attemptScheduledMs),
    expirationTime: a.s2cMs ? ts(a.scheduledMs + a.s2cMs) : null,
    lastFailure: unb64(api.failure.v1.Failure, a.lastFailure) ?? null,
    lastWorkerIdentity: a.identity ?? '',
    nextAttemptScheduleTime: a.state === 'backoff' && a.nextAttemptMs ? ts(a.nextAttemptMs) : null,
  }));
  return {
    executionConfig: {
      taskQueue: { name: s.taskQueue, kind: 1 },
      workflowExecutionTimeout: dur(s.execTimeoutMs),
      workflowRunTimeout: dur(s.runTimeoutMs),
      defaultWorkflowTaskTimeout: dur(s.wftTimeoutMs),
      userMetadata: HistoryEvent.decode(engine.store.readEvent(s.runId, 1)!).userMetadata,
    },
    workflowExecutionInfo: executionInfo(engine, s),
    pendingActivities,
    pendingWorkflowTask: s.wft
      ? { state: s.wft.state === 'started' ? 2 : 1, scheduledTime: ts(s.wft.scheduledMs), startedTime: s.wft.startedMs ? ts(s.wft.startedMs) : null, attempt: s.wft.attempt }
      : null,
  };
}

async function getHistory(engine: Engine, ns: string, req: T.api.workflowservice.v1.IGetWorkflowExecutionHistoryRequest, ctx: CallContext) {
  const runId = engine.resolveRun(ns, req.execution?.workflowId ?? '', req.execution?.runId);
  const closeOnly = req.historyEventFilterType === 2;
  const pageSize = req.maximumPageSize && req.maximumPageSize > 0 ? req.maximumPageSize : 1000;
  const token = req.nextPageToken?.length ? Number(Buffer.from(req.nextPageToken).toString()) : 1;
  const from = Number.isInteger(token) && token >= 1 ? token : 1;
  const until = Math.min(Date.now() + HISTORY_WAIT_MS, ctx.deadline - 1000);
  for (;;) {
    const s = engine.loadState(runId)!;
    if (closeOnly) {
      if (s.closeEventId) return { history: { events: [HistoryEvent.decode(engine.store.readEvent(runId, s.closeEventId)!)] } };
    } else {
      const last = s.nextEventId - 1;
      if (from <= last) {
        const events = engine.store.readEvents(runId, from, Math.min(last + 1, from + pageSize)).map((b) => HistoryEvent.decode(b));
        const next = from + events.length;
        const more = next <= last || (req.waitNewEvent && !s.closeEventId);
        return { history: { events }, nextPageToken: more ? Buffer.from(String(next)) : null };
      }
      if (s.closeEventId) return { history: { events: [] } };
    }
    if (!req.waitNewEvent) return { history: { events: [] } };
    const left = until - Date.now();
    if (left <= 0 || ctx.cancelled || engine.shuttingDown) return { history: { events: [] }, nextPageToken: Buffer.from(String(from)) };
    await engine.waitHistory(runId, left, (fn) => ctx.onCancel(fn));
  }
}

interface ListToken {
  offset: number;
}

function listRuns(engine: Engine, ns: string, query: string, limit: number, offset: number): ExecutionRow[] {
  const q = compileQuery(query, (name) => engine.sa.typeOf(ns, name));
  const sql = `SELECT * FROM executions WHERE namespace = ? AND (${q.where}) ORDER BY ${q.orderBy} LIMIT ? OFFSET ?`;
  return engine.store.db.prepare(sql).all(ns, ...q.params, limit, offset) as ExecutionRow[];
}

export function clientHandlers(engine: Engine, assertNs: (ns: string) => void): Record<string, Handler> {
  const ns = (req: { namespace?: string | null }) => {
    const n = req.namespace ?? '';
    assertNs(n);
    return n;
  };
  return {
    StartWorkflowExecution: (req: T.api.workflowservice.v1.IStartWorkflowExecutionRequest) => {
      const { runId, started } = engine.start(ns(req), req);
      return { runId, started };
    },

    SignalWithStartWorkflowExecution: (req: T.api.workflowservice.v1.ISignalWithStartWorkflowExecutionRequest) => {
      const n = ns(req);
      if (!req.signalName) throw invalid('SignalName is not set on request.');
      const { runId, started } = engine.start(n, { ...req, workflowStartDelay: null }, {
        name: req.signalName, input: req.signalInput, header: req.header, identity: req.identity ?? '',
      });
      return { runId, started };
    },

    SignalWorkflowExecution: (req: T.api.workflowservice.v1.ISignalWorkflowExecutionRequest) => {
      const n = ns(req);
      if (!req.signalName) throw invalid('SignalName is not set on request.');
      const runId = engine.resolveRun(n, req.workflowExecution?.workflowId ?? '', req.workflowExecution?.runId);
      engine.signalTx(runId, req.signalName, req.input, req.header, req.identity ?? '', req.requestId ?? '');
      return {};
    },

    QueryWorkflow: (req: T.api.workflowservice.v1.IQueryWorkflowRequest, ctx) => queryWorkflow(engine, ns(req), req, ctx),

    RequestCancelWorkflowExecution: (req: T.api.workflowservice.v1.IRequestCancelWorkflowExecutionRequest) => {
      const runId = engine.resolveRun(ns(req), req.workflowExecution?.workflowId ?? '', req.workflowExecution?.runId);
      engine.checkChain(runId, req.firstExecutionRunId);
      engine.withRun(runId, (r) => engine.requestCancelTx(r, req.reason ?? '', req.identity ?? ''));
      return {};
    },

    TerminateWorkflowExecution: (req: T.api.workflowservice.v1.ITerminateWorkflowExecutionRequest) => {
      const runId = engine.resolveRun(ns(req), req.workflowExecution?.workflowId ?? '', req.workflowExecution?.runId);
      engine.checkChain(runId, req.firstExecutionRunId);
      engine.withRun(runId, (r) => engine.terminateTx(r, req.reason ?? '', req.identity ?? '', req.details));
      return {};
    },

    UpdateWorkflowExecution: (req: T.api.workflowservice.v1.IUpdateWorkflowExecutionRequest, ctx) => updateWorkflowExecution(engine, ns(req), req, ctx),
    PollWorkflowExecutionUpdate: (req: T.api.workflowservice.v1.IPollWorkflowExecutionUpdateRequest, ctx) => pollWorkflowExecutionUpdate(engine, ns(req), req, ctx),

    DescribeWorkflowExecution: (req: T.api.workflowservice.v1.IDescribeWorkflowExecutionRequest) => {
      const runId = engine.resolveRun(ns(req), req.execution?.workflowId ?? '', req.execution?.runId);
      return describe(engine, engine.loadState(runId)!);
    },

    GetWorkflowExecutionHistory: (req: T.api.workflowservice.v1.IGetWorkflowExecutionHistoryRequest, ctx) => getHistory(engine, ns(req), req, ctx),

    GetWorkflowExecutionHistoryReverse: (req: T.api.workflowservice.v1.IGetWorkflowExecutionHistoryReverseRequest) => {
      const runId = engine.resolveRun(ns(req), req.execution?.workflowId ?? '', req.execution?.runId);
      const s = engine.loadState(runId)!;
      const pageSize = req.maximumPageSize && req.maximumPageSize > 0 ? req.maximumPageSize : 1000;
      const last = req.nextPageToken?.length ? Number(Buffer.from(req.nextPageToken).toString()) : s.nextEventId - 1;
      if (!Number.isInteger(last) || last < 0) throw invalid('invalid next page token');
      const first = Math.max(1, last - pageSize + 1);
      const events = engine.store.readEvents(runId, first, last + 1).reverse().map((b) => HistoryEvent.decode(b));
      return { history: { events }, nextPageToken: first > 1 ? Buffer.from(String(first - 1)) : null };
    },

    ListWorkflowExecutions: (req: T.api.workflowservice.v1.IListWorkflowExecutionsRequest) => {
      const n = ns(req);
      const pageSize = req.pageSize && req.pageSize > 0 ? Math.min(req.pageSize, 1000) : 100;
      let offset = 0;
      if (req.nextPageToken?.length) {
        try {
          offset = (JSON.parse(Buffer.from(req.nextPageToken).toString()) as ListToken).offset;
        } catch {
          throw invalid('invalid next page token');
        }
      }
      const rows = listRuns(engine, n, req.query ?? '', pageSize + 1, offset);
      const more = rows.length > pageSize;
      const executions = rows.slice(0, pageSize).map((row) => executionInfo(engine, JSON.parse(row.state) as RunState, true));
      return { executions, nextPageToken: more ? Buffer.from(JSON.stringify({ offset: offset + pageSize })) : null };
    },

    CountWorkflowExecutions: (req: T.api.workflowservice.v1.ICountWorkflowExecutionsRequest) => {
      const n = ns(req);
      const q = compileQuery(req.query ?? '', (name) => engine.sa.typeOf(n, name));
      const base = `FROM executions WHERE namespace = ? AND (${q.where})`;
      if (!q.groupByStatus) {
        const { c } = engine.store.db.prepare(`SELECT COUNT(*) AS c ${base}`).get(n, ...q.params) as { c: number };
        return { count: c };
      }
      const rows = engine.store.db.prepare(`SELECT status, COUNT(*) AS c ${base} GROUP BY status`).all(n, ...q.params) as { status: number; c: number }[];
      const names = ['', 'Running', 'Completed', 'Failed', 'Canceled', 'Terminated', 'ContinuedAsNew', 'TimedOut'];
      return {
        count: rows.reduce((a, r) => a + r.c, 0),
        groups: rows.map((r) => ({ count: r.c, groupValues: [{ metadata: { encoding: Buffer.from('json/plain'), type: Buffer.from('Keyword') }, data: Buffer.from(JSON.stringify(names[r.status])) }] })),
      };
    },
  };
}
