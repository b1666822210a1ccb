// Handlers for the RPCs the worker (sdk-core) calls: task polls, task completions, heartbeats, shutdown.
// Polls never fail for ordinary conditions (a forwarded poll error is fatal to the worker): an unknown queue or
// nothing to do is an empty response.
import type { temporal as T } from '@temporalio/proto';
import { status } from '@grpc/grpc-js';
import { ServiceError } from './contract.js';
import type { Engine } from './engine.js';
import type { Handler } from './grpc.js';
import type { RunTx, ActivityState } from './run.js';
import * as activities from './activities.js';
import { checkLongPollDeadline } from './matching.js';
import { takeWorkflowTask, completeWorkflowTask, failWorkflowTask, respondQueryTaskCompleted } from './workflow-tasks.js';
import { api, ts, dur, BLOB_ERROR_BYTES, payloadSize, b64, decodeToken, notFound, invalid, type IPayload } from './proto.js';
import { randomUUID } from 'node:crypto';

/** Runs `fn` on the started activity a token names; NOT_FOUND when the run closed or the attempt is stale. */
function withActivity<T>(engine: Engine, token: Uint8Array | null | undefined, fn: (r: RunTx, a: ActivityState) => T): T {
  const t = decodeToken(token, 'a');
  if (!engine.store.getRun(t.r)) throw notFound('workflow execution not found');
  return engine.withRun(t.r, (r) => {
    if (!r.open) throw notFound('workflow execution already completed');
    const act = activities.byToken(r, t.s, t.a);
    if (!act) throw notFound('invalid activityID or activity already timed out or invoking workflow is completed');
    return fn(r, act);
  });
}

/** The ById variants (async completion by workflow and activity ID) act on the started attempt. */
function withActivityById<R>(engine: Engine, req: { namespace?: string | null; workflowId?: string | null; runId?: string | null; activityId?: string | null }, fn: (r: RunTx, a: ActivityState) => R): R {
  const runId = engine.resolveRun(req.namespace ?? '', req.workflowId ?? '', req.runId);
  return engine.withRun(runId, (r) => {
    if (!r.open) throw notFound('workflow execution already completed');
    const act = Object.values(r.s.activities).find((a) => a.activityId === req.activityId);
    if (!act || act.state !== 'started') throw notFound(`cannot find pending activity with ActivityID ${req.activityId}, check workflow execution history for more details`);
    return fn(r, act);
  });
}

/** A worker reports an activity failure as an application failure; anything else is refused, as on Temporal. */
function checkActivityFailure(failure: T.api.failure.v1.IFailure | null | undefined): void {
  if (failure && !failure.applicationFailureInfo) throw invalid('Failure must have ApplicationFailureInfo.');
}

function size(payloads: IPayload[] | null | undefined): number {
  return (payloads ?? []).reduce((n, p) => n + payloadSize(p), 0);
}

type Details = { details?: T.api.common.v1.IPayloads | null; identity?: string | null };

const heartbeat = (req: Details) => (r: RunTx, act: ActivityState) => {
  if (size(req.details?.payloads) > BLOB_ERROR_BYTES) throw invalid('Blob data size exceeds limit. (heartbeat details)');
  if (req.details?.payloads?.length) act.heartbeatDetails = b64(api.common.v1.Payloads, req.details);
  act.lastHeartbeatMs = r.now;
  return { cancelRequested: act.cancelRequestedEventId > 0 };
};

const TQT = api.enums.v1.TaskQueueType;

function pollersOf(engine: Engine, ns: string, kind: 'wf' | 'act', queue: string) {
  return engine.matching.recentPollers(ns, kind, queue).map((p) => ({ identity: p.identity, lastAccessTime: ts(p.lastAccessMs), ratePerSecond: 100000 }));
}

/**
 * A queue's TaskQueueStats: the backlog is the queued tasks that are still due (a task row whose workflow task or
 * activity attempt has moved on is skipped when polled, so it is not counted), its age is that of the oldest one
 * (from when it was scheduled), and the rates are tasks per second added and handed out over the last 30 s.
 */
