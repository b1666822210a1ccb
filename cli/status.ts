// `finetune status <workflow-id> [--json] [--address host:port] [--stop [--reason R] | --checkpoint-now]`: the
// `progress` query of a run, plus its status; with --stop or --checkpoint-now it first sends that signal.
import { checkpointNowSignal, progressQuery, stopSignal } from '../workflows/messages.js';
import { parse } from './lib/args.js';
import { trainLine } from './lib/progress.js';
import { connectClient, resolveTarget, TARGET_OPTIONS } from './lib/connection.js';

const USAGE = 'status <workflow-id> [--json] [--address host:port] [--namespace NS] [--profile P] [--stop [--reason R] | --checkpoint-now]';

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parse(
    argv,
    {
      json: { type: 'boolean' }, ...TARGET_OPTIONS,
      stop: { type: 'boolean' }, reason: { type: 'string' }, 'checkpoint-now': { type: 'boolean' },
    },
    USAGE,
  );
  if (positionals.length !== 1) throw new Error(`expected one workflow id\nusage: finetune ${USAGE}`);
  const client = await connectClient(resolveTarget(values));
  try {
    const handle = client.workflow.getHandle(positionals[0]!);
    if (values.stop) {
      await handle.signal(stopSignal, { reason: values.reason ?? 'finetune status --stop' });
      process.stderr.write(`[finetune] asked ${handle.workflowId} to stop: it checkpoints, then exports, evaluates and generates\n`);
    }
    if (values['checkpoint-now']) {
      await handle.signal(checkpointNowSignal);
      process.stderr.write(`[finetune] asked ${handle.workflowId} to commit a checkpoint now\n`);
    }
    const d = await handle.describe();
    // Queries are answered by a workflow worker; say so instead of waiting forever when none is running.
    const p = await Promise.race([
      handle.query(progressQuery),
      new Promise<never>((_, reject) =>
        setTimeout(() => reject(new Error(`no answer to the progress query within 15 s (status ${d.status.name}): is a worker polling '${d.taskQueue}' (finetune worker --queues ${d.taskQueue})?`)), 15_000).unref(),
      ),
    ]);
    if (values.json) {
      process.stdout.write(JSON.stringify({ status: d.status.name, runId: d.runId, config: d.memo?.config ?? null, ...p }) + '\n');
      return 0;
    }
    const memo = (d.memo?.config ?? {}) as Record<string, unknown>;
    const out = [
      `${p.workflowId}  ${d.status.name}  stage ${p.stage}`,
      ...(['model', 'parallelism', 'memory', 'training'] as const).filter((k) => typeof memo[k] === 'string').map((k) => `  ${k.padEnd(10)} ${String(memo[k])}`),
      `  train      ${trainLine(p)}`,
      `  stages     ${Object.entries(p.stages).map(([s, v]) => `${s}:${v.status}${v.ms !== undefined ? `(${(v.ms / 1000).toFixed(1)}s)` : ''}`).join(' ')}`,
      `  checkpoint ${p.lastCheckpoint ? `${p.lastCheckpoint.dir} (step ${p.lastCheckpoint.step})` : 'none yet'}`,
      ...(p.stopRequested ? ['  stop requested'] : []),
      ...p.notes.map((n) => `  note       ${n}`),
    ];
    process.stdout.write(out.join('\n') + '\n');
  } finally {
    await client.connection.close();
  }
  return 0;
}
