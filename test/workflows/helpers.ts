// Shared by the workflow and e2e suites: the suite's Temporal server (test/servers.ts: the embedded one, or
// Temporal's dev server in the *.temporal.test.ts twins), in-process workers with given activities, and replay of
// every history a test produced (determinism).
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import type { temporal } from '@temporalio/proto';
import { startServer, suiteServer, type TestServer } from '../servers.js';
import { WORKFLOWS_PATH } from '../../cli/lib/temporal.js';

let installed = false;
export function quietRuntime(): void {
  if (installed) return;
  installed = true;
  try {
    Runtime.install({ logger: new DefaultLogger('WARN') });
  } catch {
    /* installed by another suite in this process */
  }
}

export interface Harness {
  server: TestServer;
  client: Client;
  connection: NativeConnection;
  close(): Promise<void>;
}

export async function startHarness(dbFile?: string): Promise<Harness> {
  quietRuntime();
  const server = await startServer(suiteServer(), { dbFile, inProcess: true });
  const connection = await NativeConnection.connect({ address: server.address });
  const client = new Client({ connection: await Connection.connect({ address: server.address }) });
  return {
    server, client, connection,
    async close() {
      await client.connection.close();
      await connection.close();
      await server.close();
    },
  };
}

/** Workers on both queues with these activities; returns a stop function. */
export async function runWorkers(h: Harness, activities: object, queues = ['finetune', 'finetune-gpu']): Promise<() => Promise<void>> {
  const workers = await Promise.all(
    queues.map((taskQueue, i) =>
      Worker.create({
        connection: h.connection, taskQueue, activities,
        ...(i === 0 ? { workflowsPath: WORKFLOWS_PATH } : { maxConcurrentActivityTaskExecutions: 1 }),
      }),
    ),
  );
  const running = Promise.all(workers.map((w) => w.run()));
  return async () => {
    for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
    await running;
  };
}

/** Replay histories through the current workflow code; throws on any nondeterminism. */
export async function replay(histories: { workflowId: string; history: temporal.api.history.v1.IHistory }[]): Promise<void> {
  quietRuntime();
  const results = Worker.runReplayHistories({ workflowsPath: WORKFLOWS_PATH, replayName: 'finetune' }, histories);
  for await (const r of results) if (r.error) throw new Error(`replay of ${r.workflowId} failed: ${r.error.message}`);
}
