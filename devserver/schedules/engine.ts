// What a schedule does as time passes: turn spec times into starts (catch-up window, pause, remaining actions),
// resolve starts against running workflows with the overlap policy, and start workflows through the host.
// Mirrors the real server's scheduler (temporalio/temporal service/worker/scheduler/workflow.go and buffer.go),
// run natively: every step works on one ScheduleRow inside the caller's SQLite transaction.
import { randomUUID } from 'node:crypto';
import type { temporal as T } from '@temporalio/proto';
import { temporal } from './proto.js';
import { ServiceError, type ScheduleHost } from '../contract.js';
import { compileSpec, getNextTime, type CompiledSpec } from './spec.js';
import type { BufferedStart, RecentAction, ScheduleRow, ScheduleStore } from './store.js';

export const OverlapPolicy = temporal.api.enums.v1.ScheduleOverlapPolicy;
const WorkflowStatus = temporal.api.enums.v1.WorkflowExecutionStatus;
const ReusePolicy = temporal.api.enums.v1.WorkflowIdReusePolicy;
const { ScheduleAction } = temporal.api.schedule.v1;
const { StartWorkflowExecutionRequest } = temporal.api.workflowservice.v1;
const { Payloads } = temporal.api.common.v1;
const { Failure } = temporal.api.failure.v1;

export const RECENT_ACTIONS = 10;
export const FUTURE_ACTIONS = 10;
export const DEFAULT_CATCHUP_WINDOW_MS = 365 * 24 * 3600 * 1000;
export const MIN_CATCHUP_WINDOW_MS = 10_000;
/** Starts waiting in the buffer beyond this are dropped (counted in buffer_dropped), as on the real server. */
export const MAX_BUFFER = 1000;
/** Missed times counted one by one after downtime; beyond this the rest of the gap is skipped without counting. */
const MAX_MISSED_SCAN = 100_000;

export const rfc3339 = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');

const compiled = new WeakMap<object, CompiledSpec>();
function specOf(row: ScheduleRow): CompiledSpec {
  let cs = compiled.get(row.spec);
  if (!cs) compiled.set(row.spec, (cs = compileSpec(row.spec)));
  return cs;
}

/** Jitter differs between schedules but stays the same for one schedule across restarts. */
const seedOf = (row: ScheduleRow) => `${row.namespace}/${row.scheduleId}`;

export function resolvePolicy(row: ScheduleRow, policy: number): number {
  return policy || row.overlapPolicy || OverlapPolicy.SCHEDULE_OVERLAP_POLICY_SKIP;
}

/** Whether a start may be taken now; `decrement` uses up one of the remaining actions. */
function canTake(row: ScheduleRow, manual: boolean, decrement: boolean): boolean {
  if (manual) return true;
  if (row.paused) return false;
  if (!row.limitedActions) return true;
  if (row.remainingActions <= 0) return false;
  if (decrement) row.remainingActions -= 1;
  return true;
}

/** What the host reports about a closed run; result/failure only when the host provides them. */
export interface ClosedRun {
  workflowId: string;
  runId: string;
  status: number;
  result?: T.api.common.v1.IPayloads | null;
  failure?: T.api.failure.v1.IFailure | null;
}

export class ScheduleEngine {
  constructor(
    private readonly host: ScheduleHost,
    private readonly store: ScheduleStore,
    private readonly log: (line: string) => void,
  ) {}

  /** Handle every spec time in (lastProcessed, now], then take whatever the buffer allows. */
  advance(row: ScheduleRow, now: number): void {
    const start = row.lastProcessedMs;
    if (now > start) row.lastProcessedMs = this.processTimeRange(row, start, now, 0, false);
    for (let i = 0; i < 10 && this.processBuffer(row, now); i++);
  }

