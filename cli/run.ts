// `finetune run <config.json> [--set k=v]... [--json] [--server auto|cluster|temporal|embedded]`: the whole
// pipeline as a durable workflow. The server: a configured Temporal (TEMPORAL_ADDRESS, a profile), else Temporal's
// dev server when its CLI is on PATH (with the Web UI), else the embedded one (./lib/server.ts); either dev server
// keeps its state in <storage.root>/<name>/. Runs both workers in this process; starts the workflow (or attaches
// to the run with the same workflow id); draws progress from the `progress` query; prints the report. Ctrl-C stops
// the workers gracefully (the training segment checkpoints) and leaves the run in the server: the same command
// continues it.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import { loadConfig, rankQueuesOf, runDetails, runSummary, usesRankPath, type FinetuneConfig } from '../configs/index.js';
import { progressQuery, type FinetuneReport } from '../workflows/messages.js';
import { parse } from './lib/args.js';
import { planLines } from './lib/estimate.js';
import { createProgressView, formatReport } from './lib/progress.js';
import { connectClient, resolveTarget, TARGET_OPTIONS, workflowUiUrl } from './lib/connection.js';
import { chooseServer, serverKindOf } from './lib/server.js';
import { startWorkers } from './lib/temporal.js';

const USAGE = 'run <config.json> [--set key=value]... [--json] [--server auto|cluster|temporal|embedded] [--address host:port] [--namespace NS] [--profile P]';

export function workflowIdOf(cfg: FinetuneConfig): string {
  return cfg.temporal.workflowId ?? `finetune-${cfg.name}`;
}

/** Start the workflow, or attach to the run of that id when it is running or has completed. */
export async function startOrAttach(client: import('@temporalio/client').Client, cfg: FinetuneConfig, log: (s: string) => void): Promise<WorkflowHandle> {
  const workflowId = workflowIdOf(cfg);
  try {
    const d = await client.workflow.getHandle(workflowId).describe();
    if (d.status.name === 'RUNNING' || d.status.name === 'COMPLETED') {
      log(`attaching to ${workflowId} (${d.status.name.toLowerCase()}, started ${d.startTime.toISOString()})`);
      if (d.status.name === 'COMPLETED')
        log(`it finished earlier: this is its report. To train again, give the run another id (--set temporal.workflowId=...) or name (--set name=...)`);
      return client.workflow.getHandle(workflowId);
    }
    log(`${workflowId} ended ${d.status.name.toLowerCase()}; starting it again (committed checkpoints of the same config are reused)`);
  } catch (e) {
    if (!(e instanceof WorkflowNotFoundError)) throw e;
  }
  try {
    return await client.workflow.start('finetune', {
      taskQueue: cfg.temporal.taskQueue,
      workflowId,
      args: [cfg],
      memo: { summary: runSummary(cfg) },
      // Shown by the Web UI (run header, User Metadata) and `temporal workflow describe` from the start.
      staticSummary: runSummary(cfg),
      staticDetails: runDetails(cfg),
    });
  } catch (e) {
    // Another start of the same run won the race between our describe and our start: attach to it.
    if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
    log(`attaching to ${workflowId} (started at the same moment by another client)`);
    return client.workflow.getHandle(workflowId);
  }
}

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { set: { type: 'string', multiple: true }, json: { type: 'boolean' }, server: { type: 'string' }, ...TARGET_OPTIONS }, USAGE);
  if (positionals.length !== 1) throw new Error(`expected one config file\nusage: finetune ${USAGE}`);
  const cfg = loadConfig(positionals[0]!, values.set ?? []);
  if (cfg.parallelism.nodes > 1)
    throw new Error(`parallelism.nodes is ${cfg.parallelism.nodes}: finetune run runs every worker in this process. Start one ` +
      `\`finetune worker --queues ${cfg.temporal.gpuTaskQueue} --rank-queue <queue>\` per GPU host (queues ${rankQueuesOf(cfg).join(', ')}) ` +
      `and the run with \`finetune start\` (workflows/README.md, "Multi-worker training")`);
  const json = values.json ?? false;
  const log = (s: string) => process.stderr.write(`[finetune] ${s}\n`);
  for (const line of await planLines(cfg)) log(line);

  const kind = values.server !== undefined ? serverKindOf(values.server, '--server') : serverKindOf(process.env.FINETUNE_SERVER, 'FINETUNE_SERVER');
  const seriesDir = join(cfg.storage.root, cfg.name);
  mkdirSync(seriesDir, { recursive: true });
  const server = await chooseServer({ kind, target: resolveTarget({ ...values, configNamespace: cfg.temporal.namespace }), seriesDir, log });
  log(server.description);
  const { target } = server;

  let workers: Awaited<ReturnType<typeof startWorkers>>;
  try {
    workers = await startWorkers({
      target, queues: [cfg.temporal.taskQueue, cfg.temporal.gpuTaskQueue],
      gpuQueue: cfg.temporal.gpuTaskQueue, logLevel: 'ERROR',
      // one worker through the rank path (temporal.rankTaskQueues with nodes 1): this process serves that queue too
      rankQueues: usesRankPath(cfg) ? rankQueuesOf(cfg) : [],
    });
  } catch (e) {
    await server.close();
    throw e;
  }
  const client = await connectClient(target);
  const calls = new AbortController();
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log('interrupted: stopping the workers (the training segment checkpoints first); run the same command to continue');
    void workers.shutdown();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const view = createProgressView(process.stderr);
  let code = 0;
  try {
    const handle = await startOrAttach(client, cfg, log);
    const ui = workflowUiUrl(server.uiUrl, target.namespace, handle.workflowId, (await handle.describe()).runId);
    log(`workflow ${handle.workflowId}${ui ? `: ${ui}` : ''}`);
    let finished = false;
    // A query needs a workflow worker to answer; never let one hang the loop (e.g. after Ctrl-C stopped ours).
    const query = () =>
      Promise.race([client.connection.withAbortSignal(calls.signal, () => handle.query(progressQuery)), new Promise<null>((r) => setTimeout(() => r(null), 5000).unref())]).catch(() => null);
    const poll = (async () => {
      while (!finished) {
        const p = await query(); // null: no workflow task has run yet, or the run is closing
        if (p) view.update(p);
        await new Promise((r) => setTimeout(r, 1000));
      }
    })();
    const workerDied = workers.done.then(() => {
      throw new Error(interrupted ? 'interrupted' : 'the workers stopped');
    });
    let report: FinetuneReport;
    try {
      report = (await Promise.race([client.connection.withAbortSignal(calls.signal, () => handle.result()), workerDied])) as FinetuneReport;
    } finally {
      finished = true;
      await poll;
      const last = interrupted ? null : await query();
      if (last) view.update(last);
      view.stop();
    }
    if (json) process.stdout.write(JSON.stringify(report) + '\n');
    else process.stdout.write(formatReport(report) + '\n');
  } catch (e) {
    if (e instanceof WorkflowFailedError) {
      const cause = e.cause as (Error & { cause?: Error }) | undefined;
      process.stderr.write(`finetune run: workflow failed: ${cause?.cause?.message ?? cause?.message ?? e.message}\n`);
      code = 1;
    } else if (interrupted) code = 130;
    else throw e;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await workers.shutdown();
    calls.abort(); // a long poll left behind (the result after Ctrl-C) must not retry on a closed connection
    await client.connection.close();
    await server.close();
    if (server.farewell) log(server.farewell);
  }
  return code;
}
