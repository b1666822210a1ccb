// Differential tests: every case sends the same requests to the embedded dev server and to Temporal's own dev
// server (`temporal server start-dev`, started here on free ports and a temporary database) and compares what
// comes back: status codes, error messages, the shape of answers, which runs a query finds. Timestamps and IDs
// are not compared. Each case pins one place where the embedded server once differed from the real one.
//
// Without the Temporal CLI (`temporal` on PATH or FINETUNE_TEMPORAL_CLI) the file is skipped, unless
// FINETUNE_REQUIRE_TEMPORAL_CLI=1, in which case it fails saying the CLI is missing.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { Client, Connection } from '@temporalio/client';
import { startDevServer, type DevServer } from '../../devserver/index.js';
import { temporal } from '../../devserver/proto.js';
import type { google } from '@temporalio/proto';
import { findTemporalCli, startTemporalDevServer, type TemporalDevServer } from '../servers/temporal-cli.js';
import { eventually } from './env.js';

const cli = findTemporalCli();
const required = process.env.FINETUNE_REQUIRE_TEMPORAL_CLI === '1';
if (!cli && !required) {
  console.warn('differential.test.ts skipped: the Temporal CLI was not found (put `temporal` on PATH or set FINETUNE_TEMPORAL_CLI)');
}

const api = temporal.api;
const ET = api.enums.v1.EventType;
const SA = api.enums.v1.IndexedValueType;
type Server = { name: 'embedded' | 'temporal'; connection: Connection; client: Client };
type Outcome = { ok: unknown } | { code: number; message: string };

/** The error text up to any trailing parenthesised detail (the embedded server adds the field and sizes). */
const headline = (m: string) => m.replace(/ \([^]*\)$/, '');

/** What a call came to: its answer (reduced by `shape`) or its gRPC code and message headline. */
async function outcome<T>(p: Promise<T>, shape: (v: T) => unknown = () => 'ok'): Promise<Outcome> {
  try {
    return { ok: shape(await p) };
  } catch (e) {
    const err = e as { code?: number; details?: string; cause?: { code?: number; details?: string }; message: string };
    const code = err.code ?? err.cause?.code;
    if (code === undefined) throw e;
    return { code, message: headline(err.details ?? err.cause?.details ?? err.message) };
  }
}

/** A Duration of `n` seconds (protobufjs encodes plain numbers as int64; the generated types ask for Long). */
const seconds = (n: number) => ({ seconds: n }) as unknown as google.protobuf.IDuration;
const payload = (bytes: number) => ({ metadata: { encoding: Buffer.from('binary/plain') }, data: Buffer.alloc(bytes, 0x61) });
const typedSa = (type: string, value: unknown) => ({ metadata: { encoding: Buffer.from('json/plain'), type: Buffer.from(type) }, data: Buffer.from(JSON.stringify(value)) });

