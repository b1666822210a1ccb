// Schedules end to end: the official TypeScript SDK (Client.schedule and a real Worker) against our dev server.
// Intervals are one second so the suite stays short; waits poll describe() instead of sleeping fixed times.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Client, Connection, ScheduleAlreadyRunning, ScheduleNotFoundError, ScheduleOverlapPolicy } from '@temporalio/client';
import { NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevServer, type DevServer } from '../../devserver/index.js';

// The workflows the schedules start. Written at run time into the git-ignored /tmp of the repo so that the
// Worker's bundler resolves @temporalio/workflow from the project's node_modules.
const WORKFLOWS_DIR = path.resolve('tmp/schedules-e2e');
const WORKFLOWS = `
import { sleep, workflowInfo } from '@temporalio/workflow';
export async function scheduledEcho(label) { return label + ' from ' + workflowInfo().workflowId; }
export async function scheduledSleep(ms) { await sleep(ms); return 'slept'; }
`;

async function waitFor<T>(what: string, f: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await f();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last value: ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let server: DevServer;
let connection: Connection;
let client: Client;
let worker: Worker;
let workerDone: Promise<void>;
const taskQueue = 'schedules-e2e';

beforeAll(async () => {
  mkdirSync(WORKFLOWS_DIR, { recursive: true });
  writeFileSync(path.join(WORKFLOWS_DIR, 'workflows.js'), WORKFLOWS);
  Runtime.install({ logger: new (await import('@temporalio/worker')).DefaultLogger('WARN') });
  server = await startDevServer({ port: 0, dbFile: ':memory:' });
  connection = await Connection.connect({ address: server.address });
  client = new Client({ connection });
  worker = await Worker.create({
    connection: await NativeConnection.connect({ address: server.address }),
    taskQueue,
    workflowsPath: path.join(WORKFLOWS_DIR, 'workflows.js'),
  });
  workerDone = worker.run();
});

afterAll(async () => {
  worker?.shutdown();
  await workerDone;
  await connection?.close();
  await server?.close();
});

describe('schedules through the TypeScript SDK', () => {
  it('create, describe (cron compiled), update round-trip, pause/unpause, list, delete', async () => {
    const handle = await client.schedule.create({
      scheduleId: 'lifecycle',
      spec: { cronExpressions: ['0 3 * * *'], intervals: [{ every: '24h' }] },
      action: { type: 'startWorkflow', workflowType: 'scheduledEcho', args: ['nightly'], taskQueue },
      memo: { owner: 'ml-team' },
    });
    await expect(
      client.schedule.create({ scheduleId: 'lifecycle', spec: { intervals: [{ every: '1h' }] }, action: { type: 'startWorkflow', workflowType: 'scheduledEcho', taskQueue } }),
    ).rejects.toBeInstanceOf(ScheduleAlreadyRunning);
    await expect(
      client.schedule.create({ scheduleId: 'bad', spec: { cronExpressions: ['0 25 * * *'] }, action: { type: 'startWorkflow', workflowType: 'scheduledEcho', taskQueue } }),
    ).rejects.toThrow(TypeError);

    let d = await handle.describe();
    expect(d.spec.calendars).toHaveLength(1);
    expect(d.spec.calendars![0]!.hour).toEqual([{ start: 3, end: 3, step: 1 }]);
    expect(d.spec.intervals).toEqual([{ every: 86_400_000, offset: undefined }]);
    expect(d.policies.overlap).toBe(ScheduleOverlapPolicy.SKIP);
    expect(d.memo).toEqual({ owner: 'ml-team' });
    expect(d.action).toMatchObject({ type: 'startWorkflow', workflowType: 'scheduledEcho', workflowId: 'lifecycle-workflow', args: ['nightly'] });
    expect(d.info.createdAt.getTime()).toBeGreaterThan(Date.now() - 60_000);
    expect(d.info.nextActionTimes).toHaveLength(10);

    // handle.update() sends back what describe returned: the compiled cron must survive it.
    await handle.update((prev) => ({ ...prev, spec: { ...prev.spec, cronExpressions: ['30 4 * * MON-FRI'] } }));
    d = await handle.describe();
    expect(d.spec.calendars).toHaveLength(2);
    expect(d.spec.intervals).toHaveLength(1);
    expect(d.info.lastUpdatedAt).toBeInstanceOf(Date);

    await handle.pause('holding for data refresh');
    d = await handle.describe();
    expect(d.state).toMatchObject({ paused: true, note: 'holding for data refresh' });
    await handle.unpause();
    expect((await handle.describe()).state.paused).toBe(false);

    const listed = [];
    for await (const s of client.schedule.list()) listed.push(s);
    expect(listed.map((s) => s.scheduleId)).toContain('lifecycle');
    const entry = listed.find((s) => s.scheduleId === 'lifecycle')!;
    expect(entry.action).toEqual({ type: 'startWorkflow', workflowType: 'scheduledEcho' });
    expect(entry.info.nextActionTimes.length).toBeGreaterThan(0);

    await handle.delete();
    await expect(handle.describe()).rejects.toBeInstanceOf(ScheduleNotFoundError);
  });

  it('round-trips a full spec (calendars, skip, jitter, start/end, time zone) through describe and update', async () => {
    const startAt = new Date('2030-01-01T00:00:00Z');
    const endAt = new Date('2030-12-31T00:00:00Z');
    const handle = await client.schedule.create({
      scheduleId: 'full-spec',
      spec: {
        calendars: [{ hour: 3, minute: 30, dayOfWeek: 'MONDAY', comment: 'weekly retrain' }],
        skip: [{ month: 'JANUARY', dayOfMonth: '*', dayOfWeek: '*', hour: '*', minute: '*', second: '*' }],
        jitter: '10m',
        startAt,
        endAt,
        timezone: 'Europe/Berlin',
      },
      action: { type: 'startWorkflow', workflowType: 'scheduledEcho', taskQueue },
    });
    const check = async () => {
      const d = await handle.describe();
      expect(d.spec.timezone).toBe('Europe/Berlin');
      expect(d.spec.jitter).toBe(600_000);
      expect(d.spec.startAt).toEqual(startAt);
      expect(d.spec.endAt).toEqual(endAt);
      expect(d.spec.calendars![0]).toMatchObject({ hour: [{ start: 3, end: 3, step: 1 }], dayOfWeek: [{ start: 'MONDAY', end: 'MONDAY', step: 1 }], comment: 'weekly retrain' });
      expect(d.spec.skip![0]!.month).toEqual([{ start: 'JANUARY', end: 'JANUARY', step: 1 }]);
      const next = d.info.nextActionTimes;
      expect(next).toHaveLength(10);
      // Mondays 03:30 Berlin (02:30Z in winter) plus up to 10 minutes of jitter, January skipped
      expect(next[0]!.getTime() - Date.parse('2030-02-04T02:30:00Z')).toBeGreaterThanOrEqual(0);
      expect(next[0]!.getTime() - Date.parse('2030-02-04T02:30:00Z')).toBeLessThan(600_000);
      for (const t of next) expect(t.getUTCMonth()).not.toBe(0);
      return d;
    };
    const before = await check();
    await handle.update((prev) => prev);
    const after = await check();
    expect(after.info.nextActionTimes).toEqual(before.info.nextActionTimes);
    await handle.delete();
  });

  it('a 1-second interval starts real runs that a Worker completes; trigger starts one now', async () => {
    const handle = await client.schedule.create({
      scheduleId: 'every-second',
      spec: { intervals: [{ every: '1s' }] },
      action: { type: 'startWorkflow', workflowType: 'scheduledEcho', args: ['tick'], taskQueue, workflowId: 'echo' },
    });
    const d = await waitFor('two actions', () => handle.describe(), (x) => x.info.recentActions.length >= 2);
    await handle.pause();
    const first = d.info.recentActions[0]!;
    expect(first.action.workflow.workflowId).toMatch(/^echo-\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(first.action.workflow.workflowId).toBe(`echo-${first.scheduledAt.toISOString().replace('.000Z', 'Z')}`);
    const wf = client.workflow.getHandle(first.action.workflow.workflowId, first.action.workflow.firstExecutionRunId);
    expect(await wf.result()).toBe(`tick from ${first.action.workflow.workflowId}`);
    const wd = await wf.describe();
    expect(wd.searchAttributes.TemporalScheduledById).toEqual(['every-second']);

    // A triggered run is named after the second it starts in: wait out the second of the last scheduled run, or the
    // trigger repeats that run's ID while it may still be running, and the start is refused (as on Temporal's server).
    const paused = await handle.describe();
    const lastSec = Math.max(...paused.info.recentActions.map((a) => Math.floor(a.scheduledAt.getTime() / 1000)));
    while (Math.floor(Date.now() / 1000) <= lastSec) await new Promise((r) => setTimeout(r, 50));
    const before = paused.info.numActionsTaken;
    await handle.trigger(); // even though paused
    const after = await handle.describe();
    expect(after.info.numActionsTaken).toBe(before + 1);

    // Changing the action's arguments reaches the next runs (the features suite's schedule/basic).
    await handle.update((prev) => ({ ...prev, action: { ...prev.action, args: ['tock'] }, state: { ...prev.state, paused: false } }));
    const updatedAt = (await handle.describe()).info.lastUpdatedAt!;
    const isNew = (a: { takenAt: Date }) => a.takenAt > updatedAt;
    const next = await waitFor('a run after the update', () => handle.describe(), (x) => x.info.recentActions.some(isNew));
    await handle.delete();
    const run = next.info.recentActions.find(isNew)!.action.workflow;
    expect(await client.workflow.getHandle(run.workflowId, run.firstExecutionRunId).result()).toBe(`tock from ${run.workflowId}`);
  });

  it('backfill runs the spec times of past ranges, start inclusive (the features suite\'s schedule/backfill)', async () => {
    const handle = await client.schedule.create({
      scheduleId: 'backfill',
      spec: { intervals: [{ every: '1m' }] },
      action: { type: 'startWorkflow', workflowType: 'scheduledEcho', args: ['backfilled'], taskQueue },
      state: { paused: true },
    });
    const minute = Math.floor(Date.now() / 60_000) * 60_000;
    await handle.backfill([
      { start: new Date(minute - 3 * 365 * 86_400_000 - 120_000), end: new Date(minute - 3 * 365 * 86_400_000), overlap: ScheduleOverlapPolicy.ALLOW_ALL },
      { start: new Date(minute - 30 * 60_000 - 90_000), end: new Date(minute - 30 * 60_000), overlap: ScheduleOverlapPolicy.ALLOW_ALL },
    ]);
    const d = await waitFor('backfilled runs to finish', () => handle.describe(), (x) => x.info.numActionsTaken === 5 && x.info.runningActions.length === 0);
    expect(d.info.recentActions.map((a) => a.scheduledAt.getTime())).toEqual([
      minute - 3 * 365 * 86_400_000 - 120_000,
      minute - 3 * 365 * 86_400_000 - 60_000,
      minute - 3 * 365 * 86_400_000,
      minute - 31 * 60_000,
      minute - 30 * 60_000,
    ]);
    await handle.delete();
  });

  it('SKIP: a long run makes later fires skip instead of stacking', async () => {
    const handle = await client.schedule.create({
      scheduleId: 'skip',
      spec: { intervals: [{ every: '1s' }] },
      action: { type: 'startWorkflow', workflowType: 'scheduledSleep', args: [60_000], taskQueue },
      policies: { overlap: ScheduleOverlapPolicy.SKIP },
    });
    const d = await waitFor('two skipped fires', () => handle.describe(), (x) => x.info.numActionsSkippedOverlap >= 2);
    expect(d.info.numActionsTaken).toBe(1);
    expect(d.info.runningActions).toHaveLength(1);
    await handle.delete();
    const running = d.info.runningActions[0]!.workflow;
    await client.workflow.getHandle(running.workflowId).terminate('test done');
  });

  it('TERMINATE_OTHER and CANCEL_OTHER stop the running run and start the new one', async () => {
    const make = (scheduleId: string, overlap: ScheduleOverlapPolicy) =>
      client.schedule.create({
        scheduleId,
        spec: { intervals: [{ every: '1s' }] },
        action: { type: 'startWorkflow', workflowType: 'scheduledSleep', args: [60_000], taskQueue, workflowId: scheduleId },
        policies: { overlap },
      });
    const handles = [await make('terminate-other', ScheduleOverlapPolicy.TERMINATE_OTHER), await make('cancel-other', ScheduleOverlapPolicy.CANCEL_OTHER)];
    await Promise.all(handles.map((h) => waitFor(`${h.scheduleId}: three actions`, () => h.describe(), (x) => x.info.numActionsTaken >= 3)));
    for (const h of handles) await h.pause(); // no more fires while we look
    const described = await Promise.all(handles.map((h) => h.describe()));
    for (const h of handles) await h.delete();
    for (const [i, d] of described.entries()) {
      const [first, second] = d.info.recentActions;
      const firstRun = await client.workflow.getHandle(first!.action.workflow.workflowId, first!.action.workflow.firstExecutionRunId).describe();
      expect(firstRun.status.name).toBe(i === 0 ? 'TERMINATED' : 'CANCELLED');
      expect(second!.scheduledAt.getTime()).toBeGreaterThan(first!.scheduledAt.getTime());
      // at most one run of the schedule is open at any time
      expect(d.info.runningActions.length).toBeLessThanOrEqual(1);
      for (const a of d.info.recentActions) {
        // clean up whatever still sleeps (a cancel requested just before the pause may have closed it already)
        await client.workflow.getHandle(a.action.workflow.workflowId).terminate('test done').catch(() => undefined);
      }
    }
  });
});

describe('schedules across a server restart', () => {
  it('the schedule and its counters survive, and it fires again after the restart (catching up)', async () => {
    const dbFile = path.join(tmpdir(), `schedules-e2e-${process.pid}-${Date.now()}.db`);
    try {
      let s = await startDevServer({ port: 0, dbFile });
      let conn = await Connection.connect({ address: s.address });
      let c = new Client({ connection: conn });
      // No worker here: runs stay open, so ALLOW_ALL is what lets every fire start one.
      const spec = { intervals: [{ every: '1s' }] };
      await c.schedule.create({
        scheduleId: 'durable',
        spec,
        action: { type: 'startWorkflow', workflowType: 'scheduledEcho', taskQueue: 'nobody-polls' },
        policies: { overlap: ScheduleOverlapPolicy.ALLOW_ALL },
      });
      const before = await waitFor('a fire', () => c.schedule.getHandle('durable').describe(), (x) => x.info.numActionsTaken >= 1);
      await conn.close();
      await s.close();
      const downAt = Date.now();
      await new Promise((r) => setTimeout(r, 2500));

      s = await startDevServer({ port: 0, dbFile });
      conn = await Connection.connect({ address: s.address });
      c = new Client({ connection: conn });
      const d = await c.schedule.getHandle('durable').describe();
      expect(d.info.createdAt).toEqual(before.info.createdAt);
      // the two or three fires that fell into the downtime ran on restart (inside the catch-up window)
      const caughtUp = d.info.recentActions.filter((a) => a.scheduledAt.getTime() > downAt && a.takenAt.getTime() - a.scheduledAt.getTime() > 500);
      expect(caughtUp.length).toBeGreaterThanOrEqual(2);
      const later = await waitFor('a fire after the restart', () => c.schedule.getHandle('durable').describe(), (x) => x.info.numActionsTaken > d.info.numActionsTaken);
      expect(later.info.numActionsMissedCatchupWindow).toBe(0);
      await c.schedule.getHandle('durable').delete();
      await conn.close();
      await s.close();
    } finally {
      for (const f of [dbFile, `${dbFile}-wal`, `${dbFile}-shm`]) rmSync(f, { force: true });
    }
  });
});
