// `finetune worker [--address host:port] [--queues finetune,finetune-gpu] [--gpu-queue NAME] [--rank-queue NAME]
// [--backend cpu|cuda]`: long-running workers. A GPU host runs `--queues finetune-gpu` (train/export/evaluate/generate,
// one at a time); a CPU host runs `--queues finetune` (the workflow, validate, prepare, bookkeeping). For training
// on several hosts, each GPU host also serves its own rank queue (`--rank-queue finetune-gpu-rank-<r>`, the names
// of temporal.rankTaskQueues). SIGINT/SIGTERM shut down gracefully: a running training segment checkpoints and its
// retry resumes elsewhere.
import { GPU_TASK_QUEUE, TASK_QUEUE } from '../workflows/messages.js';
import { parse } from './lib/args.js';
import { resolveTarget, TARGET_OPTIONS } from './lib/connection.js';
import { startWorkers } from './lib/temporal.js';

const USAGE = 'worker [--address host:port] [--namespace NS] [--profile P] [--queues finetune,finetune-gpu] [--gpu-queue finetune-gpu] [--rank-queue finetune-gpu-rank-0] [--backend cpu|cuda]';

export async function main(argv: string[]): Promise<number> {
  const { values } = parse(
    argv,
    {
      ...TARGET_OPTIONS, queues: { type: 'string' },
      'gpu-queue': { type: 'string' }, 'rank-queue': { type: 'string', multiple: true }, backend: { type: 'string' }, 'progress-interval-ms': { type: 'string' },
    },
    USAGE,
  );
  const backend = values.backend;
  if (backend !== undefined && backend !== 'cpu' && backend !== 'cuda') throw new Error(`--backend: expected cpu or cuda, got ${backend}`);
  const queues = (values.queues ?? `${TASK_QUEUE},${GPU_TASK_QUEUE}`).split(',').map((q) => q.trim()).filter(Boolean);
  const rankQueues = (values['rank-queue'] ?? []).flatMap((q) => q.split(',')).map((q) => q.trim()).filter(Boolean);
  const target = resolveTarget(values);
  const workers = await startWorkers({
    target, queues, gpuQueue: values['gpu-queue'] ?? GPU_TASK_QUEUE, rankQueues, backend,
    progressIntervalMs: values['progress-interval-ms'] ? Number(values['progress-interval-ms']) : undefined,
  });
  process.stderr.write(`[finetune] worker pid ${process.pid} polling ${[...queues, ...rankQueues].join(', ')} on ${target.address} (namespace ${target.namespace})\n`);
  const stop = () => void workers.shutdown();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  await workers.done;
  return 0;
}
