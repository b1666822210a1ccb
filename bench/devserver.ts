// Dev-server throughput with the real SDK: N `basic` workflows (activity + timer; 3 workflow tasks, 16 events
// each) started at once and run to completion by one in-process worker, on an in-memory database and on a file
// (WAL, one transaction per state change). Prints both rates and the durability cost (file / memory).
// No Temporal server is reachable from this machine, so the peer is the same server without a disk.
//   npx tsx bench/devserver.ts [N=300]
import { fileURLToPath } from 'node:url';
import { rmSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker, NativeConnection, bundleWorkflowCode, Runtime, DefaultLogger } from '@temporalio/worker';
import { Client, Connection } from '@temporalio/client';
import { startDevServer } from '../devserver/index.js';
import * as activities from './devserver/activities.js';

const N = Number(process.argv[2] ?? 300);
Runtime.install({ logger: new DefaultLogger('ERROR') });
const workflowBundle = await bundleWorkflowCode({
  workflowsPath: fileURLToPath(new URL('./devserver/workflows.ts', import.meta.url)),
  logger: new DefaultLogger('ERROR'),
});

async function run(dbFile: string): Promise<number> {
  const server = await startDevServer({ port: 0, dbFile });
  const native = await NativeConnection.connect({ address: server.address });
  const connection = await Connection.connect({ address: server.address });
  const client = new Client({ connection });
  const worker = await Worker.create({ connection: native, taskQueue: 'bench', workflowBundle, activities });
  const seconds = await worker.runUntil(async () => {
    const t0 = performance.now();
    const handles = await Promise.all(Array.from({ length: N }, (_, i) => client.workflow.start('basic', { taskQueue: 'bench', workflowId: `b${i}`, args: [String(i)] })));
    await Promise.all(handles.map((h) => h.result()));
    return (performance.now() - t0) / 1000;
  });
  await native.close();
  await connection.close();
  await server.close();
  return N / seconds;
}

const dir = mkdtempSync(join(tmpdir(), 'devserver-bench-'));
await run(':memory:'); // warm-up: JIT, tsx transforms
const memory = await run(':memory:');
const file = await run(join(dir, 'state.db'));
rmSync(dir, { recursive: true, force: true });
console.log(`workflows/s  memory ${memory.toFixed(1)}  file ${file.toFixed(1)}  ratio file/memory ${(file / memory).toFixed(2)}  (N=${N})`);
