// `finetune status <workflow-id> [--json] [--address host:port] [--stop [--reason R] | --checkpoint-now]`: the
// `progress` query of a run, plus its status; with --stop or --checkpoint-now it first sends that signal.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { temporal } from '@temporalio/proto';
import { LOSS_CURVE_FILE, METRICS_FILE } from '../activities/lib/metrics.js';
import { checkpointNowSignal, progressQuery, stopSignal, type Progress } from '../workflows/messages.js';
import { parse } from './lib/args.js';
import { trainLine } from './lib/progress.js';
import { connectClient, resolveTarget, TARGET_OPTIONS } from './lib/connection.js';
import { failureText } from './lib/temporal.js';

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
    const attempts = pendingAttempts(d.raw.pendingActivities ?? [], d.status.name);
    // Queries are answered by a workflow worker; say so instead of waiting forever when none is running. What the
    // server itself knows (status, pending attempts and their last failure) is shown either way.
    let p: Progress | null = null;
    let noAnswer: string | null = null;
    try {
      p = await Promise.race([
        handle.query(progressQuery),
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error(`no answer to the progress query within 15 s (status ${d.status.name}): is a worker polling '${d.taskQueue}' (finetune worker --queues ${d.taskQueue})?`)), 15_000).unref(),
        ),
      ]);
    } catch (e) {
      noAnswer = (e as Error).message;
    }
    if (values.json) {
      process.stdout.write(JSON.stringify({ status: d.status.name, runId: d.runId, config: d.memo?.config ?? null, attempts, ...(p ?? { progressError: noAnswer }) }) + '\n');
      return noAnswer ? 1 : 0;
    }
    const memo = (d.memo?.config ?? {}) as Record<string, unknown>;
    const out = [
      `${d.workflowId}  ${d.status.name}${p ? `  stage ${p.stage}` : ''}`,
      ...(['model', 'parallelism', 'memory', 'training'] as const).filter((k) => typeof memo[k] === 'string').map((k) => `  ${k.padEnd(10)} ${String(memo[k])}`),
      ...(p
        ? [
            `  train      ${trainLine(p)}${attempts.some((a) => a.retrying) ? ' (retrying: see below)' : ''}`,
            `  stages     ${Object.entries(p.stages).map(([s, v]) => `${s}:${v.status}${v.ms !== undefined ? `(${(v.ms / 1000).toFixed(1)}s)` : ''}`).join(' ')}`,
            `  checkpoint ${p.lastCheckpoint ? `${p.lastCheckpoint.dir} (step ${p.lastCheckpoint.step})` : 'none yet'}`,
          ]
        : [`  progress   ${noAnswer}`]),
      ...attempts.flatMap((a) => a.lines),
      ...(p?.runDir ? [`  metrics    ${join(p.runDir, METRICS_FILE)}`, ...(existsSync(join(p.runDir, LOSS_CURVE_FILE)) ? [`  loss curve ${join(p.runDir, LOSS_CURVE_FILE)}`] : [])] : []),
      ...(p?.stopRequested ? ['  stop requested'] : []),
      ...(p?.notes ?? []).map((n) => `  note       ${n}`),
    ];
    process.stdout.write(out.join('\n') + '\n');
    if (noAnswer) return 1;
  } finally {
    await client.connection.close();
  }
  return 0;
}

const ACTIVITY_STATE: Record<number, string> = { 1: 'scheduled, waiting for a worker', 2: 'running', 3: 'cancel requested', 4: 'paused', 5: 'pause requested' };

const ms = (t: { seconds?: unknown; nanos?: number | null } | null | undefined) =>
  t?.seconds !== undefined && t.seconds !== null ? Number(t.seconds) * 1000 + Math.round((t.nanos ?? 0) / 1e6) : null;

/**
 * The workflow's pending activities as DescribeWorkflowExecution reports them (any Temporal server): the current
 * attempt of each, its last failure and when the next attempt starts. A retrying activity shows here while the
 * progress query still shows the last good step.
 */
export function pendingAttempts(pending: temporal.api.workflow.v1.IPendingActivityInfo[], status: string, now = Date.now()): { retrying: boolean; lines: string[] }[] {
  if (status !== 'RUNNING') return [];
  return pending.map((a) => {
    const attempt = a.attempt ?? 1;
    const max = a.maximumAttempts ? ` of ${a.maximumAttempts}` : '';
    const state = ACTIVITY_STATE[Number(a.state)] ?? `state ${String(a.state)}`;
    const lines = [`  activity   ${a.activityType?.name ?? '?'} (id ${a.activityId}): attempt ${attempt}${max}, ${state}${a.lastWorkerIdentity ? ` (last worker ${a.lastWorkerIdentity})` : ''}`];
    const failure = a.lastFailure ? failureText(a.lastFailure) : null;
    if (failure) lines.push(`  last failure ${failure}`);
    const next = ms(a.nextAttemptScheduleTime);
    if (next !== null) lines.push(`  next retry ${next > now ? `in ${Math.ceil((next - now) / 1000)} s` : 'now'} (${new Date(next).toISOString()})`);
    return { retrying: attempt > 1 || failure !== null, lines };
  });
}