describe.skipIf(!cli && !required)('embedded dev server vs temporal server start-dev', () => {
  let embedded: DevServer | undefined;
  let real: TemporalDevServer | undefined;
  const servers: Server[] = [];

  beforeAll(async () => {
    if (!cli) throw new Error('FINETUNE_REQUIRE_TEMPORAL_CLI=1 but the Temporal CLI is missing: install it (`temporal` on PATH) or set FINETUNE_TEMPORAL_CLI');
    [embedded, real] = await Promise.all([startDevServer({ port: 0 }), startTemporalDevServer()]);
    for (const [name, address] of [['embedded', embedded.address], ['temporal', real.address]] as const) {
      const connection = await Connection.connect({ address });
      await connection.operatorService.addSearchAttributes({ namespace: 'default', searchAttributes: { DiffKeyword: SA.INDEXED_VALUE_TYPE_KEYWORD, DiffInt: SA.INDEXED_VALUE_TYPE_INT } });
      servers.push({ name, connection, client: new Client({ connection }) });
    }
  });
  afterAll(async () => {
    for (const s of servers) await s.connection.close();
    await embedded?.close();
    await real?.close();
  });

  /** Runs `fn` on both servers at once; returns [embedded, temporal]. */
  const onBoth = async <T,>(fn: (s: Server) => Promise<T>): Promise<[T, T]> => {
    const [a, b] = await Promise.all(servers.map(fn));
    return [a!, b!];
  };
  /** Runs `fn` on both servers and expects the same result, which it returns. */
  const same = async <T,>(fn: (s: Server) => Promise<T>): Promise<T> => {
    const [ours, theirs] = await onBoth(fn);
    expect(ours, 'embedded server (left) vs temporal server start-dev (right)').toEqual(theirs);
    return ours;
  };

  const ws = (s: Server) => s.connection.workflowService;
  const startReq = (queue: string, extra: Record<string, unknown> = {}) => ({
    namespace: 'default', workflowId: `diff-${randomUUID()}`, workflowType: { name: 'manual' }, taskQueue: { name: queue }, requestId: randomUUID(), ...extra,
  });
  const pollWorkflowTask = (s: Server, queue: string, identity = 'diff-worker') =>
    s.connection.withDeadline(Date.now() + 10_000, () => ws(s).pollWorkflowTaskQueue({ namespace: 'default', taskQueue: { name: queue, kind: 1 }, identity }));
  const completeTask = (s: Server, taskToken: Uint8Array, commands: object[]) =>
    ws(s).respondWorkflowTaskCompleted({ namespace: 'default', taskToken, commands, identity: 'diff-worker' } as any);

  it('GetSystemInfo: a plain semver, and no capability the real server lacks', async () => {
    const [ours, theirs] = await onBoth((s) => ws(s).getSystemInfo({}));
    for (const info of [ours, theirs]) expect(info.serverVersion).toMatch(/^\d+\.\d+\.\d+$/);
    const claimed = Object.entries(ours.capabilities ?? {}).filter(([, v]) => v === true).map(([k]) => k);
    for (const k of claimed) expect((theirs.capabilities as Record<string, unknown>)[k], `capability ${k}`).toBe(true);
    // The ones the SDK acts on must agree.
    for (const k of ['signalAndQueryHeader', 'internalErrorDifferentiation', 'activityFailureIncludeHeartbeat', 'supportsSchedules', 'encodedFailureAttributes', 'upsertMemo', 'sdkMetadata', 'countGroupByExecutionStatus']) {
      expect((ours.capabilities as Record<string, unknown>)[k], `capability ${k}`).toBe(true);
    }
  });

  it('DescribeNamespace: no namespace capability the real server lacks, and updates are on', async () => {
    const [ours, theirs] = await onBoth((s) => ws(s).describeNamespace({ namespace: 'default' }));
    const claimed = Object.entries(ours.namespaceInfo?.capabilities ?? {}).filter(([, v]) => v === true).map(([k]) => k);
    expect(claimed.sort()).toEqual(['asyncUpdate', 'syncUpdate']);
    for (const k of claimed) expect((theirs.namespaceInfo?.capabilities as Record<string, unknown>)[k], `capability ${k}`).toBe(true);
    expect(ours.namespaceInfo?.state).toBe(theirs.namespaceInfo?.state);
  });

  it('GetSearchAttributes: the same system and predefined attributes with the same types', async () => {
    const devServerCustom = /^(Keyword|Text|Int|Double|Bool|Datetime|KeywordList)\d\d$/; // pre-registered by start-dev
    await same(async (s) => {
      const keys = (await ws(s).getSearchAttributes({})).keys ?? {};
      return Object.fromEntries(Object.entries(keys).filter(([k]) => !devServerCustom.test(k) && !k.startsWith('Diff')).sort());
    });
  });

  it('OperatorService.ListSearchAttributes: the same system attributes; registered ones listed as custom', async () => {
    await same(async (s) => {
      const r = await s.connection.operatorService.listSearchAttributes({ namespace: 'default' });
      const sorted = (m: Record<string, unknown> | null | undefined) => Object.fromEntries(Object.entries(m ?? {}).sort());
      return { system: sorted(r.systemAttributes), diffCustom: sorted(Object.fromEntries(Object.entries(r.customAttributes ?? {}).filter(([k]) => k.startsWith('Diff')))) };
    });
  });

  describe('errors for requests that cannot succeed', () => {
    // Each case: one request against a fixture of one running and one completed workflow on each server.
    const fixture = new Map<string, { running: string; closed: string; queue: string }>();
    beforeAll(async () => {
      await onBoth(async (s) => {
        const queue = `diff-errors-${randomUUID()}`;
        const running = startReq(queue);
        const closed = startReq(queue);
        await ws(s).startWorkflowExecution(running);
        await ws(s).startWorkflowExecution(closed);
        await ws(s).terminateWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: closed.workflowId }, reason: 'fixture' });
        fixture.set(s.name, { running: running.workflowId, closed: closed.workflowId, queue });
      });
    });
    // The optional third element compares less than the whole message: 'code' only the status, 'prefix' the
    // message up to its first colon (where the two servers word the detail differently; see devserver/README.md).
    const cases: [string, (s: Server, f: { running: string; closed: string; queue: string }) => Promise<unknown>, ('code' | 'prefix')?][] = [
      ['start without a workflow ID', (s, f) => ws(s).startWorkflowExecution({ ...startReq(f.queue), workflowId: '' })],
      ['start without a type', (s, f) => ws(s).startWorkflowExecution({ ...startReq(f.queue), workflowType: { name: '' } })],
      ['start without a task queue', (s, f) => ws(s).startWorkflowExecution({ ...startReq(f.queue), taskQueue: { name: '' } })],
      ['start with a workflow ID over 1000 characters', (s, f) => ws(s).startWorkflowExecution({ ...startReq(f.queue), workflowId: 'w'.repeat(1001) })],
      ['start with a negative run timeout', (s, f) => ws(s).startWorkflowExecution({ ...startReq(f.queue), workflowRunTimeout: seconds(-1) })],
      ['start in no namespace', (s, f) => ws(s).startWorkflowExecution({ ...startReq(f.queue), namespace: '' })],
      ['start in an unknown namespace', (s, f) => ws(s).startWorkflowExecution({ ...startReq(f.queue), namespace: 'no-such-namespace' })],
      ['start an ID that is running', (s, f) => ws(s).startWorkflowExecution({ ...startReq(f.queue), workflowId: f.running })],
      ['describe an unknown workflow', (s) => ws(s).describeWorkflowExecution({ namespace: 'default', execution: { workflowId: 'no-such-workflow' } })],
      ['describe an unknown run of a known workflow', (s, f) => ws(s).describeWorkflowExecution({ namespace: 'default', execution: { workflowId: f.running, runId: randomUUID() } })],
      ['history of an unknown workflow', (s) => ws(s).getWorkflowExecutionHistory({ namespace: 'default', execution: { workflowId: 'no-such-workflow' } })],
      ['signal an unknown workflow', (s) => ws(s).signalWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: 'no-such-workflow' }, signalName: 's' })],
      ['signal a closed workflow', (s, f) => ws(s).signalWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: f.closed }, signalName: 's' })],
      ['signal without a name', (s, f) => ws(s).signalWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: f.running }, signalName: '' })],
      ['terminate a closed workflow', (s, f) => ws(s).terminateWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: f.closed } })],
      ['cancel a closed workflow', (s, f) => ws(s).requestCancelWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: f.closed } })],
      ['cancel an unknown workflow', (s) => ws(s).requestCancelWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: 'no-such-workflow' } })],
      ['query a closed workflow nobody runs', (s, f) => s.connection.withDeadline(Date.now() + 5000, () => ws(s).queryWorkflow({ namespace: 'default', execution: { workflowId: f.closed }, query: { queryType: 'q' } }))],
      ['heartbeat with a garbage token', (s) => ws(s).recordActivityTaskHeartbeat({ namespace: 'default', taskToken: Buffer.from('garbage') })],
      ['complete a workflow task with a garbage token', (s) => ws(s).respondWorkflowTaskCompleted({ namespace: 'default', taskToken: Buffer.from('garbage') })],
      ['register the default namespace again', (s) => ws(s).registerNamespace({ namespace: 'default', workflowExecutionRetentionPeriod: seconds(86400) })],
      ['describe an unknown namespace', (s) => ws(s).describeNamespace({ namespace: 'no-such-namespace' })],
      ['register a search attribute that exists', (s) => s.connection.operatorService.addSearchAttributes({ namespace: 'default', searchAttributes: { DiffKeyword: SA.INDEXED_VALUE_TYPE_KEYWORD } })],
      ['register a search attribute with another type', (s) => s.connection.operatorService.addSearchAttributes({ namespace: 'default', searchAttributes: { DiffKeyword: SA.INDEXED_VALUE_TYPE_INT } })],
      ['register a system attribute', (s) => s.connection.operatorService.addSearchAttributes({ namespace: 'default', searchAttributes: { WorkflowId: SA.INDEXED_VALUE_TYPE_KEYWORD } })],
      ['terminate an unknown workflow', (s) => ws(s).terminateWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: 'no-such-workflow' } })],
      ['query an unknown workflow', (s) => ws(s).queryWorkflow({ namespace: 'default', execution: { workflowId: 'no-such-workflow' }, query: { queryType: 'q' } })],
      ['update a closed workflow', (s, f) => ws(s).updateWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: f.closed }, request: { meta: { updateId: 'u1' }, input: { name: 'u' } } })],
      ['update without a name', (s, f) => ws(s).updateWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: f.running }, request: { meta: { updateId: 'u2' }, input: { name: '' } } })],
      ['describe an unknown schedule', (s) => ws(s).describeSchedule({ namespace: 'default', scheduleId: 'no-such-schedule' }), 'code'],
      ['delete an unknown schedule', (s) => ws(s).deleteSchedule({ namespace: 'default', scheduleId: 'no-such-schedule' }), 'code'],
      ['create a schedule with a bad cron string', (s, f) => ws(s).createSchedule({
        namespace: 'default', scheduleId: `diff-${randomUUID()}`, requestId: randomUUID(),
        schedule: { spec: { cronString: ['61 * * * *'] }, action: { startWorkflow: { workflowId: 'w', workflowType: { name: 'manual' }, taskQueue: { name: f.queue } } } },
      }), 'prefix'],
    ];
    const uuid = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;
    it.each(cases)('%s', async (_name, call, compare) => {
      await same(async (s) => {
        const o = await outcome(call(s, fixture.get(s.name)!) as Promise<unknown>);
        if (!('code' in o)) return o;
        if (compare === 'code') return { code: o.code };
        return { code: o.code, message: compare === 'prefix' ? o.message.split(':')[0] : o.message.replace(uuid, '<id>') };
      });
    });
  });

  it('task tokens that are no longer current: NOT_FOUND alike', async () => {
    const uuid = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;
    const reason = (o: Outcome) => ('code' in o ? { code: o.code, message: o.message.replace(uuid, '<id>') } : o);
    await same(async (s) => {
      const queue = `diff-tokens-${randomUUID()}`;
      const req = startReq(queue);
      await ws(s).startWorkflowExecution(req);
      const wft = await pollWorkflowTask(s, queue);
      await completeTask(s, wft.taskToken!, [{
        commandType: 1,
        scheduleActivityTaskCommandAttributes: { activityId: 'a1', activityType: { name: 'work' }, taskQueue: { name: queue }, startToCloseTimeout: { seconds: 60 } },
      }]);
      const staleWorkflowTask = reason(await outcome(completeTask(s, wft.taskToken!, [])));
      const act = await s.connection.withDeadline(Date.now() + 10_000, () => ws(s).pollActivityTaskQueue({ namespace: 'default', taskQueue: { name: queue }, identity: 'diff-worker' }));
      const heartbeat = await outcome(ws(s).recordActivityTaskHeartbeat({ namespace: 'default', taskToken: act.taskToken }), (r) => r.cancelRequested);
      await ws(s).respondActivityTaskCompleted({ namespace: 'default', taskToken: act.taskToken, identity: 'diff-worker' });
      return {
        activity: { type: act.activityType?.name, attempt: act.attempt, id: act.activityId },
        staleWorkflowTask,
        heartbeat,
        completeAgain: reason(await outcome(ws(s).respondActivityTaskCompleted({ namespace: 'default', taskToken: act.taskToken }))),
        failAfterComplete: reason(await outcome(ws(s).respondActivityTaskFailed({ namespace: 'default', taskToken: act.taskToken, failure: { message: 'late', applicationFailureInfo: {} } }))),
        failWithoutApplicationInfo: reason(await outcome(ws(s).respondActivityTaskFailed({ namespace: 'default', taskToken: act.taskToken, failure: { message: 'late', serverFailureInfo: {} } }))),
        heartbeatAfterComplete: reason(await outcome(ws(s).recordActivityTaskHeartbeat({ namespace: 'default', taskToken: act.taskToken }))),
        byIdUnknown: reason(await outcome(ws(s).respondActivityTaskCompletedById({ namespace: 'default', workflowId: req.workflowId, activityId: 'no-such-activity' }))),
      };
    });
  });

  it('long polls need a deadline at least 2 s away', async () => {
    const queue = `diff-poll-${randomUUID()}`;
    await same(async (s) => ({
      wfNone: await outcome(ws(s).pollWorkflowTaskQueue({ namespace: 'default', taskQueue: { name: queue, kind: 1 }, identity: 'x' })),
      actNone: await outcome(ws(s).pollActivityTaskQueue({ namespace: 'default', taskQueue: { name: queue }, identity: 'x' })),
      wfShort: await outcome(s.connection.withDeadline(Date.now() + 1500, () => ws(s).pollWorkflowTaskQueue({ namespace: 'default', taskQueue: { name: queue, kind: 1 }, identity: 'x' }))),
      actShort: await outcome(s.connection.withDeadline(Date.now() + 1500, () => ws(s).pollActivityTaskQueue({ namespace: 'default', taskQueue: { name: queue }, identity: 'x' }))),
      actEnough: await outcome(s.connection.withDeadline(Date.now() + 2600, () => ws(s).pollActivityTaskQueue({ namespace: 'default', taskQueue: { name: queue }, identity: 'x' })), (r) => r.taskToken?.length ?? 0),
    }));
  });

  it('timers: an unset duration fires at once; a negative one or a missing ID fails the workflow task with the same message', async () => {
    const run = async (s: Server, attrs: object) => {
      const queue = `diff-timer-${randomUUID()}`;
      await ws(s).startWorkflowExecution(startReq(queue));
      const task = await pollWorkflowTask(s, queue);
      const answer = await outcome(completeTask(s, task.taskToken!, [{ commandType: 3, startTimerCommandAttributes: attrs }]));
      const next = await pollWorkflowTask(s, queue);
      const events = next.history!.events!.map((e) => [e.eventType, e.workflowTaskFailedEventAttributes?.cause ?? null, e.workflowTaskFailedEventAttributes?.failure?.message ?? null]);
      return { answer, attempt: next.attempt, events };
    };
    const zero = await same((s) => run(s, { timerId: 't' }));
    expect(zero.events.map((e) => e[0])).toContain(ET.EVENT_TYPE_TIMER_FIRED);
    const negative = await same((s) => run(s, { timerId: 't', startToFireTimeout: { seconds: -5 } }));
    expect(negative.answer).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await same((s) => run(s, { timerId: '', startToFireTimeout: { seconds: 1 } }));
  });

  it('memo: over 2 MB in all is refused ("Memo size exceeds limit."), 600 KB is accepted', async () => {
    const queue = `diff-memo-${randomUUID()}`;
    const result = await same(async (s) => ({
      small: await outcome(ws(s).startWorkflowExecution(startReq(queue, { memo: { fields: { m: payload(600 * 1024) } } }))),
      big: await outcome(ws(s).startWorkflowExecution(startReq(queue, { memo: { fields: { m: payload(3 * 1024 * 1024) } } }))),
      twoHalves: await outcome(ws(s).startWorkflowExecution(startReq(queue, { memo: { fields: { a: payload(1024 * 1024 + 10), b: payload(1024 * 1024 + 10) } } }))),
      signalWithStart: await outcome(ws(s).signalWithStartWorkflowExecution({ ...startReq(queue), signalName: 'go', memo: { fields: { m: payload(2 * 1024 * 1024 + 100) } } } as any)),
    }));
    expect(result.big).toEqual({ code: grpc.status.INVALID_ARGUMENT, message: 'Memo size exceeds limit.' });
  });

  it('payloads: a field over 2 MB is refused ("Blob data size exceeds limit.")', async () => {
    const queue = `diff-blob-${randomUUID()}`;
    const result = await same(async (s) => {
      const running = startReq(queue);
      await ws(s).startWorkflowExecution(running);
      return {
        input: await outcome(ws(s).startWorkflowExecution(startReq(queue, { input: { payloads: [payload(2 * 1024 * 1024 + 100)] } }))),
        inputJustUnder: await outcome(ws(s).startWorkflowExecution(startReq(queue, { input: { payloads: [payload(2 * 1024 * 1024 - 100)] } }))),
        signal: await outcome(ws(s).signalWorkflowExecution({ namespace: 'default', workflowExecution: { workflowId: running.workflowId }, signalName: 's', input: { payloads: [payload(2.2 * 1024 * 1024)] } })),
      };
    });
    expect(result.input).toEqual({ code: grpc.status.INVALID_ARGUMENT, message: 'Blob data size exceeds limit.' });
  });

  it('search attributes: unregistered names (even typed), oversized values and wrong types are refused alike', async () => {
    const queue = `diff-sa-${randomUUID()}`;
    const start = (s: Server, fields: Record<string, unknown>) => outcome(ws(s).startWorkflowExecution(startReq(queue, { searchAttributes: { indexedFields: fields } })));
    const result = await same(async (s) => ({
      unregistered: await start(s, { DiffNotRegistered: typedSa('Keyword', 'x') }),
      tooLong: await start(s, { DiffKeyword: typedSa('Keyword', 'a'.repeat(2100)) }),
      wrongType: await start(s, { DiffInt: typedSa('Int', 'seven') }),
      fine: await start(s, { DiffKeyword: typedSa('Keyword', 'ok'), DiffInt: typedSa('Int', 7) }),
    }));
    expect(result.unregistered).toEqual({ code: grpc.status.INVALID_ARGUMENT, message: 'Namespace default has no mapping defined for search attribute DiffNotRegistered' });
    expect(result.tooLong).toEqual({ code: grpc.status.INVALID_ARGUMENT, message: 'search attribute DiffKeyword value size 2102 exceeds size limit 2048' });
  });

  describe('visibility queries', () => {
    // On each server: a parent that starts a child and completes, the child (running), and an unrelated run.
    const tag = `diffvis${Date.now()}`;
    const ids = { parent: `${tag}-parent`, child: `${tag}-child`, other: `${tag}-other` };
    beforeAll(async () => {
      await onBoth(async (s) => {
        const queue = `${tag}-q`;
        await ws(s).startWorkflowExecution({ ...startReq(queue), workflowId: ids.parent, searchAttributes: { indexedFields: { DiffKeyword: typedSa('Keyword', 'parent'), DiffInt: typedSa('Int', 1) } } });
        await ws(s).startWorkflowExecution({ ...startReq(`${queue}-other`), workflowId: ids.other, searchAttributes: { indexedFields: { DiffInt: typedSa('Int', 5) } } });
        const task = await pollWorkflowTask(s, queue);
        await completeTask(s, task.taskToken!, [{
          commandType: api.enums.v1.CommandType.COMMAND_TYPE_START_CHILD_WORKFLOW_EXECUTION,
          startChildWorkflowExecutionCommandAttributes: { namespace: 'default', workflowId: ids.child, workflowType: { name: 'manual' }, taskQueue: { name: `${queue}-child` }, parentClosePolicy: 3 },
        }]);
        // The child's started event wakes the parent, which then completes (the child is abandoned).
        const next = await pollWorkflowTask(s, queue);
        await completeTask(s, next.taskToken!, [{ commandType: 4, completeWorkflowExecutionCommandAttributes: {} }]);
        await eventually(async () => (await ws(s).countWorkflowExecutions({ namespace: 'default', query: `WorkflowId STARTS_WITH '${tag}' AND CloseTime IS NOT NULL` })).count?.toString() === '1', 10_000, `${s.name}: parent closed`);
      });
    });

    const list = async (s: Server, query: string): Promise<Outcome> =>
      outcome(ws(s).listWorkflowExecutions({ namespace: 'default', query: `WorkflowId STARTS_WITH '${tag}' AND (${query})`, pageSize: 100 }), (r) => r.executions.map((e) => e.execution!.workflowId).sort());
    const count = async (s: Server, query: string): Promise<Outcome> =>
      outcome(ws(s).countWorkflowExecutions({ namespace: 'default', query: `WorkflowId STARTS_WITH '${tag}' AND (${query})` }), (r) => Number(r.count));

    it.each([
      [`ParentWorkflowId = '${ids.parent}'`, [ids.child]],
      [`RootWorkflowId = '${ids.parent}'`, [ids.child, ids.parent]],
      [`ParentRunId IS NULL`, [ids.other, ids.parent]],
      [`ExecutionDuration >= 0`, [ids.parent]],
      [`ExecutionDuration > '1h'`, []],
      [`ExecutionDuration < "01:00:00"`, [ids.parent]],
      [`ExecutionStatus IN ('Running', 'Completed')`, [ids.child, ids.other, ids.parent]],
      [`ExecutionStatus = 'Completed'`, [ids.parent]],
      [`CloseTime IS NULL`, [ids.child, ids.other]],
      [`StartTime BETWEEN '2000-01-01T00:00:00Z' AND '2100-01-01T00:00:00Z'`, [ids.child, ids.other, ids.parent]],
      [`StartTime > '2100-01-01T00:00:00Z'`, []],
      [`ExecutionTime < '2100-01-01T00:00:00Z'`, [ids.child, ids.other, ids.parent]],
      [`TaskQueue = '${tag}-q-other'`, [ids.other]],
      // Recorded when a run closes: NULL while it runs.
      [`HistoryLength > 3`, [ids.parent]],
      [`HistorySizeBytes > 0 AND StateTransitionCount > 0`, [ids.parent]],
      [`HistoryLength IS NULL AND HistorySizeBytes IS NULL AND StateTransitionCount IS NULL AND ExecutionDuration IS NULL`, [ids.child, ids.other]],
      [`DiffInt >= 1 AND DiffInt < 5 OR DiffKeyword = 'parent'`, [ids.parent]],
      [`DiffInt NOT IN (1) AND DiffInt IS NOT NULL`, [ids.other]],
      [`WorkflowType = 'manual' AND NOT (WorkflowId = '${ids.other}')`, [ids.child, ids.parent]],
      [`BuildIds IN ('no-such-build')`, []],
      [`TemporalWorkerDeploymentVersion = 'x' OR TemporalPauseInfo = 'x'`, []],
    ] as [string, string[]][])('%s', async (query, expected) => {
      const result = await same(async (s) => ({ list: await list(s, query), count: await count(s, query) }));
      expect(result).toEqual({ list: { ok: [...expected].sort() }, count: { ok: expected.length } });
    });

    it.each([
      'WorkflowId = "x" ORDER BY StartTime DESC',
      'ORDER BY WorkflowId',
      'NoSuchAttribute = 1',
      "ExecutionStatus = 'Bogus'",
      "WorkflowId LIKE 'x%'",
      'WorkflowId = ',
      "(WorkflowId = 'x'",
    ])('refuses %s the same way', async (query) => {
      // Syntax errors are compared up to the detail (Temporal names a position in its rewritten SQL).
      const reason = (o: Outcome) => ('code' in o ? { code: o.code, message: o.message.replace(/^(invalid query: malformed SQL query):.*/, '$1') } : o);
      const result = await same(async (s) => ({
        list: reason(await outcome(ws(s).listWorkflowExecutions({ namespace: 'default', query }))),
        count: reason(await outcome(ws(s).countWorkflowExecutions({ namespace: 'default', query }))),
      }));
      expect(result.list).toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    });

    it('lists newest first (open runs first) and pages through the same order', async () => {
      await same(async (s) => {
        const query = `WorkflowId STARTS_WITH '${tag}'`;
        const whole = (await ws(s).listWorkflowExecutions({ namespace: 'default', query })).executions.map((e) => e.execution!.workflowId);
        const paged: string[] = [];
        let nextPageToken: Uint8Array | undefined;
        do {
          const page = await ws(s).listWorkflowExecutions({ namespace: 'default', query, pageSize: 1, nextPageToken });
          paged.push(...page.executions.map((e) => e.execution!.workflowId!));
          nextPageToken = page.nextPageToken?.length ? page.nextPageToken : undefined;
        } while (nextPageToken);
        return { whole, paged };
      });
    });

    it('list entries: history length, size, transitions and duration appear once the run has closed', async () => {
      await same(async (s) => {
        const r = await ws(s).listWorkflowExecutions({ namespace: 'default', query: `WorkflowId STARTS_WITH '${tag}'` });
        return r.executions
          .map((e) => ({
            id: e.execution!.workflowId,
            status: e.status,
            historyLength: Number(e.historyLength ?? 0) > 0,
            historySizeBytes: Number(e.historySizeBytes ?? 0) > 0,
            stateTransitionCount: Number(e.stateTransitionCount ?? 0) > 0,
            executionDuration: e.executionDuration != null,
            parent: e.parentExecution?.workflowId ?? null,
            root: e.rootExecution?.workflowId ?? null,
          }))
          .sort((a, b) => a.id!.localeCompare(b.id!));
      });
    });

    it('GROUP BY ExecutionStatus counts per status; other groupings are refused', async () => {
      await same(async (s) => {
        const r = await ws(s).countWorkflowExecutions({ namespace: 'default', query: `WorkflowId STARTS_WITH '${tag}' GROUP BY ExecutionStatus` });
        const groups = (r.groups ?? []).map((g) => [JSON.parse(Buffer.from(g.groupValues![0]!.data!).toString()), Number(g.count)]).sort();
        return { count: Number(r.count), groups, other: await outcome(ws(s).countWorkflowExecutions({ namespace: 'default', query: 'GROUP BY WorkflowType' })) };
      });
    });

    it('describe: a child names its parent and root; state transitions are counted', async () => {
      await same(async (s) => {
        const d = await ws(s).describeWorkflowExecution({ namespace: 'default', execution: { workflowId: ids.child } });
        const info = d.workflowExecutionInfo!;
        return {
          parent: info.parentExecution?.workflowId,
          root: info.rootExecution?.workflowId,
          transitions: Number(info.stateTransitionCount) > 0,
          sizeBytes: Number(info.historySizeBytes) > 0,
        };
      });
    });
  });

  it('DescribeTaskQueue: pollers, backlog stats and the enhanced answer', async () => {
    const queue = `diff-tq-${randomUUID()}`;
    const shapeStats = (st: { approximateBacklogCount?: unknown; tasksAddRate?: number | null; tasksDispatchRate?: number | null; approximateBacklogAge?: unknown } | null | undefined) =>
      st ? { backlog: Number(st.approximateBacklogCount ?? 0) > 0, added: (st.tasksAddRate ?? 0) > 0, dispatched: (st.tasksDispatchRate ?? 0) > 0, hasAge: st.approximateBacklogAge != null } : null;
    await same(async (s) => {
      await ws(s).startWorkflowExecution(startReq(queue));
      await pollWorkflowTask(s, queue, 'diff-poller');
      await ws(s).startWorkflowExecution(startReq(queue));
      const tq = { name: queue, kind: 1 };
      // Temporal refreshes its stats every few seconds: wait until both the backlog and the rates show.
      const complete = (st: Parameters<typeof shapeStats>[0]) => Object.values(shapeStats(st) ?? { none: false }).every(Boolean);
      const classic = await eventually(async () => {
        const d = await ws(s).describeTaskQueue({ namespace: 'default', taskQueue: tq, taskQueueType: 1, reportStats: true });
        return complete(d.stats) && d;
      }, 20_000, `${s.name}: task queue stats`);
      const plain = await ws(s).describeTaskQueue({ namespace: 'default', taskQueue: tq, taskQueueType: 1 });
      const enhanced = await eventually(async () => {
        const d = await ws(s).describeTaskQueue({ namespace: 'default', taskQueue: tq, apiMode: 1, reportPollers: true, reportStats: true, reportTaskReachability: true });
        return complete(d.versionsInfo?.['']?.typesInfo?.[1]?.stats) && d;
      }, 20_000, `${s.name}: enhanced task queue stats`);
      const version = enhanced.versionsInfo?.[''];
      return {
        classicPollers: classic.pollers?.map((p) => [p.identity, p.ratePerSecond]),
        classicStats: shapeStats(classic.stats),
        plainHasStats: plain.stats != null,
        versions: Object.keys(enhanced.versionsInfo ?? {}),
        types: Object.keys(version?.typesInfo ?? {}).sort(),
        workflowPollers: version?.typesInfo?.[1]?.pollers?.map((p) => p.identity),
        workflowStats: shapeStats(version?.typesInfo?.[1]?.stats),
        activityPollers: version?.typesInfo?.[2]?.pollers?.length ?? 0,
        reachability: version?.taskReachability,
        nexusOnly: Object.keys((await ws(s).describeTaskQueue({ namespace: 'default', taskQueue: tq, apiMode: 1, taskQueueTypes: [3] })).versionsInfo?.['']?.typesInfo ?? {}),
        noName: await outcome(ws(s).describeTaskQueue({ namespace: 'default', taskQueue: { name: '' }, taskQueueType: 1 })),
        noNamespace: await outcome(ws(s).describeTaskQueue({ namespace: 'no-such-namespace', taskQueue: tq, taskQueueType: 1 })),
      };
    });
  });

  it('history pages: every event once, in order, both directions', async () => {
    await same(async (s) => {
      const queue = `diff-history-${randomUUID()}`;
      const req = startReq(queue);
      await ws(s).startWorkflowExecution(req);
      const execution = { workflowId: req.workflowId };
      const task = await pollWorkflowTask(s, queue);
      await completeTask(s, task.taskToken!, [{ commandType: 3, startTimerCommandAttributes: { timerId: 't', startToFireTimeout: { seconds: 1000 } } }]);
      await ws(s).signalWorkflowExecution({ namespace: 'default', workflowExecution: execution, signalName: 's' });
      const read = async (reverse: boolean) => {
        const ids: number[] = [];
        let nextPageToken: Uint8Array | undefined;
        do {
          const page = reverse
            ? await ws(s).getWorkflowExecutionHistoryReverse({ namespace: 'default', execution, maximumPageSize: 2, nextPageToken })
            : await ws(s).getWorkflowExecutionHistory({ namespace: 'default', execution, maximumPageSize: 2, nextPageToken });
          ids.push(...(page.history?.events ?? []).map((e) => Number(e.eventId)));
          nextPageToken = page.nextPageToken?.length ? page.nextPageToken : undefined;
        } while (nextPageToken);
        return ids;
      };
      return { forward: await read(false), reverse: await read(true) };
    });
  });

  // Last: it restarts the real server. The helper's kill + restart keep the database and the address.
  it('test/servers/temporal-cli: a SIGKILLed real server restarts on the same database and port', async () => {
    const theirs = servers.find((s) => s.name === 'temporal')!;
    const req = startReq(`diff-restart-${randomUUID()}`);
    await ws(theirs).startWorkflowExecution(req);
    const before = real!.process.pid;
    await real!.kill('SIGKILL');
    expect(real!.process.signalCode).toBe('SIGKILL');
    await real!.restart();
    expect(real!.process.pid).not.toBe(before);
    const d = await eventually(() => ws(theirs).describeWorkflowExecution({ namespace: 'default', execution: { workflowId: req.workflowId } }).catch(() => null), 30_000, 'the workflow after restart');
    expect(d.workflowExecutionInfo?.status).toBe(api.enums.v1.WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING);
  });
});
