// Kill-and-restart: the dev server runs as a child process (`node bin/finetune.js devserver --db FILE`), is
// SIGKILLed while a workflow has a pending timer and a running activity, and is started again on the same
// database file; the workflow must finish. Skipped against a real cluster (TEMPORAL_ADDRESS).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { Worker, NativeConnection, bundleWorkflowCode, Runtime, DefaultLogger, type WorkflowBundle } from '@temporalio/worker';
import * as activities from './activities.js';
import { workflowsPath, REAL_SERVER, eventually } from './env.js';
import type * as wf from './workflows.js';

const bin = fileURLToPath(new URL('../../bin/finetune.js', import.meta.url));

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** Starts the CLI server and resolves once it printed its address. */
function startServer(port: number, db: string): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, 'devserver', '--port', String(port), '--db', db], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes(`127.0.0.1:${port}`)) resolve(child);
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.once('exit', (code) => reject(new Error(`devserver exited with ${code} before it was ready:\n${out}`)));
  });
}

describe.skipIf(!!REAL_SERVER)('dev server durability', () => {
  let dir: string;
  let bundle: WorkflowBundle;
  const children: ChildProcess[] = [];
  beforeAll(async () => {
    Runtime.install({ logger: new DefaultLogger('ERROR') });
    dir = mkdtempSync(join(tmpdir(), 'devserver-durability-'));
    bundle = await bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('ERROR') });
  });
  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('finishes a workflow after SIGKILL with a pending timer and a running activity', async () => {
    const port = await freePort();
    const db = join(dir, 'state.db');
    const address = `127.0.0.1:${port}`;
    children.push(await startServer(port, db));
    const connection = await Connection.connect({ address });
    const client = new Client({ connection });
    const native = await NativeConnection.connect({ address });
    const worker = await Worker.create({ connection: native, taskQueue: 'durable', workflowBundle: bundle, activities });
    const running = worker.run(); // keeps running while the server dies and comes back
    const h = await client.workflow.start<typeof wf.durable>('durable', { taskQueue: 'durable', workflowId: 'durable-1' });
    await eventually(async () => {
      const d = await h.describe();
      return d.raw.pendingActivities?.[0]?.state === 2 && (d.historyLength ?? 0) >= 6;
    }, 10_000, 'the activity to run and the timer to be started');
    children[0]!.kill('SIGKILL');
    await new Promise((r) => children[0]!.once('exit', r));
    children.push(await startServer(port, db));
    const result = await h.result();
    expect(result).toMatch(/^done after [12]$/);
    const history = await h.fetchHistory();
    const ET = (await import('../../devserver/proto.js')).temporal.api.enums.v1.EventType;
    const types = history.events!.map((e) => e.eventType);
    expect(types).toContain(ET.EVENT_TYPE_TIMER_FIRED);
    expect(types).toContain(ET.EVENT_TYPE_ACTIVITY_TASK_COMPLETED);
    await Worker.runReplayHistory({ workflowBundle: bundle }, history, h.workflowId);
    worker.shutdown();
    await running;
    await native.close();
    await connection.close();
    children[1]!.kill('SIGTERM');
    await new Promise((r) => children[1]!.once('exit', r));
  });
});
