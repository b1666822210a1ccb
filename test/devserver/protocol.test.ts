// Wire-level behaviour of the dev server that the SDK depends on or that a real server shares: error codes for
// unknown, malformed and oversized requests, payload limits, namespaces, request-ID dedupe, long polls that
// honour deadlines and cancellation without losing tasks, and the @temporalio/testing launch path.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { Client, Connection } from '@temporalio/client';
import { Worker, NativeConnection } from '@temporalio/worker';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { startDevServer, type DevServer } from '../../devserver/index.js';
import { temporal } from '../../devserver/proto.js';
import { REAL_SERVER } from './env.js';
import * as activities from './activities.js';
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { workflowsPath } from './env.js';

const WS = '/temporal.api.workflowservice.v1.WorkflowService/';
const wsv1 = temporal.api.workflowservice.v1;

// Runs against a real cluster too (TEMPORAL_ADDRESS); only the checks of dev-server specifics are skipped there.
describe('server protocol', () => {
  let server: DevServer | undefined;
  let connection: Connection;
  let raw: grpc.Client;
  beforeAll(async () => {
    server = REAL_SERVER ? undefined : await startDevServer({ port: 0 });
    const address = REAL_SERVER ?? server!.address;
    connection = await Connection.connect({ address });
    raw = new grpc.Client(address, grpc.credentials.createInsecure(), { 'grpc.max_send_message_length': 64 * 1024 * 1024 });
  });
  afterAll(async () => {
    raw?.close();
    await connection?.close();
    await server?.close();
  });

  /** A unary call with raw bytes, to send what the typed clients refuse to. */
  function rawCall(method: string, body: Buffer, deadlineMs = 5000): Promise<{ code: number; details: string; bytes?: Buffer }> {
    return new Promise((resolve) => {
      raw.makeUnaryRequest(WS + method, (b: Buffer) => b, (b: Buffer) => b, body, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, bytes) =>
        resolve(err ? { code: err.code!, details: err.details } : { code: 0, details: '', bytes }),
      );
    });
  }
  const startReq = (extra: Record<string, unknown> = {}) =>
    Buffer.from(wsv1.StartWorkflowExecutionRequest.encode(wsv1.StartWorkflowExecutionRequest.fromObject({
      namespace: 'default', workflowId: randomUUID(), workflowType: { name: 'anything' }, taskQueue: { name: 'nobody' }, requestId: randomUUID(), ...extra,
    })).finish());

  it.skipIf(!!REAL_SERVER)('answers UNIMPLEMENTED for RPCs it does not implement', async () => {
    const err = await connection.workflowService.resetWorkflowExecution({ namespace: 'default' }).catch((e) => e);
    expect(err.code).toBe(grpc.status.UNIMPLEMENTED);
  });

  it('rejects malformed and oversized requests with gRPC errors and keeps serving', async () => {
    const malformed = await rawCall('StartWorkflowExecution', Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f, 0x01]));
    expect(malformed.code).toBe(grpc.status.INTERNAL);
    const huge = await rawCall('StartWorkflowExecution', Buffer.alloc(5 * 1024 * 1024, 0x41));
    expect(huge.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    const missing = await rawCall('StartWorkflowExecution', Buffer.from(wsv1.StartWorkflowExecutionRequest.encode({ namespace: 'default' }).finish()));
    expect(missing).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'WorkflowId is not set on request.' });
    expect((await connection.workflowService.getSystemInfo({})).capabilities?.sdkMetadata).toBe(true);
  });

  it('enforces the 2 MB per-payload limit', async () => {
    const input = { payloads: [{ metadata: { encoding: Buffer.from('binary/plain') }, data: Buffer.alloc(2 * 1024 * 1024 + 10) }] };
    const res = await rawCall('StartWorkflowExecution', startReq({ input }));
    expect(res.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(res.details).toMatch(/Blob data size exceeds limit/);
  });

  it('reports unknown namespaces as NOT_FOUND with NamespaceNotFoundFailure', async () => {
    const client = new Client({ connection, namespace: 'no-such-namespace' });
    const err = await client.workflow.start('x', { taskQueue: 'q', workflowId: 'w' }).catch((e) => e);
    expect(err.name).toBe('NamespaceNotFoundError');
  });

  it('deduplicates starts by request ID', async () => {
    const body = startReq();
    const a = await rawCall('StartWorkflowExecution', body);
    const b = await rawCall('StartWorkflowExecution', body);
    expect(a.code).toBe(0);
    expect(wsv1.StartWorkflowExecutionResponse.decode(b.bytes!).runId).toBe(wsv1.StartWorkflowExecutionResponse.decode(a.bytes!).runId);
  });

  it('answers a poll with the empty response before its deadline', async () => {
    const t0 = Date.now();
    const res = await connection.withDeadline(Date.now() + 2500, () =>
      connection.workflowService.pollActivityTaskQueue({ namespace: 'default', taskQueue: { name: `idle-${randomUUID()}` }, identity: 'test' }),
    );
    expect(res.taskToken?.length ?? 0).toBe(0);
    expect(Date.now() - t0).toBeGreaterThan(1000);
    expect(Date.now() - t0).toBeLessThan(2500);
  });

  it('does not lose a task when the poll that waited for it was cancelled', async () => {
    const queue = `cancel-${randomUUID()}`;
    const ctrl = new AbortController();
    // A long poll needs a deadline (a real server refuses one without: "Context timeout is not set.").
    const poll = connection.withAbortSignal(ctrl.signal, () =>
      connection.withDeadline(Date.now() + 30_000, () =>
        connection.workflowService.pollWorkflowTaskQueue({ namespace: 'default', taskQueue: { name: queue, kind: 1 }, identity: 'test' }),
      ),
    );
    poll.catch(() => {}); // awaited below, after the abort
    await new Promise((r) => setTimeout(r, 100));
    ctrl.abort();
    await expect(poll).rejects.toBeTruthy();
    const client = new Client({ connection });
    const h = await client.workflow.start('anything', { taskQueue: queue, workflowId: randomUUID() });
    const task = await connection.withDeadline(Date.now() + 5000, () =>
      connection.workflowService.pollWorkflowTaskQueue({ namespace: 'default', taskQueue: { name: queue, kind: 1 }, identity: 'test' }),
    );
    expect(task.workflowExecution?.runId).toBe(h.firstExecutionRunId);
    expect(task.history?.events?.map((e) => e.eventType)).toEqual([1, 5, 6]); // started, task scheduled, task started
    expect(task.workflowExecutionTaskQueue?.name).toBe(queue);
    await h.terminate();
  });

  /** Starts a workflow on a fresh queue and takes its first workflow task by hand, as a worker would. */
  async function firstTask() {
    const queue = `manual-${randomUUID()}`;
    const client = new Client({ connection });
    const h = await client.workflow.start('manual', { taskQueue: queue, workflowId: randomUUID() });
    const poll = () =>
      connection.withDeadline(Date.now() + 5000, () =>
        connection.workflowService.pollWorkflowTaskQueue({ namespace: 'default', taskQueue: { name: queue, kind: 1 }, identity: 'test' }),
      );
    return { h, poll, task: await poll() };
  }
  const ET = temporal.api.enums.v1.EventType;
  const complete = (taskToken: Uint8Array, commands: object[] = []) =>
    connection.workflowService.respondWorkflowTaskCompleted({ namespace: 'default', taskToken, commands, identity: 'test', sdkMetadata: { coreUsedFlags: [1, 2] } } as any);

  it('buffers a signal that arrives during a workflow task and writes it after the completion', async () => {
    const { h, poll, task } = await firstTask();
    await h.signal('poke');
    await complete(task.taskToken!);
    const next = await poll();
    const types = next.history!.events!.map((e) => e.eventType);
    expect(types).toEqual([
      ET.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED, ET.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, ET.EVENT_TYPE_WORKFLOW_TASK_STARTED,
      ET.EVENT_TYPE_WORKFLOW_TASK_COMPLETED, ET.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, ET.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
      ET.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    ]);
    expect(Number(next.previousStartedEventId)).toBe(3);
    expect(next.history!.events![3]!.workflowTaskCompletedEventAttributes?.sdkMetadata?.coreUsedFlags).toEqual([1, 2]);
    await h.terminate();
  });

  it('refuses to close a workflow while new events are buffered (UnhandledCommand)', async () => {
    const { h, poll, task } = await firstTask();
    await h.signal('late');
    const completeCmd = { commandType: 4, completeWorkflowExecutionCommandAttributes: {} };
    const err = await complete(task.taskToken!, [completeCmd]).catch((e) => e);
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toBe('UnhandledCommand');
    const next = await poll();
    const types = next.history!.events!.slice(3).map((e) => e.eventType);
    expect(types).toEqual([ET.EVENT_TYPE_WORKFLOW_TASK_FAILED, ET.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED, ET.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED, ET.EVENT_TYPE_WORKFLOW_TASK_STARTED]);
    await complete(next.taskToken!, [completeCmd]);
    expect((await h.describe()).status.name).toBe('COMPLETED');
    // A stale token (the failed attempt) is NOT_FOUND.
    expect((await complete(task.taskToken!).catch((e) => e)).code).toBe(grpc.status.NOT_FOUND);
  });

  it('fails the workflow task for an invalid command and schedules the next attempt', async () => {
    const { h, poll, task } = await firstTask();
    // A negative duration is invalid (a zero or unset one is a timer that fires at once).
    const err = await complete(task.taskToken!, [{ commandType: 3, startTimerCommandAttributes: { timerId: '1', startToFireTimeout: { seconds: -5 } } }]).catch((e) => e);
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/^BadStartTimerAttributes: /);
    const next = await poll();
    expect(next.attempt).toBe(2);
    expect(next.history!.events![3]!.eventType).toBe(ET.EVENT_TYPE_WORKFLOW_TASK_FAILED);
    expect(next.history!.events![3]!.workflowTaskFailedEventAttributes?.failure?.message).toBe(err.details);
    await h.terminate();
  });

  it.skipIf(!!REAL_SERVER)('refuses to open a database another dev server holds', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const dir = mkdtempSync(`${tmpdir()}/devserver-lock-`);
    const first = await startDevServer({ port: 0, dbFile: `${dir}/state.db` });
    try {
      await expect(startDevServer({ port: 0, dbFile: `${dir}/state.db` })).rejects.toThrow(/in use by another dev server/);
    } finally {
      await first.close();
    }
    // A file that is not a database is refused with its name, not overwritten.
    const { writeFileSync, readFileSync } = await import('node:fs');
    writeFileSync(`${dir}/garbage.db`, 'this is not a SQLite database, it is a training log\n'.repeat(200));
    await expect(startDevServer({ port: 0, dbFile: `${dir}/garbage.db` })).rejects.toThrow(/cannot open the dev server database .*garbage\.db/);
    expect(readFileSync(`${dir}/garbage.db`, 'utf8')).toMatch(/^this is not a SQLite database/);
    rmSync(dir, { recursive: true, force: true });
  });

  it('describes task queue pollers and pages history backwards', async () => {
    const { h, task } = await firstTask();
    const queue = task.workflowExecutionTaskQueue!.name!;
    const d = await connection.workflowService.describeTaskQueue({ namespace: 'default', taskQueue: { name: queue, kind: 1 }, taskQueueType: 1 });
    expect(d.pollers?.map((p) => p.identity)).toContain('test');
    // Pages hold whole batches of events on a real server, so a page may exceed the page size: check the order
    // and that every event comes exactly once.
    const ids: number[] = [];
    let token: Uint8Array | undefined;
    do {
      const page = await connection.workflowService.getWorkflowExecutionHistoryReverse({ namespace: 'default', execution: { workflowId: h.workflowId }, maximumPageSize: 2, nextPageToken: token });
      expect(page.history?.events?.length).toBeGreaterThan(0);
      ids.push(...page.history!.events!.map((e) => Number(e.eventId)));
      token = page.nextPageToken?.length ? page.nextPageToken : undefined;
    } while (token);
    expect(ids).toEqual([3, 2, 1]);
    await h.terminate();
  });

  it('rejects invalid list queries with INVALID_ARGUMENT', async () => {
    const client = new Client({ connection });
    const err = await client.workflow.count('WorkflowId = ').catch((e) => e);
    expect(err.cause?.code ?? err.code).toBe(grpc.status.INVALID_ARGUMENT);
  });
});

