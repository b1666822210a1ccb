// The schedules module through its RPC handlers, against a small ScheduleHost that keeps workflow runs in a real
// better-sqlite3 database and a manual clock (the same Clock interface the core's time skipping uses). Requests and
// responses go through the protobuf wire encoding, exactly as between the SDK and the server.
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { temporal } from '@temporalio/proto';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { ServiceError, type Clock, type ScheduleHost, type ScheduleService } from '../../devserver/contract.js';
import { createScheduleService } from '../../devserver/schedules/index.js';

const ws = temporal.api.workflowservice.v1;
const OP = temporal.api.enums.v1.ScheduleOverlapPolicy;
const WS = temporal.api.enums.v1.WorkflowExecutionStatus;
const T0 = Date.parse('2026-06-01T00:00:00Z');
const iso = (ms: number) => new Date(ms).toISOString().replace('.000Z', 'Z');
const tsMs = (t: { seconds?: unknown; nanos?: number | null } | null | undefined) => (t ? Number(String(t.seconds)) * 1000 + Math.floor((t.nanos ?? 0) / 1e6) : null);
const flush = () => new Promise<void>((r) => setImmediate(r));

class ManualClock implements Clock {
  private timers: Array<{ at: number; fn: () => void }> = [];
  constructor(public t: number) {}
  now() {
    return this.t;
  }
  at(at: number, fn: () => void) {
    const timer = { at, fn };
    this.timers.push(timer);
    if (at <= this.t) this.fire();
    return () => void (this.timers = this.timers.filter((x) => x !== timer));
  }
  private fire() {
    for (;;) {
      const due = this.timers.filter((x) => x.at <= this.t).sort((a, b) => a.at - b.at)[0];
      if (!due) return;
      this.timers = this.timers.filter((x) => x !== due);
      due.fn();
    }
  }
  /** Move time forward second by second, letting the schedules react at each step. */
  async advance(ms: number) {
    const end = this.t + ms;
    while (this.t < end) {
      this.t = Math.min(end, this.t + 1000);
      this.fire();
      await flush();
    }
  }
}

