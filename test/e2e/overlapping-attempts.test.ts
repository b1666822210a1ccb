// Exact resume when two attempts of one training segment run at the same time, forced rather than left to load:
// two "GPU hosts" (workers with their own engine caches) on the embedded dev server, real activities, cpu engine.
// Attempt 1 of a segment stops heartbeating (a stalled or partitioned host: the server hears nothing and never
// gets to tell it that it was replaced) and waits until the server has retried the segment on the other host;
// then both attempts train the same steps concurrently, write the same checkpoint steps into the same directory,
// and prune it. Attempt 1 runs to its end (its result is refused by the server); the run must still end with
// weights byte-identical to an uninterrupted run. A second segment does the same, but the stale attempt resumes
// heartbeating once the retry has started, so the server's answer cancels it mid-segment and it commits a
// checkpoint at whatever step it had reached while the other attempt is still training.
// This is the interleaving a heavily loaded CI host produces by accident (heartbeats late by more than the
// heartbeat timeout while the attempt is alive); here it happens on every run.
import { cpSync, existsSync, mkdtempSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Context } from '@temporalio/activity';
import { MockActivityEnvironment } from '@temporalio/testing';
import { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createActivities, EngineCache, type TrainSegmentInput } from '../../activities/index.js';
import { checkpointDir } from '../../activities/checkpoints.js';
import { WORKFLOWS_PATH } from '../../cli/lib/temporal.js';
import { parseConfig } from '../../configs/index.js';
import { listCheckpoints, verifyCheckpoint } from '../../native/index.js';
import type { FinetuneReport } from '../../workflows/messages.js';
import { replay, startHarness, type Harness } from '../workflows/helpers.js';
import { diffSafetensors, trainAttempts } from './procs.js';

let h: Harness;
let root: string;
beforeAll(async () => {
  h = await startHarness();
  root = mkdtempSync(join(tmpdir(), 'ft-overlap-'));
  const docs = Array.from({ length: 60 }, (_, i) => JSON.stringify({ text: `Call me Ishmael ${i}. Some years ago, never mind how long precisely, I went to sea. `.repeat(3) }));
  writeFileSync(join(root, 'c.jsonl'), docs.join('\n'));
});
afterAll(async () => {
  await h?.close();
});

const config = (name: string) => ({
  name, storage: { root }, data: { train: { type: 'jsonl', path: join(root, 'c.jsonl') }, validationFraction: 0.1 },
  preprocess: { blockSize: 16 }, model: { nLayer: 1, nHead: 2, nEmbd: 16, nPositions: 16 },
  training: { backend: 'cpu', microBatchSize: 2, maxSteps: 18, segmentSteps: 6, logEverySteps: 1, warmupSteps: 1, learningRate: 1e-3 },
  checkpoint: { everySteps: 2, everyMinutes: 0, keepLast: 2 }, evaluation: { maxBatches: 2, batchSize: 2 },
  generation: { prompts: ['Call me'], maxNewTokens: 4, temperature: 0 }, temporal: { heartbeatTimeoutSeconds: 2 },
});

/** A promise with its resolve, for gating one attempt on another. */
function gate() {
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  return { opened, open };
}

/**
 * The segments whose attempt 1 goes stale: `silent` never heartbeats again (runs to its end unaware), `late`
 * heartbeats again once the retry started (and is cancelled by the server's answer).
 */
const STALE: Record<number, 'silent' | 'late'> = { 6: 'silent', 12: 'late' };