  /**
   * Buffer the spec times in (start, end]. Returns how far time has been handled: `end`, or just before a time
   * whose nominal moment has passed but whose jittered moment has not.
   */
  processTimeRange(row: ScheduleRow, start: number, end: number, overlapPolicy: number, manual: boolean): number {
    // Paused or out of actions: the whole range passes without actions (and without counting misses).
    if (!canTake(row, manual, false)) return end;
    const cs = specOf(row);
    const catchup = row.catchupWindowMs;
    let missedScan = 0;
    for (let next = getNextTime(cs, start, seedOf(row)); next; next = getNextTime(cs, next.nominalMs, seedOf(row))) {
      if (next.actualMs > end) return Math.max(start, Math.min(end, next.nominalMs - 1));
      if (!manual && row.updateTimeMs !== null && row.updateTimeMs > next.actualMs) continue; // before the last update
      if (!manual && end - next.actualMs > catchup) {
        row.missedCatchupWindow += 1;
        if (++missedScan >= MAX_MISSED_SCAN) {
          // Long downtime with a dense spec: skip the rest of the missed stretch in one jump.
          next = { nominalMs: end - catchup - 1000, actualMs: end - catchup - 1000 };
        }
        continue;
      }
      this.addStart(row, { nominalMs: next.nominalMs, actualMs: next.actualMs, overlapPolicy, manual });
    }
    return end;
  }

  addStart(row: ScheduleRow, start: BufferedStart): void {
    if (row.buffer.length >= MAX_BUFFER) {
      row.bufferDropped += 1;
      this.log(`schedule ${row.scheduleId}: buffer full (${MAX_BUFFER}), dropping the start for ${rfc3339(start.nominalMs)}`);
      return;
    }
    row.buffer.push(start);
  }

  /** Start, skip, keep or cancel/terminate per overlap policy. Returns true when another pass may do more. */
  processBuffer(row: ScheduleRow, now: number): boolean {
    row.running = row.running.filter((r) => this.host.isRunning(row.namespace, r.workflowId, r.runId));
    if (row.buffer.length === 0) return false;
    const isRunning = row.running.length > 0;
    const plan = planBuffer(row.buffer, isRunning, (p) => resolvePolicy(row, p));
    row.buffer = plan.newBuffer;
    row.overlapSkipped += plan.overlapSkipped;

    let tryAgain = false;
    const starts = plan.nonOverlapping ? [...plan.overlapping, plan.nonOverlapping] : plan.overlapping;
    for (const start of starts) {
      if (!canTake(row, start.manual, true)) {
        tryAgain = true;
        continue;
      }
      const result = this.startWorkflow(row, start, now);
      if (!result) {
        tryAgain = true;
        continue;
      }
      row.actionCount += 1;
      row.recent = [...row.recent, result].slice(-RECENT_ACTIONS);
      // Only the non-overlapping run is what later starts overlap with; ALLOW_ALL runs are not tracked.
      if (start === plan.nonOverlapping) row.running.push({ workflowId: result.workflowId, runId: result.runId });
    }
    if (plan.needTerminate || plan.needCancel) {
      for (const r of row.running) {
        const reason = `overlap policy of schedule ${row.scheduleId}`;
        try {
          if (plan.needTerminate) this.host.terminate(row.namespace, r.workflowId, r.runId, reason);
          else this.host.requestCancel(row.namespace, r.workflowId, r.runId, reason);
        } catch (e) {
          if (!(e instanceof ServiceError)) throw e;
          this.log(`schedule ${row.scheduleId}: could not ${plan.needTerminate ? 'terminate' : 'cancel'} ${r.workflowId}: ${e.message}`);
        }
      }
    }
    return tryAgain;
  }