function queueStats(engine: Engine, ns: string, kind: 'wf' | 'act', queue: string) {
  const scheduledMs = kind === 'wf'
    ? `CASE WHEN json_extract(e.state, '$.wft.scheduledEventId') = t.ref AND json_extract(e.state, '$.wft.state') = 'scheduled' THEN json_extract(e.state, '$.wft.scheduledMs') END`
    : `CASE WHEN json_extract(e.state, '$.activities."' || t.ref || '".state') = 'scheduled' AND json_extract(e.state, '$.activities."' || t.ref || '".attempt') = t.attempt THEN json_extract(e.state, '$.activities."' || t.ref || '".attemptScheduledMs') END`;
  const row = engine.store.db
    .prepare(`SELECT COUNT(s) AS n, MIN(s) AS oldest FROM (SELECT ${scheduledMs} AS s FROM tasks t JOIN executions e ON e.run_id = t.run_id WHERE t.namespace = ? AND t.kind = ? AND t.queue = ?)`)
    .get(ns, kind, queue) as { n: number; oldest: number | null };
  const { addRate, dispatchRate } = engine.matching.rates(ns, kind, queue);
  return {
    approximateBacklogCount: row.n,
    approximateBacklogAge: dur(row.oldest == null ? 0 : Math.max(0, engine.clock.now() - row.oldest)),
    tasksAddRate: addRate,
    tasksDispatchRate: dispatchRate,
  };
}