it('two attempts of a segment training at once (one stale) end with the weights of an uninterrupted run', { timeout: 240_000 }, async () => {
  const events: string[] = [];
  const retried: Record<number, ReturnType<typeof gate>> = { 6: gate(), 12: gate() };
  const staleDone: Promise<string>[] = [];
  function host(name: string) {
    const real = createActivities({ engines: new EngineCache() });
    return {
      ...real,
      trainSegment: async (input: TrainSegmentInput) => {
        const ctx = Context.current();
        const attempt = ctx.info.attempt;
        const tag = `${name} ${input.fromStep}→${input.toStep} attempt ${attempt}`;
        const mode = input.cfg.name === 'overlap' ? STALE[input.fromStep] : undefined; // the reference run is left alone
        events.push(`${tag} starts`);
        if (mode && attempt >= 2) retried[input.fromStep]!.open();
        if (mode && attempt === 1) {
          const mut = ctx as unknown as { heartbeat: (details?: unknown) => void }; // readonly in the types only
          const beat = mut.heartbeat;
          mut.heartbeat = () => {}; // stalled: the server hears nothing from this attempt and retries elsewhere
          let timer: NodeJS.Timeout | undefined;
          await Promise.race([retried[input.fromStep]!.opened, new Promise((_, no) => (timer = setTimeout(() => no(new Error(`${tag}: the server never retried the stalled attempt`)), 60_000)))])
            .finally(() => clearTimeout(timer));
          if (mode === 'late') mut.heartbeat = beat;
          const run = real.trainSegment(input).then((r) => `${tag} (stale) ended at step ${r.step}`, (e: Error) => `${tag} (stale) ended: ${e.message}`);
          staleDone.push(run);
          events.push(await run);
          return run; // refused by the server: the attempt was replaced
        }
        try {
          const r = await real.trainSegment(input);
          events.push(`${tag} ended at step ${r.step}, committed ${r.checkpoint.dir.split('/').pop()}`);
          return r;
        } catch (e) {
          events.push(`${tag} FAILED: ${(e as Error).message}${(e as Error).cause ? `: ${((e as Error).cause as Error).message}` : ''}`);
          throw e;
        }
      },
    };
  }
  const workflowActs = createActivities();
  // One connection per host: the SDK allows one worker per queue and connection, as one per process would be.
  const conns = await Promise.all(['host-a', 'host-b'].map(() => NativeConnection.connect({ address: h.server.address })));
  const ws = await Promise.all([
    Worker.create({ connection: h.connection, taskQueue: 'finetune', activities: workflowActs, workflowsPath: WORKFLOWS_PATH }),
    ...['host-a', 'host-b'].map((name, i) =>
      Worker.create({ connection: conns[i]!, identity: name, taskQueue: 'finetune-gpu', activities: host(name), maxConcurrentActivityTaskExecutions: 1, maxHeartbeatThrottleInterval: '200ms' })),
  ]);
  const running = Promise.all(ws.map((w) => w.run()));
  let reference: FinetuneReport, overlapped: FinetuneReport;
  let history: any;
  try {
    reference = (await h.client.workflow.execute('finetune', { taskQueue: 'finetune', workflowId: 'overlap-ref', args: [config('reference')] })) as FinetuneReport;
    const handle = await h.client.workflow.start('finetune', { taskQueue: 'finetune', workflowId: 'overlap-run', args: [config('overlap')] });
    overlapped = (await handle.result()) as FinetuneReport;
    history = await handle.fetchHistory();
    await Promise.all(staleDone); // the stale attempts have finished writing before we look at the disk
  } finally {
    for (const w of ws) if (w.getState() === 'RUNNING') w.shutdown();
    await running;
    for (const c of conns) await c.close();
  }
  const attempts = trainAttempts(history);
  const context = ['events:', ...events, 'train attempts:', ...attempts, 'notes:', ...overlapped.notes].join('\n');
  // The interleaving happened: each stale segment was retried, and its stale attempt ran after the retry began.
  for (const from of Object.keys(STALE).map(Number)) {
    const retry = events.findIndex((e) => e.includes(` ${from}→`) && / attempt [2-9]/.test(e) && e.endsWith('starts'));
    const stale = events.findIndex((e) => e.includes(` ${from}→`) && e.includes('(stale)'));
    expect(retry, context).toBeGreaterThanOrEqual(0);
    expect(stale, context).toBeGreaterThan(retry);
  }
  expect(overlapped.train.steps, context).toBe(18);
  // The concurrent commits of one step left no broken checkpoint and failed no attempt: the live attempts all
  // succeeded at once, nothing was quarantined, and every checkpoint left on disk verifies.
  expect(events.filter((e) => e.includes('FAILED')), context).toEqual([]);
  expect(overlapped.notes.filter((n) => /fell back past/.test(n)), context).toEqual([]);
  const runDir = dirname(overlapped.modelDir!);
  expect(existsSync(join(runDir, 'corrupt-checkpoints')), context).toBe(false);
  for (const c of await listCheckpoints(join(runDir, 'checkpoints'))) expect(await verifyCheckpoint(c.dir), c.dir).toEqual({ ok: true, step: c.step });
  const diff = diffSafetensors(join(overlapped.modelDir!, 'model.safetensors'), join(reference.modelDir!, 'model.safetensors'));
  expect(diff, `${diff}\n${context}`).toBeNull();
  expect(overlapped.eval, context).toEqual(reference.eval);
  // The stale attempts logged the same steps into the same metrics log: the report's numbers are still the
  // uninterrupted run's.
  const pick = (r: FinetuneReport) => ({ steps: r.train.steps, tokens: r.train.tokens, firstLoss: r.train.firstLoss, lastLoss: r.train.lastLoss });
  expect(pick(overlapped), context).toEqual(pick(reference));
  expect(overlapped.train.tokens).toBe(18 * 2 * 16);
  await replay([{ workflowId: 'overlap-run', history }]);
});

