// Multi-worker training through Temporal on the embedded dev server (workflows/train.ts, class Ranks):
// - world size 1 through the rank path with the REAL activities and the cpu engine: rendezvous on the rank queue,
//   a rank that dies after committing a checkpoint, the group restarted from it, and a final model byte-identical
//   to an uninterrupted single-worker run;
// - two workers, each on its own queue with its own activities (which fail on purpose): one id per generation
//   from rank 0's worker, the failing rank cancels its peer, the group restarts from the workflow's checkpoint;
//   non-retryable failures and temporal.maxRestarts end the run; "stop" ends at the segment's end.
// Every history is replayed (determinism).
import { readFileSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Context } from '@temporalio/activity';
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { WorkflowFailedError } from '@temporalio/client';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities, type Activities, type PreparedData, type TrainRankInput } from '../../activities/index.js';
import { WORKFLOWS_PATH } from '../../cli/lib/temporal.js';
import { stopSignal, type FinetuneReport } from '../../workflows/messages.js';
import { replay, startHarness, type Harness } from './helpers.js';

let h: Harness;
let root: string;
const histories: { workflowId: string; history: any }[] = [];
const keep = async (workflowId: string) => histories.push({ workflowId, history: await h.client.workflow.getHandle(workflowId).fetchHistory() });

beforeAll(async () => {
  h = await startHarness();
  root = mkdtempSync(join(tmpdir(), 'ft-ranks-'));
});
afterAll(async () => {
  await h?.close();
});

/** The run's result, or after `ms` a failure that lists its pending activities and last events (no silent hang). */
async function resultOf(workflowId: string, ms = 60_000): Promise<FinetuneReport> {
  const handle = h.client.workflow.getHandle(workflowId);
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(async () => {
      const d = await handle.describe().catch(() => null);
      const events = ((await handle.fetchHistory().catch(() => null))?.events ?? []).slice(-12).map((e) => String(e.eventType));
      reject(new Error(`${workflowId} did not finish in ${ms} ms: pending ${JSON.stringify(d?.raw.pendingActivities?.map((a) => [a.activityType?.name, a.state, a.lastFailure?.message]))}; last events ${events.join(' ')}`));
    }, ms);
  });
  try {
    return (await Promise.race([handle.result(), timeout])) as FinetuneReport;
  } finally {
    clearTimeout(timer);
  }
}

/** Workers with their own activities per queue: the workflow queue, and one activity-only worker per rank queue. */
async function workers(workflowActs: object, perQueue: Record<string, object>): Promise<() => Promise<void>> {
  const ws = await Promise.all([
    Worker.create({ connection: h.connection, taskQueue: 'finetune', activities: workflowActs, workflowsPath: WORKFLOWS_PATH }),
    ...Object.entries(perQueue).map(([taskQueue, activities]) =>
      Worker.create({ connection: h.connection, taskQueue, activities, maxConcurrentActivityTaskExecutions: 1, maxHeartbeatThrottleInterval: '200ms' })),
  ]);
  const running = Promise.all(ws.map((w) => w.run()));
  return async () => {
    for (const w of ws) if (w.getState() === 'RUNNING') w.shutdown();
    await running;
  };
}