/** Workflow runs in SQLite: enough of the core for schedules (start with ID policies, running, terminate, cancel). */
class TestHost implements ScheduleHost {
  readonly clock: ManualClock;
  private listeners: Array<Parameters<ScheduleHost['onWorkflowClosed']>[0]> = [];
  constructor(readonly db: Database.Database, now: number) {
    this.clock = new ManualClock(now);
    db.exec(`CREATE TABLE IF NOT EXISTS test_runs (namespace TEXT, workflow_id TEXT, run_id TEXT PRIMARY KEY, status INTEGER,
             cancel_requested INTEGER DEFAULT 0, request BLOB)`);
  }
  assertNamespace(namespace: string) {
    if (namespace !== 'default') throw new ServiceError(status.NOT_FOUND, `Namespace ${namespace} is not found.`);
  }
  startWorkflow(namespace: string, request: temporal.api.workflowservice.v1.IStartWorkflowExecutionRequest) {
    const runs = this.db.prepare('SELECT status FROM test_runs WHERE namespace = ? AND workflow_id = ?').all(namespace, request.workflowId) as Array<{ status: number }>;
    if (runs.some((r) => r.status === WS.WORKFLOW_EXECUTION_STATUS_RUNNING)) throw new ServiceError(status.ALREADY_EXISTS, 'Workflow execution is already running');
    if (runs.length && request.workflowIdReusePolicy === temporal.api.enums.v1.WorkflowIdReusePolicy.WORKFLOW_ID_REUSE_POLICY_REJECT_DUPLICATE) {
      throw new ServiceError(status.ALREADY_EXISTS, 'Workflow execution already finished and reuse policy rejects duplicates');
    }
    const runId = randomUUID();
    const bytes = ws.StartWorkflowExecutionRequest.encode(request).finish();
    this.db.prepare('INSERT INTO test_runs (namespace, workflow_id, run_id, status, request) VALUES (?, ?, ?, 1, ?)').run(namespace, request.workflowId, runId, Buffer.from(bytes));
    return { runId };
  }
  isRunning(namespace: string, workflowId: string, runId: string) {
    const r = this.db.prepare('SELECT status FROM test_runs WHERE run_id = ?').get(runId) as { status: number } | undefined;
    return r?.status === WS.WORKFLOW_EXECUTION_STATUS_RUNNING;
  }
  terminate(namespace: string, workflowId: string, runId: string) {
    this.close(workflowId, runId, WS.WORKFLOW_EXECUTION_STATUS_TERMINATED);
  }
  requestCancel(namespace: string, workflowId: string, runId: string) {
    this.db.prepare('UPDATE test_runs SET cancel_requested = 1 WHERE run_id = ?').run(runId);
  }
  onWorkflowClosed(listener: Parameters<ScheduleHost['onWorkflowClosed']>[0]) {
    this.listeners.push(listener);
  }
  /** Close a run the way the core does: commit, then tell the listeners. */
  close(workflowId: string, runId: string, st: number, outcome: { result?: object; failure?: object } = {}) {
    this.db.prepare('UPDATE test_runs SET status = ? WHERE run_id = ?').run(st, runId);
    for (const l of this.listeners) l({ namespace: 'default', workflowId, runId, status: st, ...outcome });
  }
  runs() {
    return (this.db.prepare('SELECT * FROM test_runs ORDER BY rowid').all() as Array<{ workflow_id: string; run_id: string; status: number; cancel_requested: number; request: Buffer }>).map((r) => ({
      workflowId: r.workflow_id,
      runId: r.run_id,
      status: r.status,
      cancelRequested: r.cancel_requested === 1,
      request: ws.StartWorkflowExecutionRequest.decode(r.request),
    }));
  }
  running() {
    return this.runs().filter((r) => r.status === WS.WORKFLOW_EXECUTION_STATUS_RUNNING);
  }
}

const services: ScheduleService[] = [];
afterEach(() => services.splice(0).forEach((s) => s.stop()));

function setup(db = new Database(':memory:'), now = T0) {
  const host = new TestHost(db, now);
  const svc = createScheduleService(host);
  services.push(svc);
  svc.start();
  /** Call a handler the way the core does: decoded request in, response checked by encoding it. */
  async function call(method: string, request: object): Promise<any> {
    const m = method as keyof typeof ws.WorkflowService.prototype;
    void m;
    const Req = (ws as any)[`${method}Request`];
    const Res = (ws as any)[`${method}Response`];
    const decoded = Req.decode(Req.encode(Req.fromObject({ namespace: 'default', ...request })).finish());
    const out = await svc.handlers[method]!(decoded);
    return Res.decode(Res.encode(Res.fromObject(out)).finish());
  }
  return { host, svc, call, db };
}

const action = (extra: object = {}) => ({
  startWorkflow: {
    workflowId: 'retrain',
    workflowType: { name: 'finetune' },
    taskQueue: { name: 'q' },
    input: { payloads: [{ metadata: { encoding: Buffer.from('json/plain') }, data: Buffer.from('"cfg.json"') }] },
    ...extra,
  },
});

async function create(call: (m: string, r: object) => Promise<any>, id: string, schedule: object, extra: object = {}) {
  return call('CreateSchedule', { scheduleId: id, requestId: `req-${id}`, schedule: { action: action(), ...schedule }, ...extra });
}

async function expectCode(p: Promise<unknown>, code: number, message?: RegExp) {
  const err = await p.then(() => null, (e) => e);
  expect(err).toBeInstanceOf(ServiceError);
  expect(err.code).toBe(code);
  if (message) expect(err.message).toMatch(message);
}

