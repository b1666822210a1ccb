// Workflows the dev-server conformance suite runs on the real SDK worker (bundled once per test file).
import {
  proxyActivities, sleep, defineSignal, defineQuery, setHandler, condition, continueAsNew, workflowInfo,
  upsertSearchAttributes, CancellationScope, isCancellation, ActivityFailure, ApplicationFailure,
  ActivityCancellationType, defineUpdate, upsertMemo, patched, proxyLocalActivities, executeChild, startChild, ChildWorkflowFailure, getExternalWorkflowHandle,
} from '@temporalio/workflow';
import { defineSearchAttributeKey } from '@temporalio/common';
import type * as acts from './activities.js';

const quick = proxyActivities<typeof acts>({ startToCloseTimeout: '10s', retry: { initialInterval: '50ms', maximumAttempts: 3 } });

export async function basic(name: string): Promise<string> {
  const greeting = await quick.greet(name);
  await sleep(50);
  return greeting;
}

/** Attempt 1 heartbeats progress and fails; attempt 2 resumes from the heartbeat details. */
export async function retryWithHeartbeat(): Promise<{ attempt: number; resumedFrom: number }> {
  const a = proxyActivities<typeof acts>({ startToCloseTimeout: '10s', heartbeatTimeout: '5s', retry: { initialInterval: '100ms', backoffCoefficient: 2 } });
  return a.resumable(5);
}

export type TimeoutKind = 'scheduleToStart' | 'startToClose' | 'scheduleToClose' | 'heartbeat';

/** Runs an activity that exceeds the given timeout; returns the timeout type the workflow saw and attempts. */
export async function activityTimeout(kind: TimeoutKind): Promise<{ type: string; retryState: string }> {
  const retry = { initialInterval: '50ms', maximumAttempts: 2 };
  const options = {
    scheduleToStart: { scheduleToStartTimeout: '300ms', startToCloseTimeout: '5s', taskQueue: 'nobody-polls-this', retry },
    startToClose: { startToCloseTimeout: '300ms', retry },
    // Attempts of 400 ms with 50 ms backoff: the third attempt is running when the 1 s budget runs out.
    scheduleToClose: { scheduleToCloseTimeout: '1s', startToCloseTimeout: '400ms', retry: { initialInterval: '50ms', backoffCoefficient: 1 } },
    heartbeat: { startToCloseTimeout: '10s', heartbeatTimeout: '300ms', retry },
  }[kind];
  const a = proxyActivities<typeof acts>(options);
  try {
    await (kind === 'heartbeat' ? a.heartbeatOnceThenHang() : a.hang());
    return { type: 'none', retryState: '' };
  } catch (e) {
    if (e instanceof ActivityFailure) return { type: (e.cause as any)?.timeoutType ?? e.cause?.name ?? 'unknown', retryState: String(e.retryState) };
    throw e;
  }
}

export async function nonRetryable(): Promise<{ attempts: number; message: string }> {
  const a = proxyActivities<typeof acts>({ startToCloseTimeout: '5s', retry: { initialInterval: '50ms', maximumAttempts: 5 } });
  try {
    await a.failNonRetryable();
    return { attempts: 0, message: '' };
  } catch (e) {
    const cause = (e as ActivityFailure).cause as ApplicationFailure;
    return { attempts: (cause.details?.[0] as number) ?? -1, message: cause.message };
  }
}

export const cancelActivity = defineSignal('cancelActivity');

/** Runs a heartbeating activity until signalled, then cancels it and waits for the activity to confirm. */
export async function activityCancellation(): Promise<string> {
  const a = proxyActivities<typeof acts>({
    startToCloseTimeout: '30s', heartbeatTimeout: '2s', cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  });
  const scope = new CancellationScope();
  setHandler(cancelActivity, () => scope.cancel());
  try {
    await scope.run(() => a.heartbeatUntilCancelled());
    return 'completed';
  } catch (e) {
    return isCancellation(e) ? 'cancelled' : `error: ${(e as Error).message}`;
  }
}

export const add = defineSignal<[number]>('add');
export const total = defineQuery<number>('total');

export async function signalsAndQueries(target: number): Promise<number> {
  let sum = 0;
  setHandler(add, (n) => void (sum += n));
  setHandler(total, () => sum);
  await condition(() => sum >= target);
  return sum;
}

export async function timers(): Promise<string[]> {
  const order: string[] = [];
  const cancelled = CancellationScope.cancellable(async () => {
    await sleep(60_000);
    order.push('never');
  });
  await Promise.all([sleep(200).then(() => order.push('200ms')), sleep(50).then(() => order.push('50ms'))]);
  void CancellationScope.current().cancelRequested; // keep the root scope alive
  const race = new CancellationScope();
  const p = race.run(() => sleep(60_000)).catch(() => order.push('cancelled'));
  race.cancel();
  await p;
  void cancelled.catch(() => undefined);
  return order;
}

export async function waitForever(): Promise<void> {
  await sleep(3_600_000);
}

export async function chain(left: number, seen: string[] = []): Promise<string[]> {
  seen.push(workflowInfo().runId);
  if (left > 0) return continueAsNew<typeof chain>(left - 1, seen);
  return seen;
}

