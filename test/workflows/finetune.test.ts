// The `finetune` workflow on the embedded dev server with activity mocks typed as the real activities (a
// signature change fails to compile): the recipe and its report, a bad config failing at once, "stop",
// "checkpoint now", cancellation, continue-as-new; every history is then replayed (determinism).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Context } from '@temporalio/activity';
import { CancelledFailure } from '@temporalio/common';
import { WorkflowFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities, type Activities, type PreparedData, type TrainSegmentInput } from '../../activities/index.js';
import { checkpointNowSignal, progressQuery, stopSignal, type FinetuneReport } from '../../workflows/messages.js';
import { writeFile } from 'node:fs/promises';
import { classify } from '../../activities/lib/failures.js';
import { startOrAttach } from '../../cli/run.js';
import { pendingAttempts } from '../../cli/status.js';
import { parseConfig } from '../../configs/index.js';
import { replay, runWorkers, startHarness, type Harness } from './helpers.js';
import { suiteServer } from '../servers.js';

const real = createActivities();
let h: Harness;
let root: string;
const histories: { workflowId: string; history: any }[] = [];

beforeAll(async () => {
  h = await startHarness();
  root = mkdtempSync(join(tmpdir(), 'ft-wf-'));
});
afterAll(async () => {
  await h?.close();
});

const prepared = (totalSteps: number): PreparedData => ({
  dataDir: '/data/x', fingerprint: 'f'.repeat(64), reused: false, blockSize: 32,
  train: { sequences: 100, tokens: 3200, shards: 1 }, validation: { sequences: 5, tokens: 160, shards: 1 },
  totalSteps, tokensPerStep: 128, stageMs: {},
});