  /** Start the schedule's workflow for one buffered start; null when the server refused it (logged). */
  private startWorkflow(row: ScheduleRow, start: BufferedStart, now: number): RecentAction | null {
    const sw = ScheduleAction.decode(row.action).startWorkflow;
    if (!sw) return null;
    const nominalSec = Math.floor(start.nominalMs / 1000) * 1000;
    const policy = resolvePolicy(row, start.overlapPolicy);
    const appendTime = !row.keepOriginalWorkflowId || policy === OverlapPolicy.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL;
    const workflowId = appendTime ? `${sw.workflowId}-${rfc3339(nominalSec)}` : sw.workflowId!;
    // The last tracked run's outcome goes to the next run; ALLOW_ALL runs neither see nor set it (as on the server).
    const allowAll = policy === OverlapPolicy.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL;
    const lastCompletionResult = !allowAll && row.lastCompletionResult ? Payloads.decode(row.lastCompletionResult) : null;
    const continuedFailure = !allowAll && row.continuedFailure ? Failure.decode(row.continuedFailure) : null;
    const searchAttributes = {
      indexedFields: {
        ...(sw.searchAttributes?.indexedFields ?? {}),
        TemporalScheduledStartTime: jsonPayload(new Date(nominalSec).toISOString(), 'Datetime'),
        TemporalScheduledById: jsonPayload(row.scheduleId, 'Keyword'),
      },
    };
    // Round-trip through the wire encoding so the core gets exactly what a StartWorkflowExecution RPC decodes to.
    const request = StartWorkflowExecutionRequest.decode(
      StartWorkflowExecutionRequest.encode(
        StartWorkflowExecutionRequest.fromObject({
          namespace: row.namespace,
          workflowId,
          workflowType: sw.workflowType,
          taskQueue: sw.taskQueue,
          input: sw.input,
          workflowExecutionTimeout: sw.workflowExecutionTimeout,
          workflowRunTimeout: sw.workflowRunTimeout,
          workflowTaskTimeout: sw.workflowTaskTimeout,
          identity: `temporal-scheduler-${row.namespace}-${row.scheduleId}`,
          requestId: randomUUID(),
          // A scheduled time runs once; a manual trigger may reuse the ID of a closed run.
          workflowIdReusePolicy: start.manual
            ? ReusePolicy.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE
            : ReusePolicy.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE,
          retryPolicy: sw.retryPolicy,
          memo: sw.memo,
          searchAttributes,
          header: sw.header,
          userMetadata: sw.userMetadata,
          priority: sw.priority,
          lastCompletionResult,
          continuedFailure,
        }),
      ).finish(),
    );
    let runId: string;
    try {
      runId = this.host.startWorkflow(row.namespace, request).runId;
    } catch (e) {
      // Refusals (ID conflict, unknown task queue/namespace) drop this start, as the real server does; anything
      // else is a server fault and rolls the whole step back so it is retried.
      if (!(e instanceof ServiceError)) throw e;
      this.log(`schedule ${row.scheduleId}: starting ${workflowId} failed: ${e.message}`);
      return null;
    }
    this.store.addRun(row.namespace, { workflowId, runId }, row.scheduleId);
    return {
      scheduleTimeMs: start.actualMs,
      actualTimeMs: now,
      workflowId,
      runId,
      status: WorkflowStatus.WORKFLOW_EXECUTION_STATUS_RUNNING,
    };
  }

  /** A run this schedule started has closed: update its status, maybe pause, then take buffered starts. */
  runClosed(row: ScheduleRow, run: ClosedRun, now: number): void {
    this.store.dropRun(row.namespace, run);
    const tracked = row.running.some((r) => r.workflowId === run.workflowId && r.runId === run.runId);
    row.running = row.running.filter((r) => !(r.workflowId === run.workflowId && r.runId === run.runId));
    if (tracked && run.status === WorkflowStatus.WORKFLOW_EXECUTION_STATUS_COMPLETED && run.result) {
      row.lastCompletionResult = Payloads.encode(run.result).finish();
      row.continuedFailure = null;
    } else if (tracked && run.failure) {
      row.continuedFailure = Failure.encode(run.failure).finish(); // the last result stays
    }
    for (const a of row.recent) if (a.workflowId === run.workflowId && a.runId === run.runId) a.status = run.status;
    const failed = run.status === WorkflowStatus.WORKFLOW_EXECUTION_STATUS_FAILED;
    const timedOut = run.status === WorkflowStatus.WORKFLOW_EXECUTION_STATUS_TIMED_OUT;
    if (row.pauseOnFailure && (failed || timedOut) && !row.paused) {
      row.paused = true;
      row.notes = `paused due to workflow ${failed ? 'failure' : 'timeout'}: ${run.workflowId}`;
      row.conflictToken += 1;
    }
    this.advance(row, now);
  }

