// Fault tolerance end to end on the CPU backend, with the server (the embedded one here, Temporal's dev server in
// the .temporal twin) and workers as real processes:
//  - SIGKILL the worker mid-training: a new worker resumes from the last checkpoint, and the final weights equal
//    those of an uninterrupted run with the same checkpoint schedule;
//  - corrupt the newest checkpoint before the resume: the run falls back to the one before and says so;
//  - SIGKILL the worker during tokenization: the retry reuses or redoes the work, never a half-written output;
//  - SIGKILL the dev server mid-run and restart it: the run completes;
//  - "stop", two "checkpoint now", cancel then re-run, continue-as-new;
// after every interruption the report's steps, tokens, first and last loss equal the uninterrupted run's (up to
// the step a stopped run reached: its metrics log), and the loss curve exists; `finetune status` shows a retrying
// segment's attempt and last failure; then every history these runs produced replays through the current workflow code.
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../configs/index.js';
import { readManifest, verifyShards } from '../../datasets/index.js';
import { parseMetrics, summarize } from '../../activities/lib/metrics.js';
import { checkpointNowSignal, stopSignal, type FinetuneReport } from '../../workflows/messages.js';
import { replay } from '../workflows/helpers.js';
import { startServer, suiteServer, type TestServer } from '../servers.js';
import { diffSafetensors, spawnFinetune, trainAttempts, until, type Proc } from './procs.js';

const root = mkdtempSync(join(tmpdir(), 'ft-e2e-'));
const histories: { workflowId: string; history: any }[] = [];
const procs: Proc[] = [];
/** Workers started by the running test: killed when it ends, whatever happened, so none serves the next test. */
let testWorkers: Proc[] = [];

/** A tiny GPT-2 on Moby Dick: 60 steps in segments of 20, a checkpoint every 10 steps. */
function config(name: string, over: { blockSize?: number; continueAsNewAfterEvents?: number } = {}) {
  return parseConfig({
    name, storage: { root },
    data: { train: { type: 'builtin', name: 'moby-dick' }, validationFraction: 0.05 },
    preprocess: { mode: 'concat', blockSize: over.blockSize ?? 32 },
    model: { nLayer: 2, nHead: 2, nEmbd: 32, nPositions: 32 },
    training: { backend: 'cpu', microBatchSize: 4, maxSteps: 60, segmentSteps: 20, learningRate: 1e-3, warmupSteps: 5, logEverySteps: 5 },
    checkpoint: { everySteps: 10, everyMinutes: 0, keepLast: 3 },
    evaluation: { maxBatches: 4, batchSize: 4 },
    generation: { prompts: ['The whale'], maxNewTokens: 8, temperature: 0 },
    temporal: { heartbeatTimeoutSeconds: 3, ...(over.continueAsNewAfterEvents ? { continueAsNewAfterEvents: over.continueAsNewAfterEvents } : {}) },
  });
}

let server: TestServer;
let client: Client;
const dbFile = join(root, 'temporal.db');

function startWorker(): Proc {
  const p = spawnFinetune(['worker', '--address', server.address, '--progress-interval-ms', '200']);
  procs.push(p);
  testWorkers.push(p);
  return p;
}

// A worker's start (tsx compiling the sources) takes seconds on an idle host and minutes at load 15+.
async function readyWorker(): Promise<Proc> {
  const w = startWorker();
  await w.waitFor(/polling/, 180_000);
  return w;
}

/** Committed checkpoints of a run, newest first (read through the engine's own listing). */
async function checkpoints(name: string, workflowId: string): Promise<{ dir: string; step: number }[]> {
  const series = join(root, name);
  if (!existsSync(series)) return [];
  const run = readdirSync(series).find((d) => d.startsWith(`${workflowId}-`));
  if (!run) return [];
  const { listCheckpoints } = await import('../../native/index.js');
  return listCheckpoints(join(series, run, 'checkpoints'));
}