describe('world size 1 through the rank path, real activities and the cpu engine', () => {
  const docs = Array.from({ length: 40 }, (_, i) => JSON.stringify({ text: `Call me Ishmael ${i}. Some years ago, never mind how long precisely, I went to sea. `.repeat(3) }));
  const config = (name: string, extra: Record<string, unknown> = {}) => ({
    name, storage: { root }, data: { train: { type: 'jsonl', path: join(root, 'c.jsonl') }, validationFraction: 0.1 },
    preprocess: { blockSize: 16 }, model: { nLayer: 1, nHead: 2, nEmbd: 16, nPositions: 16 },
    training: { backend: 'cpu', microBatchSize: 2, maxSteps: 12, segmentSteps: 4, logEverySteps: 2, warmupSteps: 1, learningRate: 1e-3 },
    checkpoint: { everySteps: 2, everyMinutes: 0, keepLast: 3 }, evaluation: { maxBatches: 2, batchSize: 2 },
    generation: { prompts: ['Call me'], maxNewTokens: 4, temperature: 0 }, temporal: { heartbeatTimeoutSeconds: 5 }, ...extra,
  });

  it('restarts the group from the committed checkpoint and ends with the same weights as an uninterrupted run', async () => {
    writeFileSync(join(root, 'c.jsonl'), docs.join('\n'));
    const real = createActivities();
    const calls: TrainRankInput[] = [];
    const rankActs: Partial<Activities> = {
      rendezvous: real.rendezvous,
      // Dies on purpose once: trains 4 -> 6 for real (committing step 6), then the "GPU falls off the bus".
      trainRank: async (i) => {
        calls.push(i);
        if (i.group.generation === 1 && i.fromStep === 4) {
          await real.trainRank({ ...i, toStep: 6 });
          throw ApplicationFailure.retryable('injected: the GPU fell off the bus', 'DEVICE');
        }
        return real.trainRank(i);
      },
    };
    const stop = await workers(real, { 'finetune-gpu': real, 'host-a-rank': rankActs });
    let single: FinetuneReport, ranked: FinetuneReport;
    try {
      single = (await h.client.workflow.execute('finetune', { taskQueue: 'finetune', workflowId: 'ranks-single', args: [config('w1')] })) as FinetuneReport;
      const handle = await h.client.workflow.start('finetune', {
        taskQueue: 'finetune', workflowId: 'ranks-w1', args: [config('w1', { temporal: { heartbeatTimeoutSeconds: 5, rankTaskQueues: ['host-a-rank'] } })],
      });
      ranked = (await handle.result()) as FinetuneReport;
      await keep('ranks-w1');
    } finally {
      await stop();
    }
    expect(calls.map((c) => [c.group.generation, c.fromStep, c.toStep, c.resumeFrom?.step ?? null, c.rank, c.nodes])).toEqual([
      [1, 0, 4, null, 0, 1], [1, 4, 8, 4, 0, 1], [2, 6, 10, 6, 0, 1], [2, 10, 12, 10, 0, 1],
    ]);
    expect(calls.every((c) => c.group.ncclId === null)).toBe(true); // one worker: its engine needs no NCCL id
    expect(ranked.train).toMatchObject({ steps: 12, totalSteps: 12, resumedFromSteps: [6], stoppedEarly: false });
    expect(ranked.notes.join('\n')).toMatch(/restart 1\/10 of all 1 rank from checkpoint step 6: rank 0: .*injected: the GPU fell off the bus/);
    expect(ranked.notes.join('\n')).toMatch(/group generation 2: 1 worker, rank 0 on /);
    expect(ranked.train.lastCheckpoint?.step).toBe(12);
    // resume is exact: the restarted rank path trains to the same weights as the single-worker path
    const weights = (r: FinetuneReport) => readFileSync(join(r.modelDir!, 'model.safetensors'));
    expect(weights(ranked).equals(weights(single))).toBe(true);
    expect(ranked.train.lastLoss).toBe(single.train.lastLoss);
    expect(ranked.eval?.loss).toBe(single.eval?.loss);
  });
});