  /** When the schedule next needs to wake up by itself, or null (paused, out of actions, no more times). */
  nextWake(row: ScheduleRow): number | null {
    if (!canTake(row, false, false)) return null;
    return getNextTime(specOf(row), row.lastProcessedMs, seedOf(row))?.actualMs ?? null;
  }

  /** The next `n` action times, as DescribeSchedule reports them. */
  futureTimes(row: ScheduleRow, n: number): number[] {
    if (row.limitedActions) n = Math.min(n, Math.max(row.remainingActions, 0));
    const out: number[] = [];
    const cs = specOf(row);
    for (let next = getNextTime(cs, row.lastProcessedMs, seedOf(row)); next && out.length < n; next = getNextTime(cs, next.nominalMs, seedOf(row))) {
      if (row.updateTimeMs !== null && row.updateTimeMs > next.actualMs) continue;
      out.push(next.actualMs);
    }
    return out;
  }

  /** Times in (startMs, endMs] that the spec matches (ListScheduleMatchingTimes), at most `limit`. */
  matchingTimes(row: ScheduleRow, startMs: number, endMs: number, limit: number): number[] {
    const out: number[] = [];
    const cs = specOf(row);
    for (let next = getNextTime(cs, startMs, seedOf(row)); next && next.actualMs <= endMs && out.length < limit; next = getNextTime(cs, next.nominalMs, seedOf(row))) {
      out.push(next.actualMs);
    }
    return out;
  }
}

function jsonPayload(value: string, type: string) {
  return { metadata: { encoding: Buffer.from('json/plain'), type: Buffer.from(type) }, data: Buffer.from(JSON.stringify(value)) };
}

export interface BufferPlan {
  /** ALLOW_ALL starts: all start now. */
  overlapping: BufferedStart[];
  /** The one start that does not overlap with anything, if any. */
  nonOverlapping: BufferedStart | null;
  newBuffer: BufferedStart[];
  needCancel: boolean;
  needTerminate: boolean;
  overlapSkipped: number;
}

/** The overlap-policy decision for a buffer, as a pure function (the real server's ProcessBuffer). */
export function planBuffer(buffer: BufferedStart[], isRunning: boolean, resolve: (p: number) => number): BufferPlan {
  const plan: BufferPlan = { overlapping: [], nonOverlapping: null, newBuffer: [], needCancel: false, needTerminate: false, overlapSkipped: 0 };
  for (const start of buffer) {
    const policy = resolve(start.overlapPolicy);
    if (policy === OverlapPolicy.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL) {
      plan.overlapping.push(start);
      continue;
    }
    if (!isRunning && !plan.nonOverlapping) {
      plan.nonOverlapping = start;
      continue;
    }
    switch (policy) {
      case OverlapPolicy.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE:
        if (plan.newBuffer.length === 0) plan.newBuffer.push(start);
        else plan.overlapSkipped += 1;
        break;
      case OverlapPolicy.SCHEDULE_OVERLAP_POLICY_BUFFER_ALL:
        plan.newBuffer.push(start);
        break;
      case OverlapPolicy.SCHEDULE_OVERLAP_POLICY_CANCEL_OTHER:
      case OverlapPolicy.SCHEDULE_OVERLAP_POLICY_TERMINATE_OTHER:
        if (isRunning) {
          // Stop the running one; this start waits in the buffer until it has closed.
          if (policy === OverlapPolicy.SCHEDULE_OVERLAP_POLICY_CANCEL_OTHER) plan.needCancel = true;
          else plan.needTerminate = true;
          plan.newBuffer.push(start);
        } else {
          plan.nonOverlapping = start; // replaces the one we were about to start
        }
        break;
      default: // SKIP
        plan.overlapSkipped += 1;
    }
  }
  // Starting ALLOW_ALL runs that would be cancelled/terminated right away is pointless.
  if (plan.needCancel || plan.needTerminate) plan.overlapping = [];
  return plan;
}