describe.skipIf(!!REAL_SERVER)('dev server shutdown', () => {
  it('answers in-flight long polls without retryable errors, so a client that closed first does not crash', async () => {
    const s2 = await startDevServer({ port: 0 });
    const c2 = await Connection.connect({ address: s2.address });
    const client = new Client({ connection: c2 });
    const h = await client.workflow.start('nobodyRunsThis', { taskQueue: `none-${randomUUID()}`, workflowId: randomUUID() });
    const result = h.result().then(() => 'done', () => 'rejected');
    const query = h.query('q').then(() => 'done', () => 'rejected');
    await new Promise((r) => setTimeout(r, 200));
    await c2.close(); // as `finetune run` does: client first, then the embedded server
    await s2.close();
    expect(await query).toBe('rejected');
    expect(await result).toBe('rejected');
    // A retry of a retryable error would run on a timer against the closed channel and throw uncaught here.
    await new Promise((r) => setTimeout(r, 1500));
  });
});

describe.skipIf(!!REAL_SERVER)('history limits', () => {
  it('terminates a run whose history outgrows the limit, as Temporal does', async () => {
    const lines: string[] = [];
    const s3 = await startDevServer({ port: 0, historyLimits: { warnEvents: 5, errorEvents: 10 }, log: (l) => lines.push(l) });
    const c3 = await Connection.connect({ address: s3.address });
    try {
      const client = new Client({ connection: c3 });
      const h = await client.workflow.start('nobodyRunsThis', { taskQueue: `none-${randomUUID()}`, workflowId: randomUUID() });
      for (let i = 0; i < 12 && (await h.describe()).status.name === 'RUNNING'; i++) await h.signal('grow');
      const d = await h.describe();
      expect(d.status.name).toBe('TERMINATED');
      expect(d.historyLength).toBeLessThanOrEqual(12);
      expect(lines.some((l) => l.startsWith('warn:') && l.includes('continue-as-new'))).toBe(true);
      expect(lines.some((l) => l.startsWith('error:') && l.includes('exceeds the limit'))).toBe(true);
    } finally {
      await c3.close();
      await s3.close();
    }
  });
});

describe.skipIf(!!REAL_SERVER)('@temporalio/testing on the dev server', () => {
  it('TestWorkflowEnvironment.createLocal launches bin/finetune.js as an existing-path server', async () => {
    const path = fileURLToPath(new URL('../../bin/finetune.js', import.meta.url));
    const [env, bundle] = await Promise.all([
      TestWorkflowEnvironment.createLocal({ server: { executable: { type: 'existing-path', path } } }),
      bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('ERROR') }),
    ]);
    try {
      const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: 'testing', workflowBundle: bundle, activities });
      const result = await worker.runUntil(env.client.workflow.execute('basic', { taskQueue: 'testing', workflowId: randomUUID(), args: ['env'] }));
      expect(result).toBe('Hello, env!');
    } finally {
      await env.teardown();
    }
  });
});
void NativeConnection;
