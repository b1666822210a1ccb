// `finetune run` as users run it (embedded dev server with its state in <storage.root>/<name>/temporal.db, workers
// in the same process): Ctrl-C mid-training stops the workers after the segment checkpoints; running the same
// command again attaches to the run and finishes it from that checkpoint; a third time prints the finished report.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { listCheckpoints } from '../../native/index.js';
import type { FinetuneReport } from '../../workflows/messages.js';
import { spawnFinetune, until } from './procs.js';

it('run, interrupt, run again: attaches and resumes; --json prints one report object', async () => {
  const root = mkdtempSync(join(tmpdir(), 'ft-cli-'));
  const docs = Array.from({ length: 60 }, (_, i) => JSON.stringify({ text: `Call me Ishmael ${i}. Some years ago I went to sea and saw the whale. `.repeat(3) }));
  writeFileSync(join(root, 'c.jsonl'), docs.join('\n'));
  const cfg = join(root, 'cfg.json');
  writeFileSync(cfg, JSON.stringify({
    name: 'cli', storage: { root: '.' }, data: { train: { type: 'jsonl', path: 'c.jsonl' } },
    preprocess: { blockSize: 32 }, model: { nLayer: 2, nHead: 2, nEmbd: 32, nPositions: 32 },
    training: { backend: 'cpu', microBatchSize: 4, maxSteps: 60, segmentSteps: 30, logEverySteps: 5 },
    checkpoint: { everySteps: 10, everyMinutes: 0 }, evaluation: { maxBatches: 2 },
    generation: { prompts: ['Call me'], maxNewTokens: 6 }, temporal: { heartbeatTimeoutSeconds: 5 },
  }));

  const first = spawnFinetune(['run', cfg, '--json']);
  const ckroot = async () => {
    const { readdirSync } = await import('node:fs');
    const run = readdirSync(join(root, 'cli')).find((d) => d.startsWith('finetune-cli-'));
    return run ? listCheckpoints(join(root, 'cli', run, 'checkpoints')) : [];
  };
  await until(async () => ((await ckroot().catch(() => []))[0]?.step ?? 0) >= 10, 180_000, 'a checkpoint at step >= 10');
  first.child.kill('SIGINT');
  const code = await new Promise<number | null>((r) => first.child.once('exit', (c) => r(c)));
  expect(code).toBe(130);
  expect(first.output()).toMatch(/run the same command to continue/);
  const committed = (await ckroot())[0]!.step;
  expect(committed).toBeLessThan(60);

  const second = spawnFinetune(['run', cfg, '--json']);
  const code2 = await new Promise<number | null>((r) => second.child.once('exit', (c) => r(c)));
  expect(code2, second.output().slice(-3000)).toBe(0);
  expect(second.output()).toMatch(/attaching to finetune-cli \(running/);
  const stdout2 = second.output().split('\n').filter((l) => l.startsWith('{"workflowId"'));
  expect(stdout2).toHaveLength(1);
  const report = JSON.parse(stdout2[0]!) as FinetuneReport;
  expect(report.train.steps).toBe(60);
  expect(report.train.resumedFromSteps[0]).toBe(committed);
  expect(report.eval!.loss).toBeLessThan(report.train.firstLoss!);

  const third = spawnFinetune(['run', cfg, '--json']);
  const code3 = await new Promise<number | null>((r) => third.child.once('exit', (c) => r(c)));
  expect(code3).toBe(0);
  expect(third.output()).toMatch(/attaching to finetune-cli \(completed/);
  expect(third.output()).toContain(stdout2[0]!);
}, 600_000);
