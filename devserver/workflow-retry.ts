// Workflow retry policies, as on a real server: a run that fails (or hits its run timeout) and has a retry policy
// is followed by a new run of the same workflow ID — attempt + 1, same input, initiator RETRY, the failure as
// `continued_failure`, the backoff as `first_workflow_task_backoff` — and its closing event names the new run
// (`new_execution_run_id`), which the client's result() follows.
import { randomUUID } from 'node:crypto';
import type { temporal as T } from '@temporalio/proto';
import type { EngineHost as Engine } from './host.js';
import type { RunTx } from './run.js';
import { ET, WS, RetryState, HistoryEvent, ms } from './proto.js';

/** Retry state for a closing failure, and the delay before the next attempt when it is IN_PROGRESS. */
function decide(r: RunTx, start: T.api.history.v1.IWorkflowExecutionStartedEventAttributes, failure: T.api.failure.v1.IFailure | null | undefined, isTimeout: boolean) {
  const p = start.retryPolicy;
  if (!p) return { state: isTimeout ? RetryState.RETRY_STATE_TIMEOUT : RetryState.RETRY_STATE_RETRY_POLICY_NOT_SET, delay: 0 };
  const attempt = start.attempt || 1;
  const type = isTimeout ? 'TemporalTimeout:StartToClose' : (failure?.applicationFailureInfo?.type ?? '');
  if (failure?.applicationFailureInfo?.nonRetryable || (p.nonRetryableErrorTypes ?? []).includes(type)) return { state: RetryState.RETRY_STATE_NON_RETRYABLE_FAILURE, delay: 0 };
  if ((p.maximumAttempts ?? 0) > 0 && attempt >= p.maximumAttempts!) return { state: RetryState.RETRY_STATE_MAXIMUM_ATTEMPTS_REACHED, delay: 0 };
  const initial = ms(p.initialInterval) || 1000;
  const next = ms(failure?.applicationFailureInfo?.nextRetryDelay);
  const delay = next > 0 ? next : Math.min(initial * Math.pow(p.backoffCoefficient || 2, attempt - 1), ms(p.maximumInterval) || 100 * initial);
  if (r.s.execExpirationMs > 0 && r.now + delay >= r.s.execExpirationMs) return { state: RetryState.RETRY_STATE_TIMEOUT, delay: 0 };
  return { state: RetryState.RETRY_STATE_IN_PROGRESS, delay };
}

/** Closes the run as failed (FAIL command) or timed out (run timeout), starting the retry run when the policy allows. */
export function closeWithRetry(engine: Engine, r: RunTx, how: { failure: T.api.failure.v1.IFailure | null | undefined; completedId: number } | { timeout: true }): void {
  const s = r.s;
  const start = HistoryEvent.decode(engine.store.readEvent(s.runId, 1)!).workflowExecutionStartedEventAttributes!;
  const isTimeout = 'timeout' in how;
  const failure = isTimeout ? null : how.failure;
  const { state, delay } = decide(r, start, failure, isTimeout);
  let newExecutionRunId = '';
  if (state === RetryState.RETRY_STATE_IN_PROGRESS) {
    newExecutionRunId = engine.createRun({
      namespace: s.namespace, workflowId: s.workflowId, type: s.type, taskQueue: s.taskQueue, input: start.input,
      header: start.header, memo: start.memo, searchAttributes: start.searchAttributes, wftTimeoutMs: s.wftTimeoutMs,
      runTimeoutMs: s.runTimeoutMs, execTimeoutMs: s.execTimeoutMs, execExpirationMs: s.execExpirationMs,
      requestId: randomUUID(), identity: 'history-service', firstRunId: s.firstRunId, continuedRunId: s.runId,
      initiator: 2, continuedFailure: failure ?? { message: 'workflow run timed out', timeoutFailureInfo: { timeoutType: 1 } },
      lastCompletionResult: start.lastCompletionResult, backoffMs: delay, retryPolicy: start.retryPolicy,
      attempt: (start.attempt || 1) + 1, parent: s.parent, priority: start.priority,
    });
    s.newRunId = newExecutionRunId;
  }
  if (isTimeout) {
    engine.forceClose(r, WS.WORKFLOW_EXECUTION_STATUS_TIMED_OUT, {
      eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
      workflowExecutionTimedOutEventAttributes: { retryState: state === RetryState.RETRY_STATE_RETRY_POLICY_NOT_SET ? RetryState.RETRY_STATE_TIMEOUT : state, newExecutionRunId },
    });
  } else {
    r.close(WS.WORKFLOW_EXECUTION_STATUS_FAILED, {
      eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
      workflowExecutionFailedEventAttributes: { failure, retryState: state, workflowTaskCompletedEventId: how.completedId, newExecutionRunId },
    });
  }
}
