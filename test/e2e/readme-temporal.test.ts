// The README's Temporal commands, verbatim: every `temporal workflow …` and `temporal schedule …` line of its
// "readme-temporal" blocks runs through bash with Temporal's own CLI, against the suite's server (the embedded one
// here, Temporal's dev server in the .temporal twin) with our worker as a real process; the outcome of each is
// checked (report, checkpoint, cancellation, scheduled runs continuing the series). A README edit that breaks a
// command, or a command the test does not run, fails it.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { progressQuery, type FinetuneReport, type Progress } from '../../workflows/messages.js';
import { replay } from '../workflows/helpers.js';
import { startServer, suiteServer, TEMPORAL_CLI, type TestServer } from '../servers.js';
import { spawnFinetune, until, type Proc } from './procs.js';

/** The shell commands of the README block after `<!-- readme-temporal: NAME -->`, continuation lines joined. */
export function readmeCommands(name: string): string[] {
  const readme = readFileSync(join(__dirname, '../../README.md'), 'utf8');
  const at = readme.indexOf(`<!-- readme-temporal: ${name} -->`);
  if (at < 0) throw new Error(`README.md has no "readme-temporal: ${name}" block`);
  const block = /```sh\n([^]*?)```/.exec(readme.slice(at))![1]!;
  return block.replace(/\\\n\s*/g, '').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

const dir = mkdtempSync(join(tmpdir(), 'ft-readme-'));
let server: TestServer;
let client: Client;
let worker: Proc;
const run = readmeCommands('run');
const schedule = readmeCommands('schedule');
const ran = new Set<string>();

/** The one README command matching `re`, run with bash in the worker's directory; its stdout (exit 0 expected). */
async function sh(commands: string[], re: RegExp): Promise<string> {
  const matching = commands.filter((c) => re.test(c));
  expect(matching, `README commands matching ${re}`).toHaveLength(1);
  const cmd = matching[0]!;
  ran.add(cmd);
  const env = { ...process.env, TEMPORAL_ADDRESS: server.address, PATH: `${join(TEMPORAL_CLI!, '..')}:${process.env.PATH}` };
  const child = spawn('bash', ['-c', cmd], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '', err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  expect(code, `${cmd}\n${out}\n${err}`).toBe(0);
  return out;
}

const progress = (id: string) => client.workflow.getHandle(id).query(progressQuery).catch(() => null as Progress | null);

beforeAll(async () => {
  if (!TEMPORAL_CLI) return;
  server = await startServer(suiteServer(), { dbFile: join(dir, 'temporal.db') });
  client = new Client({ connection: await Connection.connect({ address: server.address }) });
  worker = spawnFinetune(['worker', '--address', server.address, '--progress-interval-ms', '200'], {}, { cwd: dir });
  await worker.waitFor(/polling/, 180_000);
});
afterAll(async () => {
  await worker?.kill('SIGTERM');
  await client?.connection.close();
  await server?.close();
});

describe.skipIf(!TEMPORAL_CLI)(`the README's temporal commands, verbatim (${suiteServer()} server)`, { timeout: 600_000 }, () => {
  it('start, query, checkpointNow, stop, result; then start again and cancel', async () => {
    await sh(run, /^temporal workflow start /);
    const handle = client.workflow.getHandle('finetune-moby');
    await until(async () => ((await progress('finetune-moby'))?.step ?? 0) > 2, 180_000, 'training to start');

    const query = await sh(run, /^temporal workflow query /);
    expect(query).toMatch(/"workflowId":\s*"finetune-moby"/);
    expect(query).toMatch(/"stage":\s*"train"/);

    const before = (await progress('finetune-moby'))!.lastCheckpoint?.step ?? 0;
    await sh(run, /--name checkpointNow/);
    await until(async () => ((await progress('finetune-moby'))?.lastCheckpoint?.step ?? 0) > before, 120_000, 'a checkpoint after checkpointNow');
    const signals = ((await handle.fetchHistory()).events ?? []).map((e) => e.workflowExecutionSignaledEventAttributes?.signalName).filter(Boolean);
    expect(signals).toContain('checkpointNow');

    await sh(run, /--name stop /);
    const shown = await sh(run, /^temporal workflow result /);
    const report = (await handle.result()) as FinetuneReport;
    expect(report.train.stoppedEarly).toBe(true);
    expect(report.train.steps).toBeLessThan(60);
    expect(report.notes.join('\n')).toContain('stop requested (enough)');
    expect(existsSync(join(report.modelDir!, 'model.safetensors'))).toBe(true);
    expect(report.runDir.startsWith(join(dir, 'runs', 'moby'))).toBe(true); // the worker's ./runs
    expect(report.samples.map((s) => s.prompt)).toEqual(['Call me Ishmael.']);
    expect(shown).toContain(report.modelDir!);
    expect(shown).toMatch(/COMPLETED/i);

    // The same start again (the id is free once the run closed), then cancel it while it trains.
    ran.delete(run.find((c) => /^temporal workflow start /.test(c))!);
    await sh(run, /^temporal workflow start /);
    const second = client.workflow.getHandle('finetune-moby');
    const firstRun = (await second.describe()).runId;
    await until(async () => (await progress('finetune-moby'))?.stage === 'train', 180_000, 'the second run to train');
    await sh(run, /^temporal workflow cancel /);
    await until(async () => (await second.describe()).status.name === 'CANCELLED', 120_000, 'the run to end cancelled');
    const events = (await second.fetchHistory()).events ?? [];
    expect(events.some((e) => e.workflowExecutionCancelRequestedEventAttributes)).toBe(true);
    await replay([{ workflowId: 'finetune-moby', history: await client.workflow.getHandle('finetune-moby', firstRun).fetchHistory() }]);
  });

  it('a schedule: create, trigger (each run continues the series), describe, pause, delete', async () => {
    await sh(schedule, /^temporal schedule create /);
    const recent = async () => (await client.schedule.getHandle('finetune-moby-nightly').describe()).info.recentActions.map((a) => a.action.workflow.workflowId);
    const trigger = schedule.find((c) => /^temporal schedule trigger /.test(c))!;
    await sh(schedule, /^temporal schedule trigger /);
    const [first] = await until(async () => ((await recent()).length === 1 ? recent() : null), 30_000, 'the first scheduled run');
    const r1 = (await client.workflow.getHandle(first!).result()) as FinetuneReport;
    expect(r1.baseModel).toBeNull();
    expect(r1.train.steps).toBe(20);
    ran.delete(trigger);
    await new Promise((r) => setTimeout(r, 1100)); // a trigger in the same second would reuse the first run's id
    await sh(schedule, /^temporal schedule trigger /);
    const second = await until(async () => (await recent())[1], 30_000, 'the second scheduled run');
    const r2 = (await client.workflow.getHandle(second).result()) as FinetuneReport;
    expect(r2.baseModel).toBe(r1.modelDir); // continues the series
    expect(r2.train.firstLoss!).toBeLessThan(r1.train.firstLoss!);

    expect(await sh(schedule, /^temporal schedule describe /)).toContain('finetune-moby-nightly');
    await sh(schedule, /^temporal schedule toggle .*--pause/);
    const d = await client.schedule.getHandle('finetune-moby-nightly').describe();
    expect(d.state.paused).toBe(true);
    expect(d.state.note).toBe('new data arrives next week');
    await sh(schedule, /^temporal schedule delete /);
    const left: string[] = [];
    for await (const s of client.schedule.list()) left.push(s.scheduleId);
    expect(left).not.toContain('finetune-moby-nightly');
  });

  it('ran every command of the README blocks', () => {
    expect([...run, ...schedule].filter((c) => !ran.has(c))).toEqual([]);
  });
});
