// Schedule rows → the plain objects the core encodes with ResponseType.fromObject (DescribeSchedule, list entries),
// plus the facts list queries filter on.
import { temporal } from './proto.js';
import { FUTURE_ACTIONS, RECENT_ACTIONS, type ScheduleEngine } from './engine.js';
import type { QueryFacts } from './query.js';
import { specToProto } from './spec.js';
import type { ScheduleRow } from './store.js';

const { ScheduleAction } = temporal.api.schedule.v1;
const { Memo, SearchAttributes } = temporal.api.common.v1;

const LIST_RECENT = 5;
const LIST_FUTURE = 5;

export const ts = (ms: number) => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 });

/** The conflict token as the real server encodes it: int64 little endian. */
export function tokenBytes(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(BigInt(n));
  return b;
}

function recentOut(row: ScheduleRow, n: number) {
  return row.recent.slice(-n).map((a) => ({
    scheduleTime: ts(a.scheduleTimeMs),
    actualTime: ts(a.actualTimeMs),
    startWorkflowResult: { workflowId: a.workflowId, runId: a.runId },
    startWorkflowStatus: a.status,
  }));
}

const memoOut = (row: ScheduleRow) => (row.memo ? Memo.decode(row.memo) : null);
const attributesOut = (row: ScheduleRow) => (row.searchAttributes ? SearchAttributes.decode(row.searchAttributes) : null);

/** DescribeScheduleResponse: the canonical spec (cron strings already compiled), defaults filled in. */
export function describeResponse(row: ScheduleRow, engine: ScheduleEngine) {
  return {
    schedule: {
      spec: specToProto(row.spec),
      action: ScheduleAction.decode(row.action),
      policies: {
        overlapPolicy: row.overlapPolicy,
        catchupWindow: ts(row.catchupWindowMs),
        pauseOnFailure: row.pauseOnFailure,
        keepOriginalWorkflowId: row.keepOriginalWorkflowId,
      },
      state: { notes: row.notes, paused: row.paused, limitedActions: row.limitedActions, remainingActions: row.remainingActions },
    },
    info: {
      actionCount: row.actionCount,
      missedCatchupWindow: row.missedCatchupWindow,
      overlapSkipped: row.overlapSkipped,
      bufferDropped: row.bufferDropped,
      bufferSize: row.buffer.length,
      runningWorkflows: row.running.map((r) => ({ workflowId: r.workflowId, runId: r.runId })),
      recentActions: recentOut(row, RECENT_ACTIONS),
      futureActionTimes: engine.futureTimes(row, FUTURE_ACTIONS).map(ts),
      createTime: ts(row.createTimeMs), // required by the TS client
      ...(row.updateTimeMs !== null ? { updateTime: ts(row.updateTimeMs) } : {}),
    },
    memo: memoOut(row),
    searchAttributes: attributesOut(row),
    conflictToken: tokenBytes(row.conflictToken),
  };
}

/** ScheduleListEntry: 5 recent and 5 future times, as the real server's list info. */
export function listEntry(row: ScheduleRow, engine: ScheduleEngine) {
  return {
    scheduleId: row.scheduleId,
    memo: memoOut(row),
    searchAttributes: attributesOut(row),
    info: {
      spec: specToProto(row.spec),
      workflowType: ScheduleAction.decode(row.action).startWorkflow?.workflowType ?? null,
      notes: row.notes,
      paused: row.paused,
      recentActions: recentOut(row, LIST_RECENT),
      futureActionTimes: engine.futureTimes(row, LIST_FUTURE).map(ts),
    },
  };
}

/** What list queries can filter on; search attribute values decoded from their JSON payloads. */
export function queryFacts(row: ScheduleRow): QueryFacts {
  const attributes: Record<string, unknown> = {};
  if (row.searchAttributes) {
    for (const [k, p] of Object.entries(SearchAttributes.decode(row.searchAttributes).indexedFields ?? {})) {
      try {
        attributes[k] = JSON.parse(Buffer.from(p.data ?? []).toString('utf8'));
      } catch {
        // not JSON: not queryable
      }
    }
  }
  return { scheduleId: row.scheduleId, paused: row.paused, attributes };
}