describe('two workers, each on its own queue', () => {
  const prepared = (totalSteps: number): PreparedData => ({
    dataDir: '/data/x', fingerprint: 'f'.repeat(64), reused: false, blockSize: 32,
    train: { sequences: 100, tokens: 3200, shards: 1 }, validation: { sequences: 5, tokens: 160, shards: 1 },
    totalSteps, tokensPerStep: 128, stageMs: {},
  });
  const config = (name: string, extra: Record<string, unknown> = {}) => ({
    name, storage: { root }, training: { maxSteps: 0, segmentSteps: 10, gradAccumSteps: 8 }, parallelism: { nodes: 2, devices: 4, zeroStage: 3 },
    temporal: { heartbeatTimeoutSeconds: 3, rankTaskQueues: ['host-0', 'host-1'] }, generation: { prompts: ['Call me'] }, ...extra,
  });

  interface Log { rendezvous: { host: string; generation: number }[]; ranks: (TrainRankInput & { host: string; outcome?: string })[]; committed: number }

  /** The workflow queue's activities (bookkeeping on the "shared storage" of `log`) and each host's rank activities. */
  function cluster(totalSteps: number, fail: (i: TrainRankInput) => 'retryable' | 'fatal' | null, temporal?: Record<string, unknown>) {
    const real = createActivities();
    const log: Log = { rendezvous: [], ranks: [], committed: 0 };
    const shared: Partial<Activities> = {
      ...real,
      prepareData: async () => prepared(totalSteps),
      latestCheckpoint: async () => ({ checkpoint: log.committed ? { dir: `/ckpt/step-${log.committed}`, step: log.committed } : null, skipped: [] }),
      exportModel: async (a) => ({ modelDir: a.modelDir, step: a.checkpoint.step, reused: false }),
      evaluateModel: async () => ({ loss: 2.5, perplexity: Math.exp(2.5), accuracy: 0.3, tokens: 160, sequences: 5 }),
      generateSamples: async (a) => a.cfg.generation.prompts.map((prompt) => ({ prompt, text: ' and the sea' })),
    };
    const host = (name: string): Partial<Activities> => ({
      rendezvous: async (i) => {
        log.rendezvous.push({ host: name, generation: i.generation });
        return { ncclId: Buffer.alloc(128, i.generation).toString('hex'), host: name, pid: 1000 + i.generation, generation: i.generation };
      },
      trainRank: async (i) => {
        const entry: Log['ranks'][number] = { ...i, host: name };
        log.ranks.push(entry);
        const ctx = Context.current();
        const how = fail(i);
        if (how === 'fatal') throw ApplicationFailure.create({ message: 'CUDA out of memory', type: 'OUT_OF_MEMORY', nonRetryable: true });
        if (how === 'retryable') {
          await new Promise((r) => setTimeout(r, 300)); // its peer is inside the segment by now
          entry.outcome = 'failed';
          throw ApplicationFailure.retryable('NCCL error: remote process exited', 'DEVICE');
        }
        if (i.rank === 0 && fail({ ...i, rank: 1 }) === 'retryable') {
          // rank 0 waits in a "collective" for its failing peer until the workflow cancels it
          for (;;) {
            ctx.heartbeat({ step: i.fromStep });
            if (ctx.cancellationSignal.aborted) {
              entry.outcome = 'cancelled';
              throw new CancelledFailure('cancelled while waiting for rank 1');
            }
            await new Promise((r) => setTimeout(r, 50));
          }
        }
        if (i.rank === 0) log.committed = i.toStep; // the collective save commits once every rank wrote its shard
        entry.outcome = 'ok';
        return { step: i.toStep, checkpoint: { dir: `/ckpt/step-${i.toStep}`, step: i.toStep }, firstLoss: 10 - i.fromStep / 10,
          lastLoss: 10 - i.toStep / 10, tokens: (i.toStep - i.fromStep) * 128, tokensPerSec: 1000, resume: null };
      },
    });
    return { log, shared, hosts: { 'host-0': host('host-0'), 'host-1': host('host-1') }, temporal };
  }

  it('hands rank 0\'s id to every rank, and restarts all ranks from the last checkpoint when one fails', async () => {
    const c = cluster(30, (i) => (i.group.generation === 1 && i.rank === 1 && i.fromStep === 10 ? 'retryable' : null));
    const stop = await workers(c.shared, { ...c.hosts, 'finetune-gpu': c.shared });
    try {
      const handle = await h.client.workflow.start('finetune', { taskQueue: 'finetune', workflowId: 'ranks-two', args: [config('two')] });
      const report = await resultOf('ranks-two');
      await keep('ranks-two');
      // the Web UI / `finetune status` memo names the layout (and, where the addon loads, the memory estimate)
      expect((await handle.describe()).memo?.config).toMatchObject({ parallelism: 'ZeRO-3, no offload, 2 workers x 4 GPUs = 8 ranks', memory: expect.stringMatching(/GiB per GPU/) });
      // one rendezvous per generation, always on rank 0's worker
      expect(c.log.rendezvous).toEqual([{ host: 'host-0', generation: 1 }, { host: 'host-0', generation: 2 }]);
      const seen = c.log.ranks.map((r) => [r.host, r.rank, r.nodes, r.group.generation, r.fromStep, r.toStep, r.resumeFrom?.step ?? null, r.outcome]);
      expect(seen).toEqual(expect.arrayContaining([
        ['host-0', 0, 2, 1, 0, 10, null, 'ok'], ['host-1', 1, 2, 1, 0, 10, null, 'ok'],
        ['host-0', 0, 2, 1, 10, 20, 10, 'cancelled'], ['host-1', 1, 2, 1, 10, 20, 10, 'failed'],
        ['host-0', 0, 2, 2, 10, 20, 10, 'ok'], ['host-1', 1, 2, 2, 10, 20, 10, 'ok'],
        ['host-0', 0, 2, 2, 20, 30, 20, 'ok'], ['host-1', 1, 2, 2, 20, 30, 20, 'ok'],
      ]));
      expect(seen.length).toBe(8);
      // both ranks of a generation share its id; the restart got a new one
      for (const g of [1, 2]) expect(new Set(c.log.ranks.filter((r) => r.group.generation === g).map((r) => r.group.ncclId)).size).toBe(1);
      expect(c.log.ranks.find((r) => r.group.generation === 1)!.group.ncclId).not.toBe(c.log.ranks.find((r) => r.group.generation === 2)!.group.ncclId);
      expect(report.train).toMatchObject({ steps: 30, resumedFromSteps: [10], stoppedEarly: false, firstLoss: 10, lastLoss: 7 });
      expect(report.notes.join('\n')).toMatch(/restart 1\/10 of all 2 ranks from checkpoint step 10: rank 1: .*NCCL error: remote process exited/);
    } finally {
      await stop();
    }
  });

  it('ends the run on a failure no restart can fix, naming the rank and keeping its type', async () => {
    const c = cluster(30, (i) => (i.rank === 1 && i.fromStep === 10 ? 'fatal' : null));
    const stop = await workers(c.shared, { ...c.hosts, 'finetune-gpu': c.shared });
    try {
      const handle = await h.client.workflow.start('finetune', { taskQueue: 'finetune', workflowId: 'ranks-oom', args: [config('oom')] });
      const err = await handle.result().catch((e) => e);
      await keep('ranks-oom');
      expect(err).toBeInstanceOf(WorkflowFailedError);
      expect(err.cause).toMatchObject({ type: 'OUT_OF_MEMORY', nonRetryable: true });
      expect(err.cause.message).toMatch(/^rank 1: .*CUDA out of memory/);
      expect(c.log.rendezvous.length).toBe(1);
    } finally {
      await stop();
    }
  });

  it('gives up after temporal.maxRestarts restarts', async () => {
    const c = cluster(30, (i) => (i.rank === 1 ? 'retryable' : null));
    const stop = await workers(c.shared, { ...c.hosts, 'finetune-gpu': c.shared });
    try {
      const handle = await h.client.workflow.start('finetune', {
        taskQueue: 'finetune', workflowId: 'ranks-give-up',
        args: [config('giveup', { temporal: { heartbeatTimeoutSeconds: 3, rankTaskQueues: ['host-0', 'host-1'], maxRestarts: 1 } })],
      });
      const err = await handle.result().catch((e) => e);
      await keep('ranks-give-up');
      expect(err.cause).toMatchObject({ type: 'RANKS_FAILED' });
      expect(err.cause.message).toMatch(/failed 2 times in a row \(temporal\.maxRestarts 1\); last: rank 1: .*remote process exited/);
      expect(c.log.rendezvous.map((r) => r.generation)).toEqual([1, 2]);
    } finally {
      await stop();
    }
  });

  it('a rank whose worker is not there times out (temporal.rankStartTimeoutSeconds) and fails the group', async () => {
    const c = cluster(30, () => null);
    const stop = await workers(c.shared, { 'host-0': c.hosts['host-0'], 'finetune-gpu': c.shared });
    try {
      const handle = await h.client.workflow.start('finetune', {
        taskQueue: 'finetune', workflowId: 'ranks-missing',
        args: [config('missing', { temporal: { heartbeatTimeoutSeconds: 3, rankTaskQueues: ['host-0', 'host-gone'], maxRestarts: 1, rankStartTimeoutSeconds: 1 } })],
      });
      const err = await handle.result().catch((e) => e);
      await keep('ranks-missing');
      expect(err.cause).toMatchObject({ type: 'RANKS_FAILED' });
      expect(err.cause.message).toMatch(/failed 2 times in a row .*last: rank 1: .*schedule.?to.?start/i);
      expect(c.log.rendezvous.map((r) => r.host)).toEqual(['host-0', 'host-0']);
    } finally {
      await stop();
    }
  });

  it('"stop" ends training at the end of the running segment', async () => {
    const c = cluster(50, () => null);
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const slow = { ...c.hosts['host-0'], trainRank: async (i: TrainRankInput) => { if (i.fromStep === 10) await gate; return c.hosts['host-0'].trainRank!(i); } };
    const stop = await workers(c.shared, { ...c.hosts, 'host-0': slow, 'finetune-gpu': c.shared });
    try {
      const handle = await h.client.workflow.start('finetune', { taskQueue: 'finetune', workflowId: 'ranks-stop', args: [config('stop')] });
      for (let t = Date.now(); !c.log.ranks.some((r) => r.fromStep === 10); ) {
        if (Date.now() - t > 20_000) throw new Error('segment 10 never started');
        await new Promise((r) => setTimeout(r, 25));
      }
      await handle.signal(stopSignal, { reason: 'test' });
      release();
      const report = await resultOf('ranks-stop');
      await keep('ranks-stop');
      expect(report.train).toMatchObject({ steps: 20, stoppedEarly: true });
      expect(report.train.lastCheckpoint).toEqual({ dir: '/ckpt/step-20', step: 20 });
    } finally {
      await stop();
    }
  });

  it('replays every history it produced (determinism)', async () => {
    expect(histories.length).toBeGreaterThanOrEqual(5);
    await replay(histories);
    if (process.env.UPDATE_HISTORIES) {
      const { temporal } = await import('@temporalio/proto');
      const two = histories.find((x) => x.workflowId === 'ranks-two')!;
      const msg = temporal.api.history.v1.History.fromObject(two.history);
      writeFileSync(join(__dirname, '../histories/finetune-ranks-restart.json'),
        JSON.stringify({ encoding: 'base64', history: Buffer.from(temporal.api.history.v1.History.encode(msg).finish()).toString('base64') }));
    }
  });
});

