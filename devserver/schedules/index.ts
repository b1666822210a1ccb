// Temporal Schedules for the embedded dev server: the seven schedule RPCs of WorkflowService, durable in the
// server's SQLite database, fired by timers on the server's clock. The core registers `handlers` and calls
// start()/stop(); see devserver/contract.ts for the seam and devserver/schedules/README.md for what is supported.
import { status } from '@grpc/grpc-js';
import type { temporal as T } from '@temporalio/proto';
import { temporal } from './proto.js';
import { ServiceError, type CreateScheduleService, type ScheduleHost, type ScheduleService } from '../contract.js';
import {
  DEFAULT_CATCHUP_WINDOW_MS,
  MIN_CATCHUP_WINDOW_MS,
  OverlapPolicy,
  ScheduleEngine,
  type ClosedRun,
} from './engine.js';
import { compileListQuery } from './query.js';
import { describeResponse, listEntry, queryFacts, tokenBytes, ts } from './responses.js';
import { canonicalizeSpec, SpecError, timeMs, type Spec, type SpecInput } from './spec.js';
import { ScheduleStore, type ScheduleRow } from './store.js';

export { canonicalizeSpec, nextTimes, parseCronString, SpecError } from './spec.js';

const { ScheduleAction } = temporal.api.schedule.v1;
const { Memo, SearchAttributes } = temporal.api.common.v1;
type ISchedule = T.api.schedule.v1.ISchedule;
type ISchedulePatch = T.api.schedule.v1.ISchedulePatch;

const MAX_PAGE = 1000;
const MAX_MATCHING_TIMES = 1000;
/** After an unexpected failure while firing, try again this much later. */
const RETRY_MS = 5000;

const num = (v: unknown) => Number(String(v ?? 0));
const invalid = (message: string) => new ServiceError(status.INVALID_ARGUMENT, message);

