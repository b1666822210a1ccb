// `finetune start <config.json> [--set k=v]... [--address host:port]`: start the workflow on a running Temporal
// (workers elsewhere: `finetune worker`) and print its id. An existing run of that id is attached, not restarted.
import { loadConfig } from '../configs/index.js';
import { parse } from './lib/args.js';
import { planLines } from './lib/estimate.js';
import { connectClient, resolveTarget, TARGET_OPTIONS } from './lib/connection.js';
import { startOrAttach } from './run.js';

const USAGE = 'start <config.json> [--set key=value]... [--address host:port] [--namespace NS] [--profile P]';

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { set: { type: 'string', multiple: true }, ...TARGET_OPTIONS }, USAGE);
  if (positionals.length !== 1) throw new Error(`expected one config file\nusage: finetune ${USAGE}`);
  const cfg = loadConfig(positionals[0]!, values.set ?? []);
  for (const line of await planLines(cfg)) process.stderr.write(`[finetune] ${line}\n`);
  const client = await connectClient(resolveTarget({ ...values, configNamespace: cfg.temporal.namespace }));
  try {
    const handle = await startOrAttach(client, cfg, (s) => process.stderr.write(`[finetune] ${s}\n`));
    process.stdout.write(handle.workflowId + '\n');
  } finally {
    await client.connection.close();
  }
  return 0;
}
