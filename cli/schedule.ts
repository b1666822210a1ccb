// `finetune schedule create|list|describe|trigger|pause|unpause|delete`: scheduled retraining. A schedule starts
// `finetune` runs with model.continueSeries on, so each run continues from the newest model of the series (or the
// configured base for the first one); overlapping runs are skipped, never stacked.
import { ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import { loadConfig, runDetails, runSummary, type FinetuneConfig } from '../configs/index.js';
import { parse } from './lib/args.js';
import { connectClient, resolveTarget, TARGET_OPTIONS } from './lib/connection.js';

const USAGE = [
  'schedule create <config.json> (--every 24h | --cron "0 3 * * *") [--id ID] [--set k=v]... [--paused]',
  'schedule list | describe <id> | trigger <id> | pause <id> | unpause <id> | delete <id>   [--address host:port] [--namespace NS] [--profile P] [--json]',
].join('\n       finetune ');

export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values, positionals } = parse(
    rest,
    {
      every: { type: 'string' }, cron: { type: 'string' }, id: { type: 'string' }, set: { type: 'string', multiple: true },
      paused: { type: 'boolean' }, ...TARGET_OPTIONS, json: { type: 'boolean' },
      note: { type: 'string' },
    },
    USAGE,
  );
  // Every scheduled run continues the series: the newest exported model of this name, else the configured base.
  const cfg = sub === 'create' ? loadScheduleConfig(positionals, values) : undefined;
  const client = await connectClient(resolveTarget({ ...values, configNamespace: cfg?.temporal.namespace }));
  const out = (human: string, obj: unknown) => process.stdout.write((values.json ? JSON.stringify(obj) : human) + '\n');
  const one = () => {
    if (positionals.length !== 1) throw new Error(`expected one schedule id\nusage: finetune ${USAGE}`);
    return client.schedule.getHandle(positionals[0]!);
  };
  try {
    switch (sub) {
      case 'create':
        return await create(client, cfg!, values, out);
      case 'list': {
        const all = [];
        for await (const s of client.schedule.list()) all.push({ scheduleId: s.scheduleId, paused: s.state.paused, next: s.info.nextActionTimes[0]?.toISOString() ?? null, recent: s.info.recentActions.length });
        out(all.map((s) => `${s.scheduleId}  ${s.paused ? 'paused' : 'active'}  next ${s.next ?? '-'}  runs ${s.recent}`).join('\n') || '(no schedules)', all);
        return 0;
      }
      case 'describe': {
        const d = await one().describe();
        const summary = {
          scheduleId: d.scheduleId, paused: d.state.paused, note: d.state.note, spec: d.spec,
          nextActionTimes: d.info.nextActionTimes.slice(0, 3).map((t) => t.toISOString()),
          recentActions: d.info.recentActions.map((a) => ({ at: a.takenAt.toISOString(), workflowId: a.action.workflow.workflowId })),
          running: d.info.runningActions.map((a) => a.workflow.workflowId),
        };
        out(JSON.stringify(summary, null, 2), summary);
        return 0;
      }
      case 'trigger':
        await one().trigger(ScheduleOverlapPolicy.SKIP);
        out(`triggered ${positionals[0]}`, { triggered: positionals[0] });
        return 0;
      case 'pause':
        await one().pause(values.note ?? 'paused from the finetune CLI');
        out(`paused ${positionals[0]}`, { paused: positionals[0] });
        return 0;
      case 'unpause':
        await one().unpause(values.note ?? 'unpaused from the finetune CLI');
        out(`unpaused ${positionals[0]}`, { unpaused: positionals[0] });
        return 0;
      case 'delete':
        await one().delete();
        out(`deleted ${positionals[0]}`, { deleted: positionals[0] });
        return 0;
      default:
        throw new Error(`unknown schedule command '${sub ?? ''}'\nusage: finetune ${USAGE}`);
    }
  } finally {
    await client.connection.close();
  }
}

function loadScheduleConfig(positionals: string[], values: { every?: string; cron?: string; set?: string[] }): FinetuneConfig {
  if (positionals.length !== 1) throw new Error(`expected one config file\nusage: finetune ${USAGE}`);
  if (!values.every === !values.cron) throw new Error('give exactly one of --every (e.g. 24h, 30m) or --cron (e.g. "0 3 * * *")');
  return loadConfig(positionals[0]!, [...(values.set ?? []), 'model.continueSeries=true']);
}

async function create(
  client: Client,
  cfg: FinetuneConfig,
  values: { every?: string; cron?: string; id?: string; paused?: boolean },
  out: (human: string, obj: unknown) => void,
): Promise<number> {
  const scheduleId = values.id ?? `finetune-${cfg.name}`;
  const handle = await client.schedule.create({
    scheduleId,
    spec: values.every ? { intervals: [{ every: values.every as `${number}h` }] } : { cronExpressions: [values.cron!] },
    action: {
      type: 'startWorkflow',
      workflowType: 'finetune',
      args: [cfg],
      taskQueue: cfg.temporal.taskQueue,
      // The schedule appends the fire time, so each run has its own id (and its own run directory).
      workflowId: cfg.temporal.workflowId ?? `finetune-${cfg.name}`,
      // Each scheduled run carries the config's summary and details into the Web UI, as `finetune start` does.
      staticSummary: runSummary(cfg),
      staticDetails: runDetails(cfg),
    },
    policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1h' },
    state: { paused: values.paused ?? false, note: `retrain ${cfg.name} ${values.every ? `every ${values.every}` : `on cron "${values.cron}"`}` },
    memo: { config: runSummary(cfg) },
  });
  out(`created schedule ${handle.scheduleId} (${values.every ? `every ${values.every}` : `cron ${values.cron}`}, overlap: skip)`, { scheduleId: handle.scheduleId });
  return 0;
}
