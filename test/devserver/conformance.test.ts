// Conformance of the dev server with the real TypeScript SDK (client + sdk-core worker): the behaviours the
// pipeline relies on. Runs against a real cluster instead when TEMPORAL_ADDRESS is set.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomUUID } from 'node:crypto';
import { WorkflowFailedError, WorkflowExecutionAlreadyStartedError, WorkflowUpdateFailedError } from '@temporalio/client';
import { CancelledFailure, TerminatedFailure, ApplicationFailure, TimeoutFailure } from '@temporalio/common';
import { setupEnv, eventually, type Env } from './env.js';
import type * as wf from './workflows.js';
import { temporal } from '../../devserver/proto.js';

let env: Env;
beforeAll(async () => {
  env = await setupEnv('conformance');
  // Custom search attributes must be registered on a real server; the dev server accepts the same call.
  await env.connection.operatorService
    .addSearchAttributes({
      namespace: env.namespace,
      searchAttributes: {
        FinetuneStage: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
        FinetuneStep: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_INT,
      },
    })
    .catch((e: { code?: number }) => {
      if (e.code !== 6) throw e; // ALREADY_EXISTS
    });
});
afterAll(async () => env?.close());

const id = (p: string) => `${p}-${randomUUID()}`;
function start<W extends (...a: any[]) => any>(type: string, args: Parameters<W>, extra: Record<string, unknown> = {}) {
  return env.client.workflow.start<W>(type, { taskQueue: env.taskQueue, workflowId: id(type), args, ...extra } as any).then((h) => env.track(h));
}