/** Mocks with a call log; trainSegment "trains" instantly unless `block(input)` says to wait for cancellation. */
function mocks(totalSteps: number, block: (i: TrainSegmentInput, attempt: number) => number | null = () => null) {
  const calls: TrainSegmentInput[] = [];
  let latest = 0;
  const acts: Activities = {
    ...real,
    prepareData: async () => prepared(totalSteps),
    trainSegment: async (i) => {
      calls.push(i);
      const ctx = Context.current();
      const stopAt = block(i, ctx.info.attempt);
      if (stopAt !== null) {
        for (;;) {
          ctx.heartbeat({ step: stopAt });
          if (ctx.cancellationSignal.aborted) {
            latest = stopAt; // the real activity commits a checkpoint here
            throw new CancelledFailure(`stopped at ${stopAt}`);
          }
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      latest = i.toStep;
      return {
        step: i.toStep, checkpoint: { dir: `/ckpt/step-${i.toStep}`, step: i.toStep }, firstLoss: 10 - i.fromStep / 10,
        lastLoss: 10 - i.toStep / 10, tokens: (i.toStep - i.fromStep) * 128, tokensPerSec: 1000, resume: null,
      };
    },
    latestCheckpoint: async () => ({ checkpoint: latest ? { dir: `/ckpt/step-${latest}`, step: latest } : null, skipped: [] }),
    exportModel: async (a) => ({ modelDir: a.modelDir, step: a.checkpoint.step, reused: false }),
    evaluateModel: async () => ({ loss: 2.5, perplexity: Math.exp(2.5), accuracy: 0.3, tokens: 160, sequences: 5 }),
    generateSamples: async (a) => a.cfg.generation.prompts.map((prompt) => ({ prompt, text: ' and the sea' })),
  };
  return { acts, calls };
}

const config = (name: string, extra: Record<string, unknown> = {}) => ({
  name, storage: { root }, training: { maxSteps: 0, segmentSteps: 10 },
  temporal: { heartbeatTimeoutSeconds: 2 }, generation: { prompts: ['Call me'] }, ...extra,
});

async function until(pred: () => boolean, ms = 20_000): Promise<void> {
  const t = Date.now();
  while (!pred()) {
    if (Date.now() - t > ms) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function keep(workflowId: string) {
  histories.push({ workflowId, history: await h.client.workflow.getHandle(workflowId).fetchHistory() });
}

describe(`finetune workflow (${suiteServer()} server)`, () => {
  it('runs the recipe in segments and returns a small report', async () => {
    const { acts, calls } = mocks(35);
    const stop = await runWorkers(h, acts);
    try {
      const handle = await h.client.workflow.start('finetune', { taskQueue: 'finetune', workflowId: 'wf-happy', args: [config('happy')] });
      const report = (await handle.result()) as FinetuneReport;
      expect(calls.map((c) => [c.fromStep, c.toStep])).toEqual([[0, 10], [10, 20], [20, 30], [30, 35]]);
      expect(calls[1]!.resumeFrom).toEqual({ dir: '/ckpt/step-10', step: 10 });
      expect(report.train).toMatchObject({ steps: 35, totalSteps: 35, firstLoss: 10, lastLoss: 6.5, stoppedEarly: false, resumedFromSteps: [] });
      expect(report.eval?.loss).toBe(2.5);
      expect(report.samples).toEqual([{ prompt: 'Call me', text: ' and the sea' }]);
      expect(Object.keys(report.stageMs).sort()).toEqual(['evaluate', 'export', 'generate', 'prepare', 'train', 'validate']);
      expect(report.runDir.startsWith(join(root, 'happy', 'wf-happy-'))).toBe(true);
      const p = await handle.query(progressQuery);
      expect(p.stage).toBe('done');
      expect(p.step).toBe(35);
      const d = await handle.describe();
      expect(d.memo?.config).toMatchObject({ name: 'happy' });
      await keep('wf-happy');
    } finally {
      await stop();
    }
  });

  it('fails at once on a bad config, naming the field, without retrying', async () => {
    const { acts } = mocks(10);
    const stop = await runWorkers(h, acts);
    try {
      const handle = await h.client.workflow.start('finetune', {
        taskQueue: 'finetune', workflowId: 'wf-bad', args: [config('bad', { training: { learningRate: -1 } })],
      });
      const err = await handle.result().catch((e) => e);
      expect(err).toBeInstanceOf(WorkflowFailedError);
      const msg = `${err.cause?.message} ${err.cause?.cause?.message}`;
      expect(msg).toMatch(/training\.learningRate/);
      const events = (await handle.fetchHistory()).events ?? [];
      const attempts = events.filter((e) => e.activityTaskStartedEventAttributes).map((e) => e.activityTaskStartedEventAttributes!.attempt);
      expect(attempts).toEqual([1]);
      await keep('wf-bad');
    } finally {
      await stop();
    }
  });

  it('stops gracefully: the segment checkpoints, then export/evaluate/generate run on what exists', async () => {
    const { acts, calls } = mocks(50, (i) => (i.fromStep === 20 ? 25 : null));
    const stop = await runWorkers(h, acts);
    try {
      const handle = await h.client.workflow.start('finetune', { taskQueue: 'finetune', workflowId: 'wf-stop', args: [config('stop')] });
      await until(() => calls.some((c) => c.fromStep === 20));
      await handle.signal(stopSignal, { reason: 'test' });
      const report = (await handle.result()) as FinetuneReport;
      expect(report.train.steps).toBe(25);
      expect(report.train.stoppedEarly).toBe(true);
      expect(report.train.lastCheckpoint).toEqual({ dir: '/ckpt/step-25', step: 25 });
      expect(report.notes.join('\n')).toMatch(/stop requested \(test\)/);
      expect(report.samples.length).toBe(1);
      await keep('wf-stop');
    } finally {
      await stop();
    }
  });

  it('stop during prepare ends the run with a report of what was done, not NO_CHECKPOINT', async () => {
    const { acts, calls } = mocks(50);
    let preparing = false;
    const stop = await runWorkers(h, {
      ...acts,
      prepareData: async () => {
        const ctx = Context.current();
        preparing = true;
        for (;;) {
          ctx.heartbeat({ kind: 'prepare', stage: 'tokenize', bytes: 0, totalBytes: null, sequences: 0 });
          if (ctx.cancellationSignal.aborted) throw new CancelledFailure('prepare cancelled');
          await new Promise((r) => setTimeout(r, 50));
        }
      },
    });
    try {
      const handle = await h.client.workflow.start('finetune', { taskQueue: 'finetune', workflowId: 'wf-stop-prepare', args: [config('stop-prepare')] });
      await until(() => preparing);
      await handle.signal(stopSignal, { reason: 'enough' });
      const report = (await handle.result()) as FinetuneReport;
      expect(calls).toEqual([]);
      expect(report.modelDir).toBeNull();
      expect(report.eval).toBeNull();
      expect(report.samples).toEqual([]);
      expect(report.train).toMatchObject({ steps: 0, stoppedEarly: true, lastCheckpoint: null });
      expect(report.notes.join('\n')).toMatch(/stop requested during prepare \(enough\)/);
      expect(report.notes.join('\n')).toMatch(/stopped before the data was prepared: nothing was trained/);
      expect((await handle.describe()).status.name).toBe('COMPLETED');
      const p = await handle.query(progressQuery);
      expect([p.stages.prepare.status, p.stages.train.status, p.stages.export.status]).toEqual(['skipped', 'skipped', 'skipped']);
      await keep('wf-stop-prepare');
    } finally {
      await stop();
    }
  });

  it('a segment failing with a full disk is retried, and status shows its attempt, last failure and next retry', async () => {
    const { acts } = mocks(20);
    let failures = 0;
    const stop = await runWorkers(h, {
      ...acts,
      trainSegment: async (i: TrainSegmentInput) => {
        if (i.fromStep === 10 && failures < 3) {
          failures++;
          // A real ENOSPC (/dev/full), classified as the train activity does.
          const e = await writeFile('/dev/full', 'x'.repeat(1 << 16)).catch((x: Error) => x);
          throw classify(e, `train steps ${i.fromStep}→${i.toStep}`);
        }
        return acts.trainSegment(i);
      },
    });
    try {
      const handle = await h.client.workflow.start('finetune', { taskQueue: 'finetune', workflowId: 'wf-enospc', args: [config('enospc')] });
      let lines: string[] = [];
      const t = Date.now();
      while (!lines.some((l) => /next retry in/.test(l)) && Date.now() - t < 30_000) {
        const d = await handle.describe();
        lines = pendingAttempts(d.raw.pendingActivities ?? [], d.status.name).flatMap((a) => a.lines);
        await new Promise((r) => setTimeout(r, 50));
      }
      const text = lines.join('\n');
      expect(text).toMatch(/activity {3}trainSegment \(id \d+\): attempt [2-4] of 20/);
      expect(text).toMatch(/last failure train steps 10→20: ENOSPC: no space left on device.*free space under storage\.root/);
      expect(text).toMatch(/next retry in \d+ s/);
      const report = (await handle.result()) as FinetuneReport;
      expect(report.train.steps).toBe(20);
      expect(failures).toBe(3);
      await keep('wf-enospc');
    } finally {
      await stop();
    }
  });

  it('three concurrent starts of the same run attach to one execution', async () => {
    const cfg = parseConfig(config('race'));
    const logs: string[] = [];
    const handles = await Promise.all([0, 1, 2].map(() => startOrAttach(h.client, cfg, (s) => logs.push(s))));
    const runIds = await Promise.all(handles.map(async (x) => (await x.describe()).runId));
    expect(new Set(runIds).size).toBe(1);
    expect(handles.every((x) => x.workflowId === 'finetune-race')).toBe(true);
    expect(logs.filter((l) => /attaching to finetune-race/.test(l)).length).toBeGreaterThanOrEqual(2);
    await h.client.workflow.getHandle('finetune-race').terminate('test done');
  });

  it('"checkpoint now" commits mid-segment and training goes on from there', async () => {
    const { acts, calls } = mocks(40, (i, attempt) => (i.fromStep === 10 && attempt === 1 && !calls.some((c) => c.fromStep === 14) ? 14 : null));
    const stop = await runWorkers(h, acts);
    try {
      const handle = await h.client.workflow.start('finetune', { taskQueue: 'finetune', workflowId: 'wf-ckpt', args: [config('ckpt')] });
      await until(() => calls.some((c) => c.fromStep === 10));
      await handle.signal(checkpointNowSignal);
      const report = (await handle.result()) as FinetuneReport;
      expect(calls.map((c) => c.fromStep)).toEqual([0, 10, 14, 24, 34]);
      expect(report.train.steps).toBe(40);
      expect(report.train.stoppedEarly).toBe(false);
      await keep('wf-ckpt');
    } finally {
      await stop();
    }
  });

  it('cancellation waits for the segment to checkpoint, records it, and ends cancelled', async () => {
    const { acts, calls } = mocks(40, (i) => (i.fromStep === 10 ? 17 : null));
    const stop = await runWorkers(h, acts);
    try {
      const handle = await h.client.workflow.start('finetune', { taskQueue: 'finetune', workflowId: 'wf-cancel', args: [config('cancel')] });
      await until(() => calls.some((c) => c.fromStep === 10));
      await handle.cancel();
      const err = await handle.result().catch((e) => e);
      expect(err).toBeInstanceOf(WorkflowFailedError);
      expect((await handle.describe()).status.name).toBe('CANCELLED');
      const p = await handle.query(progressQuery).catch(() => null);
      if (p) expect(p.notes.join('\n')).toMatch(/cancelled at step 17/);
      await keep('wf-cancel');
    } finally {
      await stop();
    }
  });

  it('continues as new when the history grows, carrying only the last checkpoint and the summary', async () => {
    const { acts, calls } = mocks(60);
    const stop = await runWorkers(h, acts);
    try {
      const handle = await h.client.workflow.start('finetune', {
        taskQueue: 'finetune', workflowId: 'wf-can', args: [config('can', { training: { segmentSteps: 2 }, temporal: { heartbeatTimeoutSeconds: 2, continueAsNewAfterEvents: 60 } })],
      });
      const report = (await handle.result()) as FinetuneReport;
      expect(calls.length).toBe(30);
      expect(report.train.steps).toBe(60);
      expect(report.train.firstLoss).toBe(10);
      const first = await h.client.workflow.getHandle('wf-can', handle.firstExecutionRunId).describe();
      expect(first.status.name).toBe('CONTINUED_AS_NEW');
      await keep('wf-can');
    } finally {
      await stop();
    }
  });

  it('replays every history it produced (determinism)', async () => {
    expect(histories.length).toBeGreaterThanOrEqual(5);
    await replay(histories);
    if (process.env.UPDATE_HISTORIES) {
      // Refresh the committed reference history (test/workflows/replay.test.ts replays it on every CI run).
      const { historyToJSON } = await import('@temporalio/common/lib/proto-utils.js');
      const happy = histories.find((x) => x.workflowId === 'wf-happy')!;
      const { temporal } = await import('@temporalio/proto');
      const msg = temporal.api.history.v1.History.fromObject(happy.history);
      let json: string;
      try {
        json = historyToJSON(msg);
      } catch {
        // Two protobufjs copies can trip historyToJSON; the binary form replays just the same.
        json = JSON.stringify({ encoding: 'base64', history: Buffer.from(temporal.api.history.v1.History.encode(msg).finish()).toString('base64') });
      }
      writeFileSync(join(__dirname, '../histories/finetune-happy.json'), json);
    }
  });
});
