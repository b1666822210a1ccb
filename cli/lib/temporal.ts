// Running the finetune workers in-process: shared by `run` and `worker`. Loads @temporalio/worker only where
// workers run. Where Temporal is and how to reach it: ./connection.ts.
import { resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GPU_TASK_QUEUE, TASK_QUEUE, trainProgressSignal } from '../../workflows/messages.js';
import { connectClient, explainConnectError, type TemporalTarget } from './connection.js';

const here = dirname(fileURLToPath(import.meta.url));
export const WORKFLOWS_PATH = resolve(here, '../../workflows/index.ts');

export interface WorkerSet {
  /** Resolves when every worker has stopped (after shutdown(), or rejects when one fails). */
  done: Promise<void>;
  /** Graceful: running activities are cancelled, checkpoint, and report; then the workers stop. */
  shutdown(): Promise<void>;
}

export interface WorkerOptions {
  target: TemporalTarget;
  /** Queues to poll; the GPU queue (gpuQueue) gets activities only and one training task at a time. */
  queues?: string[];
  gpuQueue?: string;
  /** Multi-worker training: this host's rank queue(s) (temporal.rankTaskQueues), served like the GPU queue. */
  rankQueues?: string[];
  backend?: 'cpu' | 'cuda';
  /** Log level of the SDK runtime; `run` keeps it at WARN so the progress bars stay readable. */
  logLevel?: 'TRACE' | 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
  progressIntervalMs?: number;
}

let runtimeInstalled = false;

/** Start workers for `queues` on one connection: workflows + all activities on the CPU queue, activities on the GPU one. */
export async function startWorkers(o: WorkerOptions): Promise<WorkerSet> {
  const { Worker, NativeConnection, Runtime, DefaultLogger } = await import('@temporalio/worker');
  const { createActivities } = await import('../../activities/index.js');
  if (!runtimeInstalled) {
    try {
      Runtime.install({ logger: new DefaultLogger(o.logLevel ?? 'INFO') });
    } catch {
      /* already installed by the embedding process (tests) */
    }
    runtimeInstalled = true;
  }
  const { namespace } = o.target;
  const rankQueues = o.rankQueues ?? [];
  const queues = [...(o.queues ?? [TASK_QUEUE, GPU_TASK_QUEUE]), ...rankQueues.filter((r) => !(o.queues ?? []).includes(r))];
  const gpuQueue = o.gpuQueue ?? GPU_TASK_QUEUE;
  const client = await connectClient(o.target); // checks address, TLS and namespace with clear errors first
  const connection = await NativeConnection.connect(o.target.connectionOptions).catch(async (e) => {
    await client.connection.close();
    throw explainConnectError(o.target, e);
  });
  const activities = createActivities({
    backend: o.backend,
    progressIntervalMs: o.progressIntervalMs,
    signalProgress: (workflowId, p) => client.workflow.getHandle(workflowId).signal(trainProgressSignal, p),
    lastFailure: async (workflowId, activityId) => {
      const d = await client.workflow.getHandle(workflowId).describe();
      const f = d.raw.pendingActivities?.find((a) => a.activityId === activityId)?.lastFailure;
      return f ? failureText(f) : null;
    },
  });
  const workers = await Promise.all(
    queues.map((taskQueue) =>
      taskQueue === gpuQueue || rankQueues.includes(taskQueue)
        ? Worker.create({
            connection, namespace, taskQueue, activities,
            // One training activity per GPU set; the live model stays in this process between segments.
            maxConcurrentActivityTaskExecutions: 1,
            // Cancellation ("stop", "checkpoint now") reaches an activity only in a heartbeat response: send them at
            // least every 2 s instead of 80% of the heartbeat timeout, so the segment reacts within seconds.
            maxHeartbeatThrottleInterval: '2s',
            shutdownGraceTime: '0s',
            shutdownForceTime: '2m',
          })
        : Worker.create({ connection, namespace, taskQueue, activities, workflowsPath: WORKFLOWS_PATH, shutdownForceTime: '2m', maxHeartbeatThrottleInterval: '2s' }),
    ),
  );
  const done = Promise.all(workers.map((w) => w.run())).then(async () => {
    await connection.close();
    await client.connection.close();
  });
  return {
    done,
    async shutdown() {
      for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
      await done.catch(() => undefined);
    },
  };
}

/** A Temporal Failure as one line: its message and its causes' (`a: b: c`), without repeats. */
export function failureText(f: { message?: string | null; cause?: unknown } | null | undefined): string {
  const parts: string[] = [];
  for (let c = f; c; c = c.cause as typeof f) if (c.message && !parts.some((p) => p.includes(c!.message!))) parts.push(c.message);
  return parts.join(': ');
}
