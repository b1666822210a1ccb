// `finetune run` as users run it (`--server embedded` here; in the .temporal twin the rule's own choice with
// Temporal's CLI on PATH: Temporal's dev server, detached, with its state in <storage.root>/<name>/), workers in
// the same process: Ctrl-C mid-training stops the workers after the segment checkpoints; the same command attaches
// to the run and goes on; a SIGKILL of `finetune run` loses nothing either (Temporal's dev server keeps running and
// is reused; the embedded one restarts on its file); the run finishes from the last checkpoint; once more prints
// the finished report.
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { listCheckpoints } from '../../native/index.js';
import type { FinetuneReport } from '../../workflows/messages.js';
import { suiteServer } from '../servers.js';
import { spawnFinetune, until } from './procs.js';

const server = suiteServer();
const root = mkdtempSync(join(tmpdir(), 'ft-cli-'));
const record = join(root, 'cli', 'temporal-dev-server.json');

afterAll(() => {
  // Temporal's dev server outlives `finetune run` by design (the Web UI stays up): stop it.
  if (existsSync(record)) {
    try {
      process.kill((JSON.parse(readFileSync(record, 'utf8')) as { pid: number }).pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
});

it(`run on the ${server} server: interrupt, SIGKILL, run again: attaches and resumes; --json prints one report object`, async () => {
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
  // On Temporal's server through the rule itself, as `npm start` does: no Temporal configured, its CLI on PATH.
  const run = () => spawnFinetune(['run', cfg, '--json', ...(server === 'embedded' ? ['--server', 'embedded'] : [])], { TEMPORAL_ADDRESS: '', TEMPORAL_PROFILE: '' });
  const exitOf = (p: ReturnType<typeof run>) => new Promise<number | null>((r) => (p.child.exitCode !== null ? r(p.child.exitCode) : p.child.once('exit', (c) => r(c))));
  const newest = async () => {
    const dir = readdirSync(join(root, 'cli')).find((d) => d.startsWith('finetune-cli-'));
    return dir ? ((await listCheckpoints(join(root, 'cli', dir, 'checkpoints')))[0]?.step ?? 0) : 0;
  };

  const first = run();
  await until(async () => (await newest().catch(() => 0)) >= 10, 180_000, 'a checkpoint at step >= 10');
  if (server === 'temporal') {
    expect(first.output()).toMatch(/Temporal's dev server started on 127\.0\.0\.1:\d+, pid \d+/);
    const ui = /workflow finetune-cli: (http:\/\/127\.0\.0\.1:\d+\/namespaces\/default\/workflows\/finetune-cli\/[\w-]+\/history)/.exec(first.output());
    expect(ui, first.output()).not.toBeNull();
    expect((await fetch(ui![1]!)).status).toBe(200); // the Web UI serves the run's page
  } else expect(first.output()).toMatch(/embedded Temporal dev server on 127\.0\.0\.1:\d+/);
  first.child.kill('SIGINT');
  expect(await exitOf(first), first.output().slice(-3000)).toBe(130);
  expect(first.output()).toMatch(/run the same command to continue/);
  const interrupted = await newest();
  expect(interrupted).toBeLessThan(60);

  const second = run();
  await second.waitFor(/attaching to finetune-cli \(running/, 180_000);
  if (server === 'temporal') expect(second.output()).toMatch(/Temporal's dev server already running on/);
  await until(async () => (await newest()) > interrupted, 180_000, `a checkpoint after step ${interrupted}`);
  await second.kill('SIGKILL'); // no graceful stop: the attempt's heartbeats stop, its retry resumes elsewhere
  const killedAt = await newest();

  const third = run();
  expect(await exitOf(third), third.output().slice(-3000)).toBe(0);
  expect(third.output()).toMatch(/attaching to finetune-cli \(running/);
  const stdout = third.output().split('\n').filter((l) => l.startsWith('{"workflowId"'));
  expect(stdout).toHaveLength(1);
  const report = JSON.parse(stdout[0]!) as FinetuneReport;
  expect(report.train.steps).toBe(60);
  // Both interruptions are in the report (its numbers come from the run's metrics log, whatever ended a segment).
  expect(report.train.resumedFromSteps[0]).toBe(interrupted);
  expect(report.train.resumedFromSteps.at(-1)).toBeGreaterThanOrEqual(killedAt);
  expect(report.train.tokens).toBe(60 * 4 * 32);
  expect(report.eval!.loss).toBeLessThan(report.train.firstLoss!);

  const fourth = run();
  expect(await exitOf(fourth)).toBe(0);
  expect(fourth.output()).toMatch(/attaching to finetune-cli \(completed/);
  expect(fourth.output()).toContain(stdout[0]!);
}, 900_000);