describe('schedule RPCs', () => {
  it('create → describe returns the compiled spec, defaults, action and create time', async () => {
    const { call } = setup();
    await create(call, 'nightly', { spec: { cronString: ['30 2 * * *'] } }, {
      memo: { fields: { owner: { metadata: { encoding: Buffer.from('json/plain') }, data: Buffer.from('"ml"') } } },
    });
    const d = await call('DescribeSchedule', { scheduleId: 'nightly' });
    expect(d.schedule.spec.cronString).toEqual([]);
    expect(d.schedule.spec.structuredCalendar).toHaveLength(1);
    expect(d.schedule.spec.structuredCalendar[0].hour).toEqual([expect.objectContaining({ start: 2, end: 2, step: 1 })]);
    expect(d.schedule.policies.overlapPolicy).toBe(OP.SCHEDULE_OVERLAP_POLICY_SKIP);
    expect(tsMs(d.schedule.policies.catchupWindow)).toBe(365 * 24 * 3600 * 1000);
    expect(d.schedule.action.startWorkflow.workflowType.name).toBe('finetune');
    expect(Buffer.from(d.schedule.action.startWorkflow.input.payloads[0].data).toString()).toBe('"cfg.json"');
    expect(Buffer.from(d.memo.fields.owner.data).toString()).toBe('"ml"');
    expect(tsMs(d.info.createTime)).toBe(T0);
    expect(d.info.futureActionTimes.map((t: any) => iso(tsMs(t)!))).toEqual(
      Array.from({ length: 10 }, (_, i) => `2026-06-${String(i + 1).padStart(2, '0')}T02:30:00Z`),
    );
  });

  it('rejects duplicates (but not a retried request), unknown ids and bad specs with the right codes', async () => {
    const { call } = setup();
    await create(call, 'a', { spec: { interval: [{ interval: { seconds: 60 } }] } });
    await create(call, 'a', { spec: { interval: [{ interval: { seconds: 60 } }] } }); // same request id: retry
    await expectCode(call('CreateSchedule', { scheduleId: 'a', requestId: 'other', schedule: { action: action() } }), status.ALREADY_EXISTS);
    await expectCode(call('DescribeSchedule', { scheduleId: 'nope' }), status.NOT_FOUND);
    await expectCode(call('DeleteSchedule', { scheduleId: 'nope' }), status.NOT_FOUND);
    await expectCode(create(call, 'b', { spec: { cronString: ['99 * * * *'] } }), status.INVALID_ARGUMENT, /^Invalid schedule spec: cron string "99 \* \* \* \*": Minute/);
    await expectCode(create(call, 'c', { spec: { cronString: ['CRON_TZ=Asia/Tokio 0 9 * * *'] } }), status.INVALID_ARGUMENT, /^Invalid schedule spec: unknown time zone "Asia\/Tokio"/);
    await expectCode(call('CreateSchedule', { scheduleId: 'd', schedule: { action: { startWorkflow: { workflowId: 'x', taskQueue: { name: 'q' } } } } }), status.INVALID_ARGUMENT, /workflow_type/);
    await expectCode(call('CreateSchedule', { namespace: 'other', scheduleId: 'e', schedule: { action: action() } }), status.NOT_FOUND);
  });

  it('fires on time, names the run <id>-<RFC 3339 time> and tags it with the schedule', async () => {
    const { host, call } = setup();
    await create(call, 'every-minute', { spec: { interval: [{ interval: { seconds: 60 } }] } });
    await host.clock.advance(59_000);
    expect(host.runs()).toHaveLength(0);
    await host.clock.advance(1_000);
    const [run] = host.runs();
    expect(run!.workflowId).toBe('retrain-2026-06-01T00:01:00Z');
    const sa = run!.request.searchAttributes!.indexedFields!;
    expect(Buffer.from(sa.TemporalScheduledById!.data!).toString()).toBe('"every-minute"');
    expect(Buffer.from(sa.TemporalScheduledById!.metadata!.type!).toString()).toBe('Keyword');
    expect(Buffer.from(sa.TemporalScheduledStartTime!.data!).toString()).toBe('"2026-06-01T00:01:00.000Z"');
    expect(Buffer.from(sa.TemporalScheduledStartTime!.metadata!.type!).toString()).toBe('Datetime');
    expect(run!.request.workflowType!.name).toBe('finetune');
    expect(run!.request.identity).toBe('temporal-scheduler-default-every-minute');
    const d = await call('DescribeSchedule', { scheduleId: 'every-minute' });
    expect(Number(d.info.actionCount)).toBe(1);
    expect(d.info.runningWorkflows).toEqual([expect.objectContaining({ workflowId: run!.workflowId, runId: run!.runId })]);
    expect(d.info.recentActions[0].startWorkflowResult.workflowId).toBe(run!.workflowId);
    expect(iso(tsMs(d.info.recentActions[0].scheduleTime)!)).toBe('2026-06-01T00:01:00Z');
    expect(iso(tsMs(d.info.futureActionTimes[0])!)).toBe('2026-06-01T00:02:00Z');
    host.close(run!.workflowId, run!.runId, WS.WORKFLOW_EXECUTION_STATUS_COMPLETED);
    await flush();
    const d2 = await call('DescribeSchedule', { scheduleId: 'every-minute' });
    expect(d2.info.runningWorkflows).toEqual([]);
    expect(d2.info.recentActions[0].startWorkflowStatus).toBe(WS.WORKFLOW_EXECUTION_STATUS_COMPLETED);
  });

  it('SKIP (default) skips a fire while the previous run is still going', async () => {
    const { host, call } = setup();
    await create(call, 's', { spec: { interval: [{ interval: { seconds: 10 } }] } });
    await host.clock.advance(35_000);
    expect(host.runs()).toHaveLength(1);
    const d = await call('DescribeSchedule', { scheduleId: 's' });
    expect(Number(d.info.overlapSkipped)).toBe(2);
    expect(Number(d.info.actionCount)).toBe(1);
  });

  it('BUFFER_ONE keeps one start and takes it when the running one closes; BUFFER_ALL keeps all', async () => {
    for (const [policy, buffered, skipped] of [
      [OP.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE, 1, 2],
      [OP.SCHEDULE_OVERLAP_POLICY_BUFFER_ALL, 3, 0],
    ] as const) {
      const { host, call } = setup();
      await create(call, 'b', { spec: { interval: [{ interval: { seconds: 10 } }] }, policies: { overlapPolicy: policy } });
      await host.clock.advance(40_000);
      let d = await call('DescribeSchedule', { scheduleId: 'b' });
      expect(Number(d.info.bufferSize)).toBe(buffered);
      expect(Number(d.info.overlapSkipped)).toBe(skipped);
      const first = host.running()[0]!;
      expect(first.workflowId).toBe('retrain-2026-06-01T00:00:10Z');
      host.close(first.workflowId, first.runId, WS.WORKFLOW_EXECUTION_STATUS_COMPLETED);
      await flush();
      // the buffered start runs at once, under its own nominal time
      expect(host.running().map((r) => r.workflowId)).toEqual(['retrain-2026-06-01T00:00:20Z']);
      d = await call('DescribeSchedule', { scheduleId: 'b' });
      expect(Number(d.info.bufferSize)).toBe(buffered - 1);
    }
  });

  it('TERMINATE_OTHER replaces the running run; CANCEL_OTHER asks it to stop and starts after it closed', async () => {
    {
      const { host, call } = setup();
      await create(call, 't', { spec: { interval: [{ interval: { seconds: 10 } }] }, policies: { overlapPolicy: OP.SCHEDULE_OVERLAP_POLICY_TERMINATE_OTHER } });
      await host.clock.advance(20_000);
      const runs = host.runs();
      expect(runs.map((r) => [r.workflowId, r.status])).toEqual([
        ['retrain-2026-06-01T00:00:10Z', WS.WORKFLOW_EXECUTION_STATUS_TERMINATED],
        ['retrain-2026-06-01T00:00:20Z', WS.WORKFLOW_EXECUTION_STATUS_RUNNING],
      ]);
    }
    {
      const { host, call } = setup();
      await create(call, 'c', { spec: { interval: [{ interval: { seconds: 10 } }] }, policies: { overlapPolicy: OP.SCHEDULE_OVERLAP_POLICY_CANCEL_OTHER } });
      await host.clock.advance(20_000);
      const [first] = host.runs();
      expect(first!.cancelRequested).toBe(true);
      expect(host.runs()).toHaveLength(1);
      host.close(first!.workflowId, first!.runId, WS.WORKFLOW_EXECUTION_STATUS_CANCELED);
      await flush();
      expect(host.running().map((r) => r.workflowId)).toEqual(['retrain-2026-06-01T00:00:20Z']);
    }
  });

  it('ALLOW_ALL starts every time and does not track the runs as overlapping', async () => {
    const { host, call } = setup();
    await create(call, 'all', { spec: { interval: [{ interval: { seconds: 10 } }] }, policies: { overlapPolicy: OP.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL } });
    await host.clock.advance(30_000);
    expect(host.running()).toHaveLength(3);
    const d = await call('DescribeSchedule', { scheduleId: 'all' });
    expect(d.info.runningWorkflows).toEqual([]);
    expect(Number(d.info.actionCount)).toBe(3);
  });

  it('pause stops firing (no catch-up for the paused time), unpause resumes; notes are kept', async () => {
    const { host, call } = setup();
    await create(call, 'p', { spec: { interval: [{ interval: { seconds: 10 } }] }, policies: { overlapPolicy: OP.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL } });
    await call('PatchSchedule', { scheduleId: 'p', patch: { pause: 'GPU maintenance' } });
    await host.clock.advance(60_000);
    expect(host.runs()).toHaveLength(0);
    let d = await call('DescribeSchedule', { scheduleId: 'p' });
    expect(d.schedule.state.paused).toBe(true);
    expect(d.schedule.state.notes).toBe('GPU maintenance');
    await call('PatchSchedule', { scheduleId: 'p', patch: { unpause: 'back' } });
    expect(host.runs()).toHaveLength(0);
    await host.clock.advance(10_000);
    expect(host.runs().map((r) => r.workflowId)).toEqual(['retrain-2026-06-01T00:01:10Z']);
    d = await call('DescribeSchedule', { scheduleId: 'p' });
    expect(d.schedule.state.notes).toBe('back');
    expect(Number(d.info.missedCatchupWindow)).toBe(0);
  });

  it('trigger starts now with its overlap policy, even when paused', async () => {
    const { host, call } = setup();
    await create(call, 'tr', { spec: {}, state: { paused: true } });
    await host.clock.advance(5_000);
    await call('PatchSchedule', { scheduleId: 'tr', patch: { triggerImmediately: { overlapPolicy: OP.SCHEDULE_OVERLAP_POLICY_SKIP } } });
    expect(host.runs().map((r) => r.workflowId)).toEqual(['retrain-2026-06-01T00:00:05Z']);
    await call('PatchSchedule', { scheduleId: 'tr', patch: { triggerImmediately: { overlapPolicy: OP.SCHEDULE_OVERLAP_POLICY_SKIP } } });
    expect(host.runs()).toHaveLength(1); // skipped: the first one is still running
    await call('PatchSchedule', { scheduleId: 'tr', patch: { triggerImmediately: {} } }); // UNSPECIFIED → schedule's policy (SKIP)
    const d = await call('DescribeSchedule', { scheduleId: 'tr' });
    expect(Number(d.info.overlapSkipped)).toBe(2);
    // initial_patch triggers at creation
    await call('CreateSchedule', { scheduleId: 'now', schedule: { action: action({ workflowId: 'other' }) }, initialPatch: { triggerImmediately: { overlapPolicy: OP.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL } } });
    expect(host.runs().map((r) => r.workflowId)).toContain('other-2026-06-01T00:00:05Z');
  });

  it('limited actions run out, and future times show only what remains', async () => {
    const { host, call } = setup();
    await create(call, 'l', { spec: { interval: [{ interval: { seconds: 10 } }] }, policies: { overlapPolicy: OP.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL }, state: { limitedActions: true, remainingActions: 2 } });
    let d = await call('DescribeSchedule', { scheduleId: 'l' });
    expect(d.info.futureActionTimes).toHaveLength(2);
    await host.clock.advance(60_000);
    expect(host.runs()).toHaveLength(2);
    d = await call('DescribeSchedule', { scheduleId: 'l' });
    expect(Number(d.schedule.state.remainingActions)).toBe(0);
    expect(d.info.futureActionTimes).toHaveLength(0);
  });

  it('backfill runs the spec times of a past range (start inclusive)', async () => {
    const { host, call } = setup();
    await create(call, 'bf', { spec: { cronString: ['0 * * * *'] } });
    await call('PatchSchedule', {
      scheduleId: 'bf',
      patch: { backfillRequest: [{ startTime: { seconds: (T0 - 3 * 3600_000) / 1000 }, endTime: { seconds: (T0 - 3600_000) / 1000 }, overlapPolicy: OP.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL }] },
    });
    expect(host.runs().map((r) => r.workflowId)).toEqual(['retrain-2026-05-31T21:00:00Z', 'retrain-2026-05-31T22:00:00Z', 'retrain-2026-05-31T23:00:00Z']);
  });

  it('update replaces spec, policies and state; describe→update round-trips', async () => {
    const { host, call } = setup();
    await create(call, 'u', { spec: { cronString: ['0 3 * * *'] } });
    await host.clock.advance(10_000);
    const d = await call('DescribeSchedule', { scheduleId: 'u' });
    // send back what describe returned, with a new cron string added (what handle.update() does)
    await call('UpdateSchedule', {
      scheduleId: 'u',
      schedule: { ...d.schedule, spec: { ...d.schedule.spec, cronString: ['0 4 * * *'] }, policies: { overlapPolicy: OP.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE } },
    });
    const d2 = await call('DescribeSchedule', { scheduleId: 'u' });
    expect(d2.schedule.spec.structuredCalendar).toHaveLength(2);
    expect(d2.schedule.policies.overlapPolicy).toBe(OP.SCHEDULE_OVERLAP_POLICY_BUFFER_ONE);
    expect(tsMs(d2.info.updateTime)).toBe(T0 + 10_000);
    expect(d2.info.futureActionTimes.slice(0, 2).map((t: any) => iso(tsMs(t)!))).toEqual(['2026-06-01T03:00:00Z', '2026-06-01T04:00:00Z']);
    await expectCode(call('UpdateSchedule', { scheduleId: 'u', schedule: { ...d.schedule, spec: { interval: [{ interval: { seconds: 0 } }] } } }), status.INVALID_ARGUMENT, /^Invalid schedule spec/);
    await expectCode(call('UpdateSchedule', { scheduleId: 'u', conflictToken: d.conflictToken, schedule: d.schedule }), status.FAILED_PRECONDITION);
  });

  it('pause_on_failure pauses when a started run fails', async () => {
    const { host, call } = setup();
    await create(call, 'f', { spec: { interval: [{ interval: { seconds: 10 } }] }, policies: { pauseOnFailure: true } });
    await host.clock.advance(10_000);
    const [run] = host.runs();
    host.close(run!.workflowId, run!.runId, WS.WORKFLOW_EXECUTION_STATUS_FAILED);
    await flush();
    const d = await call('DescribeSchedule', { scheduleId: 'f' });
    expect(d.schedule.state.paused).toBe(true);
    expect(d.schedule.state.notes).toMatch(/paused due to workflow failure: retrain-2026-06-01T00:00:10Z/);
    await host.clock.advance(30_000);
    expect(host.runs()).toHaveLength(1);
  });

  it("hands the last tracked run's result (or failure) to the next run, as workflowInfo().lastResult", async () => {
    const { host, call } = setup();
    await create(call, 'lr', { spec: { interval: [{ interval: { seconds: 10 } }] } });
    await host.clock.advance(10_000);
    const [first] = host.runs();
    expect(first!.request.lastCompletionResult).toBeNull();
    const result = { payloads: [{ metadata: { encoding: Buffer.from('json/plain') }, data: Buffer.from('{"checkpoint":"step-100"}') }] };
    host.close(first!.workflowId, first!.runId, WS.WORKFLOW_EXECUTION_STATUS_COMPLETED, { result });
    await flush();
    await host.clock.advance(10_000);
    const second = host.runs()[1]!;
    expect(Buffer.from(second.request.lastCompletionResult!.payloads![0]!.data!).toString()).toBe('{"checkpoint":"step-100"}');
    host.close(second.workflowId, second.runId, WS.WORKFLOW_EXECUTION_STATUS_FAILED, { failure: { message: 'OOM' } });
    await flush();
    await host.clock.advance(10_000);
    const third = host.runs()[2]!;
    expect(third.request.continuedFailure!.message).toBe('OOM');
    expect(Buffer.from(third.request.lastCompletionResult!.payloads![0]!.data!).toString()).toBe('{"checkpoint":"step-100"}');
  });

  it('start and end time bound the schedule', async () => {
    const { host, call } = setup();
    await create(call, 'se', {
      spec: { interval: [{ interval: { seconds: 10 } }], startTime: { seconds: (T0 + 25_000) / 1000 }, endTime: { seconds: (T0 + 45_000) / 1000 } },
      policies: { overlapPolicy: OP.SCHEDULE_OVERLAP_POLICY_ALLOW_ALL },
    });
    await host.clock.advance(90_000);
    expect(host.runs().map((r) => r.workflowId)).toEqual(['retrain-2026-06-01T00:00:30Z', 'retrain-2026-06-01T00:00:40Z']);
  });

  it('delete stops the schedule; runs it started continue', async () => {
    const { host, call } = setup();
    await create(call, 'd', { spec: { interval: [{ interval: { seconds: 10 } }] } });
    await host.clock.advance(10_000);
    await call('DeleteSchedule', { scheduleId: 'd' });
    await host.clock.advance(30_000);
    expect(host.runs()).toHaveLength(1);
    expect(host.running()).toHaveLength(1);
    await expectCode(call('DescribeSchedule', { scheduleId: 'd' }), status.NOT_FOUND);
  });

  it('lists with pages and queries, counts, and lists matching times', async () => {
    const { call } = setup();
    for (const id of ['retrain-a', 'retrain-b', 'eval-c']) await create(call, id, { spec: { interval: [{ interval: { seconds: 3600 } }] } });
    await call('PatchSchedule', { scheduleId: 'retrain-b', patch: { pause: 'hold' } });
    const p1 = await call('ListSchedules', { maximumPageSize: 2 });
    expect(p1.schedules.map((s: any) => s.scheduleId)).toEqual(['eval-c', 'retrain-a']);
    const p2 = await call('ListSchedules', { maximumPageSize: 2, nextPageToken: p1.nextPageToken });
    expect(p2.schedules.map((s: any) => s.scheduleId)).toEqual(['retrain-b']);
    expect(p2.nextPageToken.length).toBe(0);
    expect(p2.schedules[0].info.paused).toBe(true);
    expect(p2.schedules[0].info.workflowType.name).toBe('finetune');
    expect(p2.schedules[0].info.futureActionTimes).toHaveLength(5);
    const q = await call('ListSchedules', { query: "ScheduleId STARTS_WITH 'retrain-' AND TemporalSchedulePaused = false" });
    expect(q.schedules.map((s: any) => s.scheduleId)).toEqual(['retrain-a']);
    expect(Number((await call('CountSchedules', { query: "ScheduleId IN ('eval-c', 'retrain-a')" })).count)).toBe(2);
    await expectCode(call('ListSchedules', { query: 'ScheduleId LIKE x' }), status.INVALID_ARGUMENT, /unsupported operator/);
    const m = await call('ListScheduleMatchingTimes', { scheduleId: 'eval-c', startTime: { seconds: T0 / 1000 }, endTime: { seconds: (T0 + 3 * 3600_000) / 1000 } });
    expect(m.startTime.map((t: any) => iso(tsMs(t)!))).toEqual(['2026-06-01T01:00:00Z', '2026-06-01T02:00:00Z', '2026-06-01T03:00:00Z']);
  });
});