// A committed step that does not verify: a checkpoint of step 4 appears while this attempt trains toward step 4,
// with a DONE over a truncated state.bin (what the engine's old replace-then-DONE commit could leave when two
// attempts interleave; today: files damaged after their commit). The attempt reaching step 4 must not take that
// directory for its checkpoint.
it('a concurrent commit that broke the checkpoint of the step being saved is rewritten, not adopted', { timeout: 120_000 }, async () => {
  const cfg = parseConfig({ ...config('race'), training: { ...config('race').training, maxSteps: 4 }, checkpoint: { everySteps: 4, everyMinutes: 0, keepLast: 2 } });
  const run = <F extends (...a: any[]) => Promise<any>>(env: MockActivityEnvironment, fn: F, ...args: Parameters<F>) => env.run(fn, ...args) as ReturnType<F>;
  const data = await run(new MockActivityEnvironment(), createActivities().prepareData, cfg);
  const seg = (ckRoot: string): TrainSegmentInput => ({ cfg, runDir: dirname(ckRoot), checkpointRoot: ckRoot, dataDir: data.dataDir, fromStep: 0, toStep: 4, totalSteps: 4, resumeFrom: null });
  const clean = join(root, 'race-clean', 'checkpoints');
  await run(new MockActivityEnvironment(), createActivities().trainSegment, seg(clean));
  const raced = join(root, 'race-raced', 'checkpoints');
  const env = new MockActivityEnvironment({ attempt: 2 });
  let planted = false;
  env.on('heartbeat', (d: { step?: number }) => {
    if (planted || (d?.step ?? 0) < 2) return;
    planted = true; // the other attempt's broken commit of step 4 appears mid-segment
    cpSync(checkpointDir(clean, 4), checkpointDir(raced, 4), { recursive: true });
    const state = join(checkpointDir(raced, 4), 'state.bin');
    truncateSync(state, Math.floor(readFileSync(state).length / 3));
  });
  const r = await run(env, createActivities().trainSegment, seg(raced));
  expect(planted).toBe(true);
  expect(r.checkpoint).toEqual({ dir: checkpointDir(raced, 4), step: 4 });
  expect(await verifyCheckpoint(r.checkpoint.dir)).toEqual({ ok: true, step: 4 });
  expect(readFileSync(join(r.checkpoint.dir, 'state.bin')).equals(readFileSync(join(checkpointDir(clean, 4), 'state.bin')))).toBe(true);
  expect(existsSync(join(dirname(raced), 'corrupt-checkpoints'))).toBe(true); // the broken one was kept aside for inspection
});