export function workerHandlers(engine: Engine, assertNs: (ns: string) => void): Record<string, Handler> {
  const complete = (req: { result?: T.api.common.v1.IPayloads | null; identity?: string | null }) => (r: RunTx, act: ActivityState) => {
    const bytes = size(req.result?.payloads);
    if (bytes > BLOB_ERROR_BYTES) {
      // As on a real server: an oversized result fails the activity rather than the call.
      activities.failed(engine, r, act, {
        message: `Complete result exceeds size limit (${bytes} bytes > ${BLOB_ERROR_BYTES}); return a reference to stored data instead`,
        source: 'Server',
        applicationFailureInfo: { type: 'BlobSizeLimitExceeded', nonRetryable: true },
      }, { identity: req.identity ?? '' });
      return {};
    }
    activities.completed(engine, r, act, req.result, req.identity ?? '');
    return {};
  };
  const fail = (req: { failure?: T.api.failure.v1.IFailure | null; identity?: string | null; lastHeartbeatDetails?: T.api.common.v1.IPayloads | null }) => (r: RunTx, act: ActivityState) => {
    activities.failed(engine, r, act, req.failure ?? { message: 'activity failed' }, { identity: req.identity ?? '', details: req.lastHeartbeatDetails });
    return {};
  };
  const cancel = (req: Details) => (r: RunTx, act: ActivityState) => {
    if (act.cancelRequestedEventId === 0) throw invalid('Activity task cannot be canceled: no cancellation was requested.');
    activities.canceled(engine, r, act, req.details, req.identity ?? '');
    return {};
  };
  return {
    PollWorkflowTaskQueue: (req: T.api.workflowservice.v1.IPollWorkflowTaskQueueRequest, ctx) => {
      checkLongPollDeadline(ctx);
      const ns = req.namespace ?? '';
      assertNs(ns);
      const queue = req.taskQueue?.name ?? '';
      // Sticky queues are not used: every task goes to the normal queue with full history.
      if (req.taskQueue?.kind === 2 || !queue) return engine.matching.poll(ns, 'wf', `\u0000sticky:${queue}`, ctx, () => null, {});
      return engine.matching.poll(ns, 'wf', queue, ctx, () => takeWorkflowTask(engine, ns, queue, req.identity ?? ''), {}, req.identity ?? '');
    },

    RespondWorkflowTaskCompleted: (req) => completeWorkflowTask(engine, req),
    RespondWorkflowTaskFailed: (req) => failWorkflowTask(engine, req),
    RespondQueryTaskCompleted: (req) => respondQueryTaskCompleted(engine, req),

    PollActivityTaskQueue: (req: T.api.workflowservice.v1.IPollActivityTaskQueueRequest, ctx) => {
      checkLongPollDeadline(ctx);
      const ns = req.namespace ?? '';
      assertNs(ns);
      const queue = req.taskQueue?.name ?? '';
      const identity = req.identity ?? '';
      const take = () =>
        engine.store.tx(() => {
          for (;;) {
            const rows = engine.store.peekTasks(ns, 'act', queue);
            if (rows.length === 0) return null;
            for (const row of rows) {
              engine.store.deleteTask(row.id);
              const st = engine.loadState(row.run_id);
              const a = st?.activities[row.ref];
              if (!st || !a || a.state !== 'scheduled' || a.attempt !== row.attempt) continue;
              return engine.withRun(row.run_id, (r) => activities.dispatch(engine, r, r.s.activities[row.ref]!, identity, randomUUID()));
            }
          }
        });
      return engine.matching.poll(ns, 'act', queue, ctx, take, {}, identity);
    },

    RecordActivityTaskHeartbeat: (req: T.api.workflowservice.v1.IRecordActivityTaskHeartbeatRequest) => withActivity(engine, req.taskToken, heartbeat(req)),
    RecordActivityTaskHeartbeatById: (req: T.api.workflowservice.v1.IRecordActivityTaskHeartbeatByIdRequest) => withActivityById(engine, req, heartbeat(req)),
    RespondActivityTaskCompleted: (req: T.api.workflowservice.v1.IRespondActivityTaskCompletedRequest) => withActivity(engine, req.taskToken, complete(req)),
    RespondActivityTaskCompletedById: (req: T.api.workflowservice.v1.IRespondActivityTaskCompletedByIdRequest) => withActivityById(engine, req, complete(req)),
    RespondActivityTaskFailed: (req: T.api.workflowservice.v1.IRespondActivityTaskFailedRequest) => {
      checkActivityFailure(req.failure);
      return withActivity(engine, req.taskToken, fail(req));
    },
    RespondActivityTaskFailedById: (req: T.api.workflowservice.v1.IRespondActivityTaskFailedByIdRequest) => {
      checkActivityFailure(req.failure);
      return withActivityById(engine, req, fail(req));
    },
    RespondActivityTaskCanceled: (req: T.api.workflowservice.v1.IRespondActivityTaskCanceledRequest) => withActivity(engine, req.taskToken, cancel(req)),
    RespondActivityTaskCanceledById: (req: T.api.workflowservice.v1.IRespondActivityTaskCanceledByIdRequest) => withActivityById(engine, req, cancel(req)),

    DescribeTaskQueue: (req: T.api.workflowservice.v1.IDescribeTaskQueueRequest) => {
      const ns = req.namespace ?? '';
      assertNs(ns);
      const queue = req.taskQueue?.name ?? '';
      if (!queue) throw invalid('missing task queue name');
      if (req.apiMode === api.enums.v1.DescribeTaskQueueMode.DESCRIBE_TASK_QUEUE_MODE_ENHANCED) {
        // Enhanced mode: one entry per build ID; without worker versioning there is only the unversioned one ('').
        const types = req.taskQueueTypes?.length ? req.taskQueueTypes : [TQT.TASK_QUEUE_TYPE_WORKFLOW, TQT.TASK_QUEUE_TYPE_ACTIVITY];
        const typesInfo: Record<number, object> = {};
        for (const type of types) {
          const kind = type === TQT.TASK_QUEUE_TYPE_WORKFLOW ? 'wf' : type === TQT.TASK_QUEUE_TYPE_ACTIVITY ? 'act' : null;
          typesInfo[type] = kind ? { pollers: req.reportPollers ? pollersOf(engine, ns, kind, queue) : [], stats: req.reportStats ? queueStats(engine, ns, kind, queue) : null } : {};
        }
        const reachable = req.reportTaskReachability ? api.enums.v1.BuildIdTaskReachability.BUILD_ID_TASK_REACHABILITY_REACHABLE : 0;
        return { versionsInfo: { '': { typesInfo, taskReachability: reachable } } };
      }
      const kind = req.taskQueueType === TQT.TASK_QUEUE_TYPE_ACTIVITY ? 'act' : 'wf';
      return { pollers: pollersOf(engine, ns, kind, queue), stats: req.reportStats ? queueStats(engine, ns, kind, queue) : null };
    },

    ShutdownWorker: () => ({}),
    PollNexusTaskQueue: (req: T.api.workflowservice.v1.IPollNexusTaskQueueRequest, ctx) => {
      checkLongPollDeadline(ctx);
      return engine.matching.poll(req.namespace ?? '', 'wf', `\u0000nexus:${req.taskQueue?.name ?? ''}`, ctx, () => null, {});
    },
    RespondNexusTaskCompleted: () => {
      throw new ServiceError(status.UNIMPLEMENTED, 'unknown method RespondNexusTaskCompleted: Nexus is not supported by the finetune dev server');
    },
  };
}