describe('workflows and activities', () => {
  it('runs start → activity → timer → completion, and result() long-polls', async () => {
    const h = await start<typeof wf.basic>('basic', ['GPT']);
    expect(await h.result()).toBe('Hello, GPT!');
    const d = await h.describe();
    expect(d.status.name).toBe('COMPLETED');
    expect(d.historyLength).toBeGreaterThan(8);
  });

  it('retries a failed activity with backoff and hands heartbeat details to the next attempt', async () => {
    const h = await start<typeof wf.retryWithHeartbeat>('retryWithHeartbeat', []);
    expect(await h.result()).toEqual({ attempt: 2, resumedFrom: 3 });
  });

  it.each([
    ['scheduleToStart', 'SCHEDULE_TO_START', 'TIMEOUT'],
    ['startToClose', 'START_TO_CLOSE', 'MAXIMUM_ATTEMPTS_REACHED'],
    ['scheduleToClose', 'SCHEDULE_TO_CLOSE', 'TIMEOUT'],
    ['heartbeat', 'HEARTBEAT', 'MAXIMUM_ATTEMPTS_REACHED'],
  ] as const)('enforces the %s timeout', async (kind, type, retryState) => {
    const h = await start<typeof wf.activityTimeout>('activityTimeout', [kind]);
    expect(await h.result()).toEqual({ type, retryState });
  });

  it('does not retry a non-retryable activity failure', async () => {
    const h = await start<typeof wf.nonRetryable>('nonRetryable', []);
    expect(await h.result()).toEqual({ attempts: 1, message: 'bad config: block_size must be positive' });
  });

  it('delivers activity cancellation through the heartbeat and waits for the activity to confirm', async () => {
    const h = await start<typeof wf.activityCancellation>('activityCancellation', []);
    await eventually(async () => (await h.describe()).raw.pendingActivities?.[0]?.state === 2, 10_000, 'activity started');
    await h.signal('cancelActivity');
    expect(await h.result()).toBe('cancelled');
    const events = (await h.fetchHistory()).events ?? [];
    const types = events.map((e) => e.eventType);
    const ET = temporal.api.enums.v1.EventType;
    expect(types).toContain(ET.EVENT_TYPE_ACTIVITY_TASK_CANCEL_REQUESTED);
    expect(types).toContain(ET.EVENT_TYPE_ACTIVITY_TASK_CANCELED);
  });

  it('completes activities asynchronously by task token and by activity ID', async () => {
    const { asyncTokens } = await import('./activities.js');
    const before = asyncTokens.length;
    const h = await start<typeof wf.asyncCompletion>('asyncCompletion', []);
    await eventually(async () => asyncTokens.length > before, 10_000, 'the first activity');
    await env.client.activity.heartbeat(asyncTokens[before]!, 'still working');
    await env.client.activity.complete(asyncTokens[before]!, 'by token');
    await eventually(async () => (await h.describe()).raw.pendingActivities?.[0]?.activityId === 'by-id', 10_000, 'the second activity');
    await eventually(async () => (await h.describe()).raw.pendingActivities?.[0]?.state === 2, 10_000, 'the second activity to start');
    await env.client.activity.complete({ workflowId: h.workflowId, activityId: 'by-id' }, 'by id');
    expect(await h.result()).toEqual(['by token', 'by id']);
  });

  it('records local activities as markers, with workflow-task heartbeats for a long one', async () => {
    const h = await start<typeof wf.localActivities>('localActivities', [], { workflowTaskTimeout: '1s' });
    expect(await h.result()).toEqual(['Hello, local!', '1']);
    const ET = temporal.api.enums.v1.EventType;
    const types = ((await h.fetchHistory()).events ?? []).map((e) => e.eventType);
    expect(types.filter((t) => t === ET.EVENT_TYPE_MARKER_RECORDED)).toHaveLength(2);
    // 1.5 s of local activity under a 1 s task timeout: the worker heartbeats the task instead of timing out.
    expect(types.filter((t) => t === ET.EVENT_TYPE_WORKFLOW_TASK_COMPLETED).length).toBeGreaterThanOrEqual(2);
    expect(types).not.toContain(ET.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT);
  });

  it('fails the workflow with the failure the workflow threw', async () => {
    const h = await start<typeof wf.failing>('failing', []);
    const err = await h.result().catch((e) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect((err as WorkflowFailedError).cause).toBeInstanceOf(ApplicationFailure);
    expect((err as WorkflowFailedError).cause?.message).toBe('workflow failed on purpose');
  });
  it('retries a failing workflow task after the task timeout (the worker reports only the first failure)', async () => {
    const h = await start<typeof wf.broken>('broken', [], { workflowTaskTimeout: '1s' });
    await eventually(async () => ((await h.describe()).raw.pendingWorkflowTask?.attempt ?? 0) >= 3, 15_000, 'workflow task attempt 3');
    expect((await h.describe()).status.name).toBe('RUNNING');
    const queryErr = (await h.query('anything').then(() => undefined, (e: unknown) => e)) as { code?: number; cause?: { code?: number } } | undefined;
    expect(queryErr?.code ?? queryErr?.cause?.code).toBe(9); // FAILED_PRECONDITION: the task is failing
    await h.terminate('test done');
  });
});

describe('messages and lifecycle', () => {
  it('answers queries and applies signals', async () => {
    const h = await start<typeof wf.signalsAndQueries>('signalsAndQueries', [10]);
    await h.signal(  'add', 4);
    expect(await eventually(async () => (await h.query<number>('total')) === 4, 10_000, 'query to see the signal')).toBe(true);
    await h.signal('add', 6);
    expect(await h.result()).toBe(10);
    expect(await h.query<number>('total')).toBe(10); // queries work on closed workflows too
  });

  it('signal-with-start starts once and then only signals', async () => {
    const workflowId = id('sws');
    const opts = { taskQueue: env.taskQueue, workflowId, args: [5] as [number], signal: 'add', signalArgs: [2] as [number] };
    const h1 = env.track(await env.client.workflow.signalWithStart<typeof wf.signalsAndQueries, [number]>('signalsAndQueries', opts));
    const h2 = await env.client.workflow.signalWithStart<typeof wf.signalsAndQueries, [number]>('signalsAndQueries', { ...opts, signalArgs: [3] });
    expect(h2.signaledRunId).toBe(h1.signaledRunId);
    expect(await h1.result()).toBe(5);
  });

  it('runs workflow updates: rejected by the validator, then accepted and completed', async () => {
    const h = await start<typeof wf.updatable>('updatable', []);
    const rejected = await h.executeUpdate<number, [number]>('setTarget', { args: [-1] }).catch((e) => e);
    expect(rejected).toBeInstanceOf(WorkflowUpdateFailedError);
    expect(rejected.cause?.message).toBe('target must not be negative');
    expect(await h.executeUpdate<number, [number]>('setTarget', { args: [4] })).toBe(0);
    const handle = await h.startUpdate<number, [number]>('setTarget', { args: [12], waitForStage: 'ACCEPTED', updateId: 'final' });
    expect(await handle.result()).toBe(4);
    expect(await h.result()).toBe(12);
  });

  it('fires timers in order and cancels a cancelled one', async () => {
    const h = await start<typeof wf.timers>('timers', []);
    expect(await h.result()).toEqual(['50ms', '200ms', 'cancelled']);
  });

  it('cancels a workflow', async () => {
    const h = await start<typeof wf.waitForever>('waitForever', []);
    await eventually(async () => (await h.describe()).historyLength! >= 5, 10_000, 'first workflow task');
    await h.cancel();
    const err = await h.result().catch((e) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(err.cause).toBeInstanceOf(CancelledFailure);
    expect((await h.describe()).status.name).toBe('CANCELLED');
  });

  it('terminates a workflow', async () => {
    const h = await start<typeof wf.waitForever>('waitForever', []);
    await h.terminate('operator stopped it');
    const err = await h.result().catch((e) => e);
    expect(err.cause).toBeInstanceOf(TerminatedFailure);
    expect((await h.describe()).status.name).toBe('TERMINATED');
  });

  it('times out a workflow that outlives its run timeout', async () => {
    const h = await start<typeof wf.waitForever>('waitForever', [], { workflowRunTimeout: '500ms' });
    const err = await h.result().catch((e) => e);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    expect(err.cause).toBeInstanceOf(TimeoutFailure);
    expect((await h.describe()).status.name).toBe('TIMED_OUT');
  });

  it('retries a failed workflow by its retry policy and result() follows the retries', async () => {
    const h = await start<typeof wf.flakyWorkflow>('flakyWorkflow', [], { retry: { initialInterval: '50ms', maximumAttempts: 5 } });
    expect(await h.result()).toBe(3);
    const runs = await eventually(async () => {
      const out = [];
      for await (const w of env.client.workflow.list({ query: `WorkflowId = '${h.workflowId}'` })) out.push(w);
      return out.length === 3 ? out : undefined; // visibility may lag on a real server
    }, 10_000, 'three runs in visibility');
    expect(runs.map((w) => w.status.name).sort()).toEqual(['COMPLETED', 'FAILED', 'FAILED']);
    for (const w of runs) if (w.runId !== h.firstExecutionRunId) env.track(env.client.workflow.getHandle(h.workflowId, w.runId));
  });

  it('continues as new and result() follows the chain', async () => {
    const h = await start<typeof wf.chain>('chain', [2]);
    const runs = await h.result();
    expect(runs).toHaveLength(3);
    expect(new Set(runs).size).toBe(3);
    expect(runs[0]).toBe(h.firstExecutionRunId);
    for (const runId of runs) env.track(env.client.workflow.getHandle(h.workflowId, runId));
  });

  it('rejects a second start of a running workflow ID and honours REJECT_DUPLICATE', async () => {
    const workflowId = id('reuse');
    const h = env.track(await env.client.workflow.start('waitForever', { taskQueue: env.taskQueue, workflowId }));
    await expect(env.client.workflow.start('waitForever', { taskQueue: env.taskQueue, workflowId })).rejects.toBeInstanceOf(WorkflowExecutionAlreadyStartedError);
    await h.terminate();
    await expect(
      env.client.workflow.start('waitForever', { taskQueue: env.taskQueue, workflowId, workflowIdReusePolicy: 'REJECT_DUPLICATE' }),
    ).rejects.toBeInstanceOf(WorkflowExecutionAlreadyStartedError);
    const again = env.track(await env.client.workflow.start('waitForever', { taskQueue: env.taskQueue, workflowId }));
    expect(again.firstExecutionRunId).not.toBe(h.firstExecutionRunId);
    await again.terminate();
  });
});

describe('child and external workflows', () => {
  it('executes, cancels and (by parent-close policy) terminates child workflows', async () => {
    const runningChildId = id('orphan');
    const h = await start<typeof wf.parent>('parent', [runningChildId]);
    const out = await h.result();
    expect(out).toEqual({ result: 'Hello, child!', cancelled: true, parentSeen: h.workflowId });
    const orphan = env.client.workflow.getHandle(runningChildId);
    await eventually(async () => (await orphan.describe()).status.name === 'TERMINATED', 10_000, 'the child to be terminated');
    for (const suffix of ['-basic', '-who', '-cancelled']) env.track(env.client.workflow.getHandle(h.workflowId + suffix));
    env.track(orphan);
    expect((await env.client.workflow.getHandle(`${h.workflowId}-who`).describe()).parentExecution?.workflowId).toBe(h.workflowId);
  });

  it('signals an external workflow and reports a missing one', async () => {
    const target = await start<typeof wf.signalsAndQueries>('signalsAndQueries', [3]);
    const h = await start<typeof wf.signalOther>('signalOther', [target.workflowId]);
    expect(await h.result()).toBe('ApplicationFailure: Unable to signal external workflow because it was not found');
    expect(await target.result()).toBe(3);
  });

  it('fails a child start whose workflow ID is taken', async () => {
    const taken = await start<typeof wf.waitForever>('waitForever', []);
    const h = await start<typeof wf.duplicateChild>('duplicateChild', [taken.workflowId]);
    expect(await h.result()).toBe('WorkflowExecutionAlreadyStartedError');
    await taken.terminate();
  });
});

describe('visibility', () => {
  it('keeps memo and typed search attributes, and lists/counts with a filter', async () => {
    const marker = randomUUID();
    const h = await start<typeof wf.searchAttributes>('searchAttributes', [], {
      memo: { config: { lr: 3e-4 } },
      typedSearchAttributes: [{ key: { name: 'FinetuneStage', type: 'KEYWORD' }, value: `queued-${marker}` }],
    });
    await h.result();
    const d = await h.describe();
    expect(d.memo).toEqual({ config: { lr: 3e-4 }, phase: 'done' });
    expect(d.searchAttributes.TemporalChangeVersion).toEqual(['report-v2']);
    expect(d.typedSearchAttributes.get({ name: 'FinetuneStage', type: 'KEYWORD' })).toBe('eval');
    expect(d.typedSearchAttributes.get({ name: 'FinetuneStep', type: 'INT' })).toBe(7);
    const query = `WorkflowId = '${h.workflowId}' AND FinetuneStage = 'eval' AND ExecutionStatus = 'Completed'`;
    const found = await eventually(async () => {
      const out = [];
      for await (const w of env.client.workflow.list({ query })) out.push(w);
      return out.length === 1 ? out : undefined;
    }, 10_000, 'visibility');
    expect(found[0]!.workflowId).toBe(h.workflowId);
    expect((await env.client.workflow.count(`WorkflowType = 'searchAttributes' AND FinetuneStep = 7 AND WorkflowId = '${h.workflowId}'`)).count).toBe(1);
  });
});

describe('workers', () => {
  it('retries an activity interrupted by worker shutdown on the next worker', async () => {
    const tq = `${env.taskQueue}-shutdown`;
    const first = await env.newWorker(tq);
    const running = first.run();
    const h = env.track(await env.client.workflow.start<typeof wf.durable>('durable', { taskQueue: tq, workflowId: id('shutdown') }));
    await eventually(async () => (await h.describe()).raw.pendingActivities?.[0]?.state === 2, 10_000, 'activity started');
    first.shutdown();
    await running;
    const second = await env.newWorker(tq);
    const result = await second.runUntil(h.result());
    expect(result).toBe('done after 2');
  });
});

describe('load', () => {
  it('runs many workflows at once without losing or duplicating tasks', async () => {
    const handles = await Promise.all(Array.from({ length: 40 }, (_, i) => start<typeof wf.basic>('basic', [`n${i}`])));
    const signalled = await Promise.all(Array.from({ length: 10 }, () => start<typeof wf.signalsAndQueries>('signalsAndQueries', [3])));
    await Promise.all(signalled.flatMap((h) => [h.signal('add', 1), h.signal('add', 2)]));
    expect(await Promise.all(handles.map((h) => h.result()))).toEqual(handles.map((_, i) => `Hello, n${i}!`));
    expect(await Promise.all(signalled.map((h) => h.result()))).toEqual(signalled.map(() => 3));
  });
});

describe('replay', () => {
  it('replays every history this file produced without nondeterminism', async () => {
    const results = await env.replayAll();
    expect(results.length).toBeGreaterThan(15);
    expect(results.filter((r) => r.error).map((r) => `${r.workflowId}: ${r.error}`)).toEqual([]);
  });
});