export const stage = defineSearchAttributeKey('FinetuneStage', 'KEYWORD');
export const step = defineSearchAttributeKey('FinetuneStep', 'INT');

export async function searchAttributes(): Promise<void> {
  upsertSearchAttributes([{ key: step, value: 7 }, { key: stage, value: 'train' }]);
  await sleep(10);
  upsertSearchAttributes([{ key: stage, value: 'eval' }]);
  upsertMemo({ phase: 'done' });
  if (patched('report-v2')) await sleep(1); // patched() also writes TemporalChangeVersion
}

/** Local activities: a quick one (a marker), and one longer than the workflow task timeout, which the worker
 *  covers with workflow-task heartbeats (force_create_new_workflow_task). */
export async function localActivities(): Promise<string[]> {
  const local = proxyLocalActivities<typeof acts>({ startToCloseTimeout: '10s' });
  return [await local.greet('local'), String(await local.slowStep(1500))];
}

/** For kill-and-restart: a durable timer and a running activity at the same time. */
export async function durable(): Promise<string> {
  const a = proxyActivities<typeof acts>({ startToCloseTimeout: '4s', heartbeatTimeout: '2s', retry: { initialInterval: '100ms' } });
  const [r] = await Promise.all([a.slowStep(1500), sleep(1500)]);
  return `done after ${r}`;
}

export async function failing(): Promise<void> {
  throw ApplicationFailure.nonRetryable('workflow failed on purpose', 'Deliberate');
}

/** A bug (not an ApplicationFailure) fails the workflow task, not the workflow: the server retries the task. */
export async function broken(): Promise<void> {
  throw new TypeError('bug in workflow code');
}

/** Two activities completed from outside the worker: the first by task token, the second by workflow/activity ID. */
export async function asyncCompletion(): Promise<string[]> {
  const a = proxyActivities<typeof acts>({ startToCloseTimeout: '20s', activityId: undefined });
  const first = await a.completeLater();
  const second = await proxyActivities<typeof acts>({ startToCloseTimeout: '20s', activityId: 'by-id' }).completeLater();
  return [first, second];
}

export const setTarget = defineUpdate<number, [number]>('setTarget');

/** Updates: a validator rejects bad input (no history trace), the handler changes state and returns a value. */
export async function updatable(): Promise<number> {
  let target = 0;
  setHandler(setTarget, (n) => {
    const previous = target;
    target = n;
    return previous;
  }, { validator: (n) => { if (n < 0) throw new Error('target must not be negative'); } });
  await condition(() => target >= 10);
  return target;
}

/** Children: one executed to completion, one cancelled, one left to the TERMINATE parent-close policy. */
export async function parent(runningChildId: string): Promise<{ result: string; cancelled: boolean; parentSeen: string | undefined }> {
  const result = await executeChild(basic, { args: ['child'], workflowId: `${workflowInfo().workflowId}-basic` });
  const parentSeen = await executeChild(whoIsMyParent, { workflowId: `${workflowInfo().workflowId}-who` });
  let cancelled = false;
  const scope = new CancellationScope();
  const child = scope.run(() => executeChild(waitForever, { workflowId: `${workflowInfo().workflowId}-cancelled` }));
  await sleep(100);
  scope.cancel();
  try {
    await child;
  } catch (e) {
    cancelled = e instanceof ChildWorkflowFailure && isCancellation(e.cause);
  }
  await startChild(waitForever, { workflowId: runningChildId, parentClosePolicy: 'TERMINATE' });
  return { result, cancelled, parentSeen };
}

export async function whoIsMyParent(): Promise<string | undefined> {
  return workflowInfo().parent?.workflowId;
}

/** Signals another workflow through an external handle, and reports a signal to a missing one. */
export async function signalOther(targetId: string): Promise<string> {
  await getExternalWorkflowHandle(targetId).signal(add, 3);
  try {
    await getExternalWorkflowHandle(`${targetId}-missing`).signal(add, 1);
    return 'no error';
  } catch (e) {
    return `${(e as Error).name}: ${(e as Error).message}`;
  }
}

/** Starting a child whose ID is taken fails in the parent. */
export async function duplicateChild(takenId: string): Promise<string> {
  try {
    await startChild(waitForever, { workflowId: takenId });
    return 'started';
  } catch (e) {
    return (e as Error).name;
  }
}

/** Fails its first two attempts; a workflow retry policy runs it again until attempt 3 succeeds. */
export async function flakyWorkflow(): Promise<number> {
  const { attempt } = workflowInfo();
  if (attempt < 3) throw ApplicationFailure.retryable(`attempt ${attempt} failed`, 'Flaky');
  return attempt;
}

/** A day of timers and a retry with a long backoff: seconds of real time under a time-skipping server. */
export async function longWait(): Promise<number> {
  const started = Date.now();
  await sleep('1 day');
  const a = proxyActivities<typeof acts>({ startToCloseTimeout: '10s', retry: { initialInterval: '1 hour', maximumAttempts: 2 } });
  await a.failFirstAttempt();
  return Date.now() - started;
}