describe('module loading', () => {
  it('loads under plain Node ESM through tsx, as the server runs it (vitest would hide CommonJS interop errors)', () => {
    const code = "const m = await import('./devserver/schedules/index.ts'); console.log(typeof m.createScheduleService)";
    const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8' });
    expect(out.trim()).toBe('function');
  });
});

describe('durability', () => {
  it('adds columns introduced later to an existing schedule table', async () => {
    const db = new Database(':memory:');
    setup(db).svc.stop();
    db.exec('ALTER TABLE schedule_schedules DROP COLUMN last_completion_result; ALTER TABLE schedule_schedules DROP COLUMN continued_failure');
    const again = setup(db);
    await create(again.call, 'after-migration', { spec: { interval: [{ interval: { seconds: 60 } }] } });
    expect((await again.call('DescribeSchedule', { scheduleId: 'after-migration' })).schedule.action.startWorkflow.workflowId).toBe('retrain');
  });

  it('a restarted service re-arms from the database and catches up once within the window', async () => {
    const file = `/tmp/schedules-restart-${process.pid}-${Date.now()}.db`;
    const db1 = new Database(file);
    const first = setup(db1);
    await create(first.call, 'r', { spec: { interval: [{ interval: { seconds: 60 } }] }, policies: { catchupWindow: { seconds: 150 } } });
    await first.host.clock.advance(60_000);
    expect(first.host.runs()).toHaveLength(1);
    first.host.close(first.host.runs()[0]!.workflowId, first.host.runs()[0]!.runId, WS.WORKFLOW_EXECUTION_STATUS_COMPLETED);
    await flush();
    first.svc.stop();
    db1.close();

    // Down for ten minutes: fires at 00:02 … 00:11 were missed. Within the 150 s window: 00:09, 00:10, 00:11
    // (00:11 is "now"); SKIP runs the first of those and skips the other two; the 7 older ones count as missed.
    const db2 = new Database(file);
    const second = setup(db2, T0 + 11 * 60_000);
    await flush();
    expect(second.host.runs().map((r) => r.workflowId)).toEqual(['retrain-2026-06-01T00:01:00Z', 'retrain-2026-06-01T00:09:00Z']);
    const d = await second.call('DescribeSchedule', { scheduleId: 'r' });
    expect(Number(d.info.missedCatchupWindow)).toBe(7);
    expect(Number(d.info.overlapSkipped)).toBe(2);
    expect(Number(d.info.actionCount)).toBe(2);
    expect(tsMs(d.info.createTime)).toBe(T0);
    // and it keeps firing on the new clock
    second.host.close(second.host.running()[0]!.workflowId, second.host.running()[0]!.runId, WS.WORKFLOW_EXECUTION_STATUS_COMPLETED);
    await flush();
    await second.host.clock.advance(60_000);
    expect(second.host.running().map((r) => r.workflowId)).toEqual(['retrain-2026-06-01T00:12:00Z']);
    db2.close();
  });
});