async function result(workflowId: string): Promise<FinetuneReport> {
  // Long polls can fail while the server restarts; ask again until the run closes.
  for (;;) {
    try {
      const r = (await client.workflow.getHandle(workflowId).result()) as FinetuneReport;
      histories.push({ workflowId, history: await client.workflow.getHandle(workflowId).fetchHistory() });
      return r;
    } catch (e) {
      if ((e as Error).name === 'WorkflowFailedError') throw e;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

const start = (name: string, workflowId: string, over?: { blockSize?: number; continueAsNewAfterEvents?: number }) =>
  client.workflow.start('finetune', { taskQueue: 'finetune', workflowId, args: [config(name, over)] });

/**
 * The exact-resume check: the run's exported weights equal the reference's byte for byte. On a mismatch the
 * message says which tensors differ and by how much, every train attempt (steps, how it ended, where it resumed)
 * and what the workers logged about where they started, so a flaky failure can be diagnosed from one CI log.
 */
function expectSameWeights(r: FinetuneReport, ref: FinetuneReport | undefined, workers: Proc[]) {
  if (!ref) expect.fail('no reference weights: the uninterrupted run (the first test) did not complete');
  const file = join(r.modelDir!, 'model.safetensors');
  const diff = diffSafetensors(file, join(ref.modelDir!, 'model.safetensors'));
  if (diff === null) return;
  const history = histories.find((h) => h.workflowId === r.workflowId)?.history;
  const logs = workers.flatMap((w, i) => w.output().split('\n').filter((l) => /train .*attempt|resuming|segment|fell back|WARN|ERROR/i.test(l)).map((l) => `worker ${i + 1}: ${l.slice(0, 400)}`));
  expect.fail([`${r.workflowId}: final weights differ from the uninterrupted run's:`, diff,
    'train attempts:', ...(history ? trainAttempts(history) : ['(no history)']),
    `resumes: ${JSON.stringify(r.train.resumes)}`, 'notes:', ...r.notes, 'worker logs:', ...logs].join('\n'));
}

/**
 * The report's training numbers after an interruption equal the uninterrupted run's: its whole run, or (a stopped
 * run) the reference's metrics log up to the step it reached. And the loss curve was drawn.
 */
function expectSameTraining(r: FinetuneReport, ref: FinetuneReport | undefined) {
  if (!ref) expect.fail('no reference: the uninterrupted run (the first test) did not complete');
  const pick = (t: { steps: number; tokens: number; firstLoss: number | null; lastLoss: number | null }) =>
    ({ steps: t.steps, tokens: t.tokens, firstLoss: t.firstLoss, lastLoss: t.lastLoss });
  const want = r.train.steps === ref.train.steps ? pick(ref.train) : pick(summarize(parseMetrics(readFileSync(ref.metricsLog!, 'utf8')), r.train.steps));
  expect(pick(r.train), `${r.workflowId}: resumes ${JSON.stringify(r.train.resumes)}\nnotes:\n${r.notes.join('\n')}`).toEqual(want);
  expect(r.lossCurve).toBe(join(r.runDir, 'loss.svg'));
  const svg = readFileSync(r.lossCurve!, 'utf8');
  expect(svg).toMatch(/^<svg /);
  expect(svg.match(/<polyline class="train"[^>]*points="([^"]*)"/)![1]!.split(' ')).toHaveLength(r.train.steps);
}

beforeAll(async () => {
  server = await startServer(suiteServer(), { dbFile });
  client = new Client({ connection: await Connection.connect({ address: server.address }) });
});

// A test that failed before it killed its workers (a timeout on a loaded host) must not leave them polling: a
// leftover worker would serve the next test's run beside the one that test kills, so its "killed" worker would
// not be the only one, prepare would not be interrupted, and two live workers would split its segments.
afterEach(async () => {
  for (const p of testWorkers) await p.kill('SIGKILL');
  testWorkers = [];
});

afterAll(async () => {
  for (const p of procs) await p.kill('SIGKILL');
  await client?.connection.close();
  await server?.close();
});

// Each run is a few dozen seconds on an idle 2-core machine; the limits leave room for a loaded CI host.
describe(`fault tolerance (CPU backend, ${suiteServer()} server, workers as processes)`, { timeout: 400_000 }, () => {
  let reference: FinetuneReport | undefined;

  it('an uninterrupted run: the reference weights', async () => {
    const w = await readyWorker();
    try {
      await start('ref', 'ft-ref');
      reference = await result('ft-ref');
      expect(reference.train.steps).toBe(60);
      expect(reference.train.resumedFromSteps).toEqual([]);
      expect(reference.eval!.loss).toBeLessThan(reference.train.firstLoss!);
      expect(reference.samples[0]!.text.length).toBeGreaterThan(0);
      // The metrics log has every step once; tokens are 60 steps of 4 sequences of 32 tokens.
      expect(reference.train.tokens).toBe(60 * 4 * 32);
      const log = parseMetrics(readFileSync(reference.metricsLog!, 'utf8'));
      expect(log.steps.map((x) => x.step)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
      expect(log.evals).toEqual([expect.objectContaining({ step: 60, loss: reference.eval!.loss })]);
      expect(reference.train.engineBuilds).toHaveLength(1);
      expectSameTraining(reference, reference);
    } finally {
      await w.kill('SIGTERM');
    }
  });

  it('SIGKILL the worker mid-training: a new worker resumes from the last checkpoint, same final weights', async () => {
    const w1 = await readyWorker();
    await start('ref', 'ft-kill');
    // Killed while a segment runs, so the server retries it: after a checkpoint inside a segment (30: segments are
    // 20 steps, checkpoints every 10), never at a segment's end, where the next segment may not have started yet
    // and nothing would time out until a worker takes it.
    await until(async () => ((s) => s >= 20 && s % 20 !== 0)((await checkpoints('ref', 'ft-kill'))[0]?.step ?? 0) &&
      ((await client.workflow.getHandle('ft-kill').describe()).raw.pendingActivities ?? []).some((a) => a.activityType?.name === 'trainSegment' && Number(a.state) === 2),
    120_000, 'a checkpoint at step >= 20 and a running segment');
    await w1.kill('SIGKILL');
    // The server retries the segment once the heartbeat times out; `finetune status` shows it from the server's
    // pending-activity details (no workflow worker is left to answer the progress query).
    await until(async () => {
      const d = await client.workflow.getHandle('ft-kill').describe();
      return (d.raw.pendingActivities ?? []).some((a) => a.activityType?.name === 'trainSegment' && (a.attempt ?? 1) >= 2);
    }, 60_000, 'the segment to be retried');
    const status = spawnFinetune(['status', 'ft-kill', '--address', server.address]);
    procs.push(status);
    const statusExit = new Promise<number | null>((r) => status.child.once('exit', (c) => r(c)));
    const w2 = await readyWorker();
    try {
      await statusExit;
      expect(status.output()).toMatch(/trainSegment \(id \d+\): attempt [2-9] of 20/);
      expect(status.output()).toMatch(/last failure activity Heartbeat timeout/);
      const r = await result('ft-kill');
      expect(r.train.steps).toBe(60);
      expect(r.train.resumedFromSteps.length).toBeGreaterThan(0);
      expect(r.train.resumedFromSteps[0]).toBeGreaterThanOrEqual(20);
      expect(r.train.resumes[0]!.cause).toMatch(/retry \(attempt [2-9]\) after attempt \d+ ended.*: activity Heartbeat timeout/);
      expectSameTraining(r, reference);
      expectSameWeights(r, reference, [w1, w2]);
      expect(r.eval).toEqual(reference?.eval);
      expect(r.samples).toEqual(reference?.samples);
    } finally {
      await w2.kill('SIGTERM');
    }
  });

  it('a corrupt newest checkpoint: the resume falls back to the one before and says so', async () => {
    const w1 = await readyWorker();
    await start('ref', 'ft-corrupt');
    await until(async () => (await checkpoints('ref', 'ft-corrupt')).length >= 2, 120_000, 'two committed checkpoints');
    await w1.kill('SIGKILL');
    const [newest, previous] = await checkpoints('ref', 'ft-corrupt');
    // Truncate the biggest file of the newest checkpoint: its DONE marker stays, its content hash no longer matches.
    const files = readdirSync(newest!.dir).map((f) => join(newest!.dir, f)).filter((f) => statSync(f).isFile());
    const big = files.sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
    truncateSync(big, Math.floor(statSync(big).size / 2));
    const w2 = await readyWorker();
    try {
      const r = await result('ft-corrupt');
      expect(r.train.steps).toBe(60);
      expect(r.notes.join('\n')).toContain(`fell back past ${newest!.dir}`);
      expect(r.train.resumedFromSteps).toContain(previous!.step);
      expectSameWeights(r, reference, [w1, w2]);
    } finally {
      await w2.kill('SIGTERM');
    }
  });

  it('SIGKILL the worker during tokenization: the retry never sees a half-written output', async () => {
    const w1 = await readyWorker();
    const handle = await start('tok', 'ft-tok', { blockSize: 31 }); // a new fingerprint: prepare runs from scratch
    // The data layer tokenizes into a private `<fingerprint>.tmp-<host>-<pid>-<rand>` directory: kill while it exists.
    const dataRoot = join(root, 'data');
    const before = new Set(existsSync(dataRoot) ? readdirSync(dataRoot) : []);
    await until(() => existsSync(dataRoot) && readdirSync(dataRoot).some((d) => !before.has(d) && d.includes('.tmp-')), 60_000, 'tokenization to start writing');
    await w1.kill('SIGKILL');
    const w2 = await readyWorker();
    try {
      const r = await result('ft-tok');
      expect(r.train.steps).toBe(60);
      const events = (await handle.fetchHistory()).events ?? [];
      const prepare = events.find((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'prepareData')!;
      const started = events.find((e) => Number(e.activityTaskStartedEventAttributes?.scheduledEventId) === Number(prepare.eventId));
      expect(Number(started?.activityTaskStartedEventAttributes?.attempt)).toBeGreaterThan(1); // the kill interrupted attempt 1
      expect(readdirSync(dataRoot).filter((d) => !before.has(d) && !d.includes('.tmp-'))).toEqual([r.dataDir.split('/').pop()]);
      const manifest = readManifest(r.dataDir);
      await verifyShards(r.dataDir, manifest);
      expect(manifest.blockSize).toBe(31);
    } finally {
      await w2.kill('SIGTERM');
    }
  });

  it('SIGKILL the server mid-run and restart it on the same database: the run completes', async () => {
    const w = await readyWorker();
    try {
      await start('ref', 'ft-server');
      await until(async () => ((await checkpoints('ref', 'ft-server'))[0]?.step ?? -1) >= 10, 120_000, 'a checkpoint at step >= 10');
      await server.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 1000));
      await server.restart(); // same database, same port
      const r = await result('ft-server');
      expect(r.train.steps).toBe(60);
      expectSameTraining(r, reference);
      expectSameWeights(r, reference, [w]);
    } finally {
      await w.kill('SIGTERM');
    }
  });

  it('stop, two "checkpoint now", cancel then re-run, continue-as-new: the report\'s numbers are the uninterrupted run\'s', async () => {
    const w = await readyWorker();
    try {
      // stop: training ends at the step the segment reached; the numbers are the reference's up to that step.
      const stopped = await start('ref', 'ft-stop');
      await until(async () => ((await checkpoints('ref', 'ft-stop'))[0]?.step ?? -1) >= 20, 120_000, 'a checkpoint at step >= 20');
      await stopped.signal(stopSignal, { reason: 'test' });
      const rs = await result('ft-stop');
      expect(rs.train.stoppedEarly).toBe(true);
      expect(rs.train.steps).toBeGreaterThanOrEqual(20);
      expect(rs.train.tokens).toBe(rs.train.steps * 4 * 32);
      expectSameTraining(rs, reference);

      // two "checkpoint now": each cancels a running segment, which commits; training goes on to the end.
      const ck = await start('ref', 'ft-ckptnow');
      await until(async () => ((await checkpoints('ref', 'ft-ckptnow'))[0]?.step ?? -1) >= 10, 120_000, 'a checkpoint at step >= 10');
      await ck.signal(checkpointNowSignal);
      await until(async () => ((await checkpoints('ref', 'ft-ckptnow'))[0]?.step ?? -1) >= 30, 120_000, 'a checkpoint at step >= 30');
      await ck.signal(checkpointNowSignal);
      const rc = await result('ft-ckptnow');
      expectSameTraining(rc, reference);
      expectSameWeights(rc, reference, [w]);

      // cancel, then start the same id again: it resumes from the cancelled run's checkpoints.
      const cancelled = await start('ref', 'ft-cancel');
      await until(async () => ((await checkpoints('ref', 'ft-cancel'))[0]?.step ?? -1) >= 20, 120_000, 'a checkpoint at step >= 20');
      await cancelled.cancel();
      await expect(cancelled.result()).rejects.toThrow();
      histories.push({ workflowId: 'ft-cancel (cancelled)', history: await cancelled.fetchHistory() });
      await start('ref', 'ft-cancel');
      const rr = await result('ft-cancel');
      expect(rr.train.resumedFromSteps.length).toBeGreaterThan(0);
      expect(rr.train.resumes[0]!.cause).toMatch(/earlier run of this workflow id/);
      expectSameTraining(rr, reference);
      expectSameWeights(rr, reference, [w]);

      // continue-as-new after a segment (a small history limit): the carried summary is not what the report uses.
      const can = await start('ref', 'ft-can', { continueAsNewAfterEvents: 50 });
      const rn = await result('ft-can');
      expect((await client.workflow.getHandle('ft-can', can.firstExecutionRunId).describe()).status.name).toBe('CONTINUED_AS_NEW');
      expectSameTraining(rn, reference);
      expectSameWeights(rn, reference, [w]);
    } finally {
      await w.kill('SIGTERM');
    }
  });

  it('replays every history these runs produced', async () => {
    expect(histories.length).toBe(10);
    await replay(histories);
    writeFileSync(join(root, 'histories.json'), JSON.stringify(histories.map((h) => h.workflowId)));
  });
});
