// Scheduled retraining through the CLI (`finetune schedule ...`) on the embedded dev server with in-process
// workers and the CPU engine: each scheduled run continues from the model the previous one exported, a trigger
// while a run is going is skipped (overlap SKIP), and pause/delete work.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { main as schedule } from '../../cli/schedule.js';
import { startWorkers, type WorkerSet } from '../../cli/lib/temporal.js';
import { resolveTarget } from '../../cli/lib/connection.js';
import type { FinetuneReport } from '../../workflows/messages.js';
import { replay, startHarness, type Harness } from '../workflows/helpers.js';
import { until } from './procs.js';

let h: Harness;
let workers: WorkerSet;
let root: string;
let cfgFile: string;

beforeAll(async () => {
  h = await startHarness();
  process.env.TEMPORAL_ADDRESS = h.server.address;
  workers = await startWorkers({ target: resolveTarget({ address: h.server.address }), logLevel: 'ERROR', progressIntervalMs: 500 });
  root = mkdtempSync(join(tmpdir(), 'ft-sched-'));
  const docs = Array.from({ length: 40 }, (_, i) => JSON.stringify({ text: `Call me Ishmael ${i}. Some years ago I went to sea and saw the whale. `.repeat(3) }));
  writeFileSync(join(root, 'c.jsonl'), docs.join('\n'));
  cfgFile = join(root, 'cfg.json');
  writeFileSync(cfgFile, JSON.stringify({
    name: 'nightly', storage: { root }, data: { train: { type: 'jsonl', path: 'c.jsonl' }, validationFraction: 0.1 },
    preprocess: { blockSize: 16 }, model: { nLayer: 1, nHead: 2, nEmbd: 16, nPositions: 16 },
    training: { backend: 'cpu', microBatchSize: 2, maxSteps: 4, segmentSteps: 2, learningRate: 1e-2, warmupSteps: 0 },
    checkpoint: { everySteps: 2, everyMinutes: 0 }, evaluation: { maxBatches: 2, batchSize: 2 },
    generation: { prompts: ['Call me'], maxNewTokens: 4 }, temporal: { heartbeatTimeoutSeconds: 10 },
  }));
});

afterAll(async () => {
  await workers?.shutdown();
  await h?.close();
  delete process.env.TEMPORAL_ADDRESS;
});

async function runs(): Promise<string[]> {
  const d = await h.client.schedule.getHandle('finetune-nightly').describe();
  return d.info.recentActions.map((a) => a.action.workflow.workflowId);
}

it('scheduled runs continue the series, skip overlaps, and can be paused and deleted', async () => {
  expect(await schedule(['create', cfgFile, '--every', '24h'])).toBe(0);
  expect(await schedule(['trigger', 'finetune-nightly'])).toBe(0);
  const [first] = await until(async () => ((await runs()).length === 1 ? runs() : null), 10_000, 'the first scheduled run');
  expect(await schedule(['trigger', 'finetune-nightly'])).toBe(0); // overlaps the running one: skipped
  const r1 = (await h.client.workflow.getHandle(first!).result()) as FinetuneReport;
  expect(await runs()).toHaveLength(1);
  expect(r1.baseModel).toBeNull();

  expect(await schedule(['trigger', 'finetune-nightly'])).toBe(0);
  const second = await until(async () => (await runs())[1], 10_000, 'the second scheduled run');
  const r2 = (await h.client.workflow.getHandle(second).result()) as FinetuneReport;
  expect(r2.baseModel).toBe(r1.modelDir);
  expect(r2.notes.join('\n')).toContain(`continuing the series from ${r1.modelDir}`);
  expect(r2.train.firstLoss!).toBeLessThan(r1.train.firstLoss!); // it starts from trained weights

  await replay(await Promise.all([first!, second].map(async (id) => ({ workflowId: id, history: await h.client.workflow.getHandle(id).fetchHistory() }))));

  expect(await schedule(['pause', 'finetune-nightly'])).toBe(0);
  expect((await h.client.schedule.getHandle('finetune-nightly').describe()).state.paused).toBe(true);
  expect(await schedule(['delete', 'finetune-nightly'])).toBe(0);
  const left = [];
  for await (const s of h.client.schedule.list()) left.push(s.scheduleId);
  expect(left).not.toContain('finetune-nightly');
}, 300_000);
