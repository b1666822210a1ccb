// The multi-worker path with real processes (one segment of 80 steps, so the kill lands inside a running trainRank)
// on the CPU backend: a server (embedded; Temporal's dev server in the .temporal twin), a CPU worker, and a rank worker
// (`finetune worker --queues "" --rank-queue ...`). The rank worker is SIGKILLed mid-training: its trainRank misses
// heartbeats, the workflow restarts the group (a new rendezvous, answered by the replacement worker) from the last
// committed checkpoint, and the run completes. Then its history replays.
import { existsSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { parseConfig } from '../../configs/index.js';
import type { FinetuneReport } from '../../workflows/messages.js';
import { replay } from '../workflows/helpers.js';
import { startServer, suiteServer, type TestServer } from '../servers.js';
import { spawnFinetune, until, type Proc } from './procs.js';

const root = mkdtempSync(join(tmpdir(), 'ft-ranks-e2e-'));
const procs: Proc[] = [];
let client: Client;
let server: TestServer;

beforeAll(async () => {
  server = await startServer(suiteServer(), { dbFile: join(root, 'temporal.db') });
  client = new Client({ connection: await Connection.connect({ address: server.address }) });
});
afterAll(async () => {
  await client?.connection.close();
  for (const p of procs.reverse()) await p.kill('SIGKILL');
  await server?.close();
});

function worker(args: string[]): Proc {
  const p = spawnFinetune(['worker', '--address', server.address, '--progress-interval-ms', '200', ...args]);
  procs.push(p);
  return p;
}

async function committed(workflowId: string): Promise<number> {
  const series = join(root, 'ranks');
  const run = existsSync(series) ? readdirSync(series).find((d) => d.startsWith(`${workflowId}-`)) : undefined;
  if (!run) return 0;
  const { listCheckpoints } = await import('../../native/index.js');
  return (await listCheckpoints(join(series, run, 'checkpoints')))[0]?.step ?? 0;
}

it(`${suiteServer()} server: a SIGKILLed rank worker: the group restarts from the last checkpoint on its replacement and completes`, async () => {
  const cfg = parseConfig({
    name: 'ranks', storage: { root },
    data: { train: { type: 'builtin', name: 'moby-dick' }, validationFraction: 0.05 },
    preprocess: { mode: 'concat', blockSize: 32 },
    model: { nLayer: 2, nHead: 2, nEmbd: 32, nPositions: 32 },
    training: { backend: 'cpu', microBatchSize: 4, maxSteps: 80, segmentSteps: 80, learningRate: 1e-3, warmupSteps: 5, logEverySteps: 5 },
    checkpoint: { everySteps: 10, everyMinutes: 0, keepLast: 3 },
    evaluation: { maxBatches: 4, batchSize: 4 },
    generation: { prompts: ['The whale'], maxNewTokens: 8, temperature: 0 },
    // 6 s: a killed rank is still noticed within seconds, and a loaded host (heartbeats every 2 s at most, late by
    // seconds at load 15) does not time out a live rank, which would restart the group once more than this test expects.
    temporal: { heartbeatTimeoutSeconds: 6, rankTaskQueues: ['e2e-host-a'] },
  });
  const cpu = worker([]); // workflow, data, export/evaluate/generate
  const rank = worker(['--queues', '', '--rank-queue', 'e2e-host-a']);
  await Promise.all([cpu.waitFor(/polling/, 90_000), rank.waitFor(/polling e2e-host-a on/, 90_000)]);
  const handle = await client.workflow.start('finetune', { taskQueue: 'finetune', workflowId: 'ranks-kill', args: [cfg] });
  await until(async () => (await committed('ranks-kill')) >= 20, 120_000, 'a checkpoint at step 20');
  await rank.kill('SIGKILL');
  const replacement = worker(['--queues', '', '--rank-queue', 'e2e-host-a']);
  await replacement.waitFor(/polling/, 90_000);
  const report = (await handle.result()) as FinetuneReport;
  expect(report.train.steps).toBe(80);
  expect(report.train.resumedFromSteps.length).toBe(1);
  expect(report.train.resumedFromSteps[0]).toBeGreaterThanOrEqual(20);
  const notes = report.notes.join('\n');
  expect(notes).toMatch(/restart 1\/10 of all 1 rank from checkpoint step \d+: rank 0: .*(heartbeat|timeout)/i);
  expect(notes).toMatch(/group generation 2: 1 worker, rank 0 on .* \(pid \d+\)/);
  expect(report.eval?.loss).toBeGreaterThan(0);
  await replay([{ workflowId: 'ranks-kill', history: await handle.fetchHistory() }]);
});
