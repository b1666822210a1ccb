// Every activity timeout and retry policy of the `finetune` workflow, in one place.
//
// Why these numbers: heartbeats are what detect a dead worker, so long activities have a heartbeat timeout
// (cfg.temporal.heartbeatTimeoutSeconds, 60 s by default; tests use a few seconds) and a generous start-to-close
// timeout that only catches a stuck-but-heartbeating attempt. Failures that another attempt cannot fix (bad
// config, out of memory, divergence, bad shapes) are thrown by the activities as non-retryable ApplicationFailures
// and are also listed here, so a policy change cannot make them retry blindly.
import { ActivityCancellationType, type ActivityOptions } from '@temporalio/workflow';

/** Error types (ApplicationFailure.type) that no retry can fix. */
export const NON_RETRYABLE = ['BAD_CONFIG', 'OUT_OF_MEMORY', 'DIVERGED', 'NON_FINITE_LOSS', 'BAD_SHAPE', 'BAD_DATA', 'EROFS', 'EACCES', 'EPERM', 'ENOTDIR'];

interface Queues {
  taskQueue: string;
  gpuTaskQueue: string;
  heartbeatTimeoutSeconds: number;
}

const retry = (maximumAttempts: number) => ({
  initialInterval: '1s',
  backoffCoefficient: 2,
  maximumInterval: '1m',
  maximumAttempts,
  nonRetryableErrorTypes: NON_RETRYABLE,
});

/** Validation: fast and pure; a bad config is non-retryable, so the attempts only cover a lost worker. */
export function validateOptions(t: Queues): ActivityOptions {
  return { taskQueue: t.taskQueue, startToCloseTimeout: '1m', retry: retry(5) };
}

/** Small bookkeeping on the CPU queue (listing checkpoints, writing the report, the series pointer). */
export function bookkeepingOptions(t: Queues): ActivityOptions {
  return { taskQueue: t.taskQueue, startToCloseTimeout: '5m', retry: retry(10) };
}

/** Load → tokenize → shard: heartbeats per batch of documents; the output is content-addressed, so a retry reuses it. */
export function prepareOptions(t: Queues): ActivityOptions {
  return {
    taskQueue: t.taskQueue,
    startToCloseTimeout: '6h',
    heartbeatTimeout: `${t.heartbeatTimeoutSeconds}s`,
    retry: retry(10),
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  };
}

/**
 * One training segment. A missed heartbeat means the worker died: the retry (on any GPU worker) resumes from the
 * last committed checkpoint. WAIT_CANCELLATION_COMPLETED: a cancelled segment checkpoints before the workflow
 * moves on, so "checkpoint now", "stop" and workflow cancellation never lose trained steps.
 */
export function trainOptions(t: Queues): ActivityOptions {
  return {
    taskQueue: t.gpuTaskQueue,
    startToCloseTimeout: '24h',
    heartbeatTimeout: `${t.heartbeatTimeoutSeconds}s`,
    retry: retry(20),
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  };
}

/** Export, evaluate, generate: GPU work of bounded length, heartbeating while it loads and runs. */
export function gpuOptions(t: Queues): ActivityOptions {
  return {
    taskQueue: t.gpuTaskQueue,
    startToCloseTimeout: '2h',
    heartbeatTimeout: `${t.heartbeatTimeoutSeconds}s`,
    retry: retry(10),
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  };
}

/**
 * Multi-worker training: the rendezvous and one trainRank per worker, each on that worker's own queue. Never
 * retried by Temporal: a lone rank cannot rejoin a communicator, so the workflow cancels every rank when one fails
 * and restarts the group (new rendezvous, all ranks, same checkpoint), up to temporal.maxRestarts times.
 * scheduleToStart bounds the wait for a worker that is not there (its peers would wait in the NCCL setup).
 */
export function rankOptions(t: Queues & { rankStartTimeoutSeconds: number }, queue: string): ActivityOptions {
  return {
    taskQueue: queue,
    scheduleToStartTimeout: `${t.rankStartTimeoutSeconds}s`,
    startToCloseTimeout: '24h',
    heartbeatTimeout: `${t.heartbeatTimeoutSeconds}s`,
    retry: { maximumAttempts: 1 },
    cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  };
}

export function rendezvousOptions(t: Queues & { rankStartTimeoutSeconds: number }, queue: string): ActivityOptions {
  return { taskQueue: queue, scheduleToStartTimeout: `${t.rankStartTimeoutSeconds}s`, startToCloseTimeout: '2m', retry: { maximumAttempts: 1 } };
}