export const createScheduleService: CreateScheduleService = (host: ScheduleHost): ScheduleService => {
  const store = new ScheduleStore(host.db);
  const log = (line: string) => console.warn(`[schedules] ${line}`);
  const engine = new ScheduleEngine(host, store, log);
  const timers = new Map<string, { at: number; cancel: () => void }>();
  let running = false;
  const keyOf = (namespace: string, scheduleId: string) => `${namespace}\u0000${scheduleId}`;

  // ─── timers ───────────────────────────────────────────────────────────────────────────────────────────

  function disarm(key: string): void {
    timers.get(key)?.cancel();
    timers.delete(key);
  }

  /** Keep exactly one timer per schedule, at its next wake time (none while paused or finished). */
  function arm(namespace: string, scheduleId: string, at: number | null): void {
    const key = keyOf(namespace, scheduleId);
    if (!running) return;
    const current = timers.get(key);
    if (current && current.at === at) return;
    disarm(key);
    if (at === null) return;
    // The clock may call back at once when `at` has passed; fire from a fresh stack, outside any transaction.
    const entry = { at, cancel: () => {} };
    timers.set(key, entry);
    entry.cancel = host.clock.at(at, () => {
      if (timers.get(key) !== entry) return;
      timers.delete(key);
      defer(() => wake(namespace, scheduleId));
    });
  }

  // Timer callbacks and closed-run events are handled from a fresh microtask, never inside the caller's stack
  // (which may be the core's, or our own transaction when an overlap policy terminates a run).
  const pending: Array<() => void> = [];
  let drainQueued = false;
  function defer(fn: () => void): void {
    pending.push(fn);
    if (!drainQueued) {
      drainQueued = true;
      queueMicrotask(drain);
    }
  }
  function drain(): void {
    if (host.db.open && host.db.inTransaction) {
      setImmediate(drain); // someone else's transaction is open: run after it
      return;
    }
    drainQueued = false;
    while (pending.length) {
      try {
        pending.shift()!();
      } catch (e) {
        log(`error while handling a timer or a closed run: ${(e as Error).stack ?? e}`);
      }
    }
  }

  /** One step of a schedule in its own transaction; on an unexpected failure, retry a little later. */
  function step(namespace: string, scheduleId: string, fn: (row: ScheduleRow, now: number) => void): void {
    if (!running) return;
    let row: ScheduleRow | undefined;
    try {
      host.db.transaction(() => {
        row = store.get(namespace, scheduleId);
        if (!row) return;
        fn(row, host.clock.now());
        store.save(row);
      })();
    } catch (e) {
      log(`schedule ${scheduleId}: step failed, retrying in ${RETRY_MS / 1000}s: ${(e as Error).stack ?? e}`);
      arm(namespace, scheduleId, host.clock.now() + RETRY_MS);
      return;
    }
    if (row) arm(namespace, scheduleId, engine.nextWake(row));
  }

  const wake = (namespace: string, scheduleId: string) => step(namespace, scheduleId, (row, now) => engine.advance(row, now));

  host.onWorkflowClosed((e) => {
    defer(() => {
      const scheduleId = running ? store.findRun(e.namespace, e) : undefined;
      if (scheduleId === undefined) return;
      // result/failure are optional extensions of the closed event: the core sets them when it has them.
      const extra = e as typeof e & Pick<ClosedRun, 'result' | 'failure'>;
      const run: ClosedRun = { workflowId: e.workflowId, runId: e.runId, status: e.status, result: extra.result, failure: extra.failure };
      step(e.namespace, scheduleId, (row, now) => engine.runClosed(row, run, now));
    });
  });

  // ─── request → row ────────────────────────────────────────────────────────────────────────────────────

  function readSpec(input: SpecInput | null | undefined): Spec {
    try {
      return canonicalizeSpec(input ?? {});
    } catch (e) {
      if (e instanceof SpecError) throw invalid(`Invalid schedule spec: ${e.message}`);
      throw e;
    }
  }

  function readAction(action: ISchedule['action']): Uint8Array {
    const sw = action?.startWorkflow;
    if (!sw) throw invalid('schedule action is not set: a schedule must start a workflow (action.start_workflow)');
    if (!sw.workflowId) throw invalid('schedule action start_workflow.workflow_id is not set');
    if (!sw.workflowType?.name) throw invalid('schedule action start_workflow.workflow_type is not set');
    if (!sw.taskQueue?.name) throw invalid('schedule action start_workflow.task_queue is not set');
    if (sw.cronSchedule) throw invalid('schedule action start_workflow.cron_schedule is not allowed: put the cron string in the schedule spec');
    return ScheduleAction.encode(ScheduleAction.fromObject(action!)).finish();
  }

  /** Definition fields of a Schedule message (spec, action, policies, state) onto a row. */
  function applyDefinition(row: ScheduleRow, schedule: ISchedule, spec: Spec, action: Uint8Array): void {
    row.spec = spec;
    row.action = action;
    const p = schedule.policies;
    row.overlapPolicy = p?.overlapPolicy || OverlapPolicy.SCHEDULE_OVERLAP_POLICY_SKIP;
    if (row.overlapPolicy < 1 || row.overlapPolicy > 6) throw invalid(`unknown overlap policy ${row.overlapPolicy}`);
    const cw = timeMs(p?.catchupWindow);
    row.catchupWindowMs = cw === null || cw === 0 ? DEFAULT_CATCHUP_WINDOW_MS : Math.max(cw, MIN_CATCHUP_WINDOW_MS);
    row.pauseOnFailure = !!p?.pauseOnFailure;
    row.keepOriginalWorkflowId = !!p?.keepOriginalWorkflowId;
    const s = schedule.state;
    row.paused = !!s?.paused;
    row.notes = s?.notes ?? '';
    row.limitedActions = !!s?.limitedActions;
    row.remainingActions = num(s?.remainingActions);
    if (row.remainingActions < 0) throw invalid('schedule state remaining_actions is negative');
  }

  function applyPatch(row: ScheduleRow, patch: ISchedulePatch | null | undefined, now: number): void {
    if (!patch) return;
    if (patch.triggerImmediately) {
      const at = timeMs(patch.triggerImmediately.scheduledTime) || now;
      engine.addStart(row, { nominalMs: at, actualMs: at, overlapPolicy: patch.triggerImmediately.overlapPolicy ?? 0, manual: true });
    }
    for (const bf of patch.backfillRequest ?? []) {
      const start = timeMs(bf.startTime);
      const end = timeMs(bf.endTime);
      if (start === null || end === null) throw invalid('backfill request needs start_time and end_time');
      if (end < start) throw invalid('backfill request end_time is before start_time');
      // Start inclusive, as the real server does since InclusiveBackfillStartTime.
      engine.processTimeRange(row, start - 1, end, bf.overlapPolicy ?? 0, true);
    }
    if (patch.pause) {
      row.paused = true;
      row.notes = patch.pause;
      row.conflictToken += 1;
    }
    if (patch.unpause) {
      row.paused = false;
      row.notes = patch.unpause;
      row.conflictToken += 1;
    }
  }

  function mustGet(namespace: string, scheduleId: string): ScheduleRow {
    host.assertNamespace(namespace);
    if (!scheduleId) throw invalid('schedule_id is not set');
    const row = store.get(namespace, scheduleId);
    if (!row) throw new ServiceError(status.NOT_FOUND, `schedule "${scheduleId}" not found in namespace "${namespace}"`);
    return row;
  }

  const tx = <T>(fn: () => T): T => host.db.transaction(fn)();

  // ─── handlers ─────────────────────────────────────────────────────────────────────────────────────────

  const handlers = {
    CreateSchedule(req: T.api.workflowservice.v1.CreateScheduleRequest) {
      host.assertNamespace(req.namespace);
      if (!req.scheduleId) throw invalid('schedule_id is not set');
      const schedule = req.schedule ?? {};
      const spec = readSpec(schedule.spec);
      const action = readAction(schedule.action);
      const row = tx(() => {
        const existing = store.get(req.namespace, req.scheduleId);
        if (existing) {
          // A retried request (same request ID) succeeds again; anything else is a duplicate.
          if (req.requestId && existing.createRequestId === req.requestId) return existing;
          throw new ServiceError(status.ALREADY_EXISTS, `schedule "${req.scheduleId}" already exists in namespace "${req.namespace}"`);
        }
        const now = host.clock.now();
        const row = {
          namespace: req.namespace,
          scheduleId: req.scheduleId,
          memo: req.memo ? Memo.encode(req.memo).finish() : null,
          searchAttributes: req.searchAttributes ? SearchAttributes.encode(req.searchAttributes).finish() : null,
          createTimeMs: now,
          updateTimeMs: null,
          lastProcessedMs: now,
          actionCount: 0,
          missedCatchupWindow: 0,
          overlapSkipped: 0,
          bufferDropped: 0,
          conflictToken: 1,
          createRequestId: req.requestId ?? '',
          buffer: [],
          running: [],
          recent: [],
          lastCompletionResult: null,
          continuedFailure: null,
        } as unknown as ScheduleRow;
        applyDefinition(row, schedule, spec, action);
        store.insert(row);
        applyPatch(row, req.initialPatch, now);
        engine.advance(row, now);
        store.save(row);
        return row;
      });
      arm(row.namespace, row.scheduleId, engine.nextWake(row));
      return { conflictToken: tokenBytes(row.conflictToken) };
    },

    DescribeSchedule(req: T.api.workflowservice.v1.DescribeScheduleRequest) {
      return describeResponse(mustGet(req.namespace, req.scheduleId), engine);
    },

    UpdateSchedule(req: T.api.workflowservice.v1.UpdateScheduleRequest) {
      const schedule = req.schedule ?? {};
      const spec = readSpec(schedule.spec);
      const action = readAction(schedule.action);
      const row = tx(() => {
        const row = mustGet(req.namespace, req.scheduleId);
        if (req.conflictToken?.length && req.conflictToken.length !== 8) throw invalid('conflict_token is malformed: pass the one DescribeSchedule returned');
        if (req.conflictToken?.length && Buffer.from(req.conflictToken).readBigInt64LE() !== BigInt(row.conflictToken)) {
          throw new ServiceError(status.FAILED_PRECONDITION, `schedule "${req.scheduleId}" was changed concurrently (conflict token mismatch); describe it again and retry`);
        }
        const now = host.clock.now();
        engine.advance(row, now); // what was due under the old definition happens first
        applyDefinition(row, schedule, spec, action);
        if (req.searchAttributes) row.searchAttributes = SearchAttributes.encode(req.searchAttributes).finish();
        if (req.memo) row.memo = Memo.encode(req.memo).finish();
        row.updateTimeMs = now;
        row.lastProcessedMs = Math.max(row.lastProcessedMs, now);
        row.conflictToken += 1;
        engine.advance(row, now);
        store.save(row);
        return row;
      });
      arm(row.namespace, row.scheduleId, engine.nextWake(row));
      return {};
    },

    PatchSchedule(req: T.api.workflowservice.v1.PatchScheduleRequest) {
      const row = tx(() => {
        const row = mustGet(req.namespace, req.scheduleId);
        const now = host.clock.now();
        engine.advance(row, now);
        applyPatch(row, req.patch, now);
        engine.advance(row, now);
        store.save(row);
        return row;
      });
      arm(row.namespace, row.scheduleId, engine.nextWake(row));
      return {};
    },

    DeleteSchedule(req: T.api.workflowservice.v1.DeleteScheduleRequest) {
      tx(() => {
        mustGet(req.namespace, req.scheduleId);
        store.delete(req.namespace, req.scheduleId);
      });
      disarm(keyOf(req.namespace, req.scheduleId));
      return {};
    },

    ListSchedules(req: T.api.workflowservice.v1.ListSchedulesRequest) {
      host.assertNamespace(req.namespace);
      const match = compileListQuery(req.query ?? '');
      const pageSize = req.maximumPageSize > 0 ? Math.min(req.maximumPageSize, MAX_PAGE) : MAX_PAGE;
      let after = req.nextPageToken?.length ? Buffer.from(req.nextPageToken).toString('utf8') : '';
      const out: ScheduleRow[] = [];
      let more = false;
      // Scan in id order in batches until the page is full, so that filters do not produce short pages early.
      for (;;) {
        const batch = store.list(req.namespace, after, MAX_PAGE);
        for (const row of batch) {
          after = row.scheduleId;
          if (!match(queryFacts(row))) continue;
          if (out.length === pageSize) {
            more = true;
            break;
          }
          out.push(row);
        }
        if (more || batch.length < MAX_PAGE) break;
      }
      return {
        schedules: out.map((row) => listEntry(row, engine)),
        nextPageToken: more ? Buffer.from(out[out.length - 1]!.scheduleId, 'utf8') : Buffer.alloc(0),
      };
    },

    CountSchedules(req: T.api.workflowservice.v1.CountSchedulesRequest) {
      host.assertNamespace(req.namespace);
      const match = compileListQuery(req.query ?? '');
      let count = 0;
      for (let after = ''; ; ) {
        const batch = store.list(req.namespace, after, MAX_PAGE);
        for (const row of batch) {
          after = row.scheduleId;
          if (match(queryFacts(row))) count += 1;
        }
        if (batch.length < MAX_PAGE) break;
      }
      return { count };
    },

    ListScheduleMatchingTimes(req: T.api.workflowservice.v1.ListScheduleMatchingTimesRequest) {
      const row = mustGet(req.namespace, req.scheduleId);
      const start = timeMs(req.startTime);
      const end = timeMs(req.endTime);
      if (start === null || end === null) throw invalid('start_time and end_time are required');
      return { startTime: engine.matchingTimes(row, start, end, MAX_MATCHING_TIMES).map(ts) };
    },
  };

  return {
    handlers,
    start() {
      running = true;
      // Re-arm every schedule: catch up on what came due while the server was down, then sleep until next time.
      for (const { namespace, scheduleId } of store.allKeys()) wake(namespace, scheduleId);
    },
    stop() {
      running = false;
      for (const key of [...timers.keys()]) disarm(key);
      pending.length = 0; // a queued drain finds nothing to do
    },
  };
};
