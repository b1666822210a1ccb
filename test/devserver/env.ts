// Shared setup for the dev-server suites: one server per test file (or the real cluster at TEMPORAL_ADDRESS),
// workflows bundled once, one long-running worker, and every started workflow tracked so its history can be
// replayed at the end of the file.
import { fileURLToPath } from 'node:url';
import { Client, Connection, type WorkflowHandle } from '@temporalio/client';
import { Worker, NativeConnection, bundleWorkflowCode, Runtime, DefaultLogger, type WorkflowBundle } from '@temporalio/worker';
import { startDevServer, type DevServer } from '../../devserver/index.js';
import * as activities from './activities.js';

export const workflowsPath = fileURLToPath(new URL('./workflows.ts', import.meta.url));
export const REAL_SERVER = process.env.TEMPORAL_ADDRESS;

let runtimeInstalled = false;
function quietRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  Runtime.install({ logger: new DefaultLogger('ERROR') });
}

export interface Env {
  address: string;
  namespace: string;
  server?: DevServer;
  connection: Connection;
  native: NativeConnection;
  client: Client;
  bundle: WorkflowBundle;
  taskQueue: string;
  worker: Worker;
  /** Starts a tracked workflow (its history is replayed by replayAll). */
  track<T extends WorkflowHandle>(h: T): T;
  replayAll(): Promise<{ workflowId: string; error?: unknown }[]>;
  newWorker(taskQueue: string, opts?: Partial<Parameters<typeof Worker.create>[0]>): Promise<Worker>;
  close(): Promise<void>;
}

export async function setupEnv(name: string): Promise<Env> {
  quietRuntime();
  const namespace = process.env.TEMPORAL_NAMESPACE ?? 'default';
  const server = REAL_SERVER ? undefined : await startDevServer({ port: 0 });
  const address = REAL_SERVER ?? server!.address;
  const [bundle, connection, native] = await Promise.all([
    bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('ERROR') }),
    Connection.connect({ address }),
    NativeConnection.connect({ address }),
  ]);
  const client = new Client({ connection, namespace });
  const taskQueue = `${name}-${process.pid}-${Date.now()}`;
  const newWorker = (tq: string, opts: Partial<Parameters<typeof Worker.create>[0]> = {}) =>
    Worker.create({ connection: native, namespace, taskQueue: tq, workflowBundle: bundle, activities, ...opts });
  const worker = await newWorker(taskQueue);
  const running = worker.run();
  const tracked: WorkflowHandle[] = [];
  return {
    address, namespace, server, connection, native, client, bundle, taskQueue, worker,
    track(h) {
      tracked.push(h);
      return h;
    },
    async replayAll() {
      const histories = await Promise.all(tracked.map(async (h) => ({ workflowId: h.workflowId, history: await h.fetchHistory() })));
      const results: { workflowId: string; error?: unknown }[] = [];
      for await (const r of Worker.runReplayHistories({ workflowBundle: bundle }, histories)) results.push({ workflowId: r.workflowId, error: r.error });
      return results;
    },
    newWorker,
    async close() {
      worker.shutdown();
      await running;
      await native.close();
      await connection.close();
      await server?.close();
    },
  };
}

/** Polls `fn` until it returns a truthy value (no fixed sleeps in tests). */
export async function eventually<T>(fn: () => Promise<T | undefined | null | false>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
