// `finetune estimate <config.json> [--set k=v]... [--world-size N] [--device-memory 16GiB] [--host-memory 64GiB]
// [--json]`: the engine's pre-flight memory estimate per GPU (model states by ZeRO stage, activations, buffers) and
// the pinned host memory of optimizer offload, with a verdict and advice for a given GPU size (or a table of common
// sizes). Needs no GPU: it is the same arithmetic the engine runs before it allocates.
import { loadConfig, worldSizeOf } from '../configs/index.js';
import { estimateMemory } from '../native/index.js';
import { parse } from './lib/args.js';
import { breakdownLines, familyOf, gib, parseBytes } from './lib/estimate.js';
import { describeParallelism } from '../configs/index.js';

const USAGE = 'estimate <config.json> [--set key=value]... [--world-size N] [--device-memory 16GiB] [--host-memory 64GiB] [--json]';
/** What people fine-tune on: V100/T4 16 GB, A10/4090 24 GB, A100 40/80 GB, H100 80 GB, H200 141 GB. */
const COMMON_GPUS: [string, number][] = [['16 GB', 16e9], ['24 GB', 24e9], ['40 GB', 40e9], ['80 GB', 80e9], ['141 GB', 141e9]];

export async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, {
    set: { type: 'string', multiple: true }, 'world-size': { type: 'string' }, 'device-memory': { type: 'string' },
    'host-memory': { type: 'string' }, json: { type: 'boolean' },
  }, USAGE);
  if (positionals.length !== 1) throw new Error(`expected one config file\nusage: finetune ${USAGE}`);
  const cfg = loadConfig(positionals[0]!, values.set ?? []);
  let worldSize = worldSizeOf(cfg);
  if (values['world-size'] !== undefined) {
    worldSize = Number(values['world-size']);
    if (!Number.isInteger(worldSize) || worldSize < 1) throw new Error(`--world-size: expected a positive integer, got ${values['world-size']}`);
  } else if (cfg.parallelism.devices === 'all')
    process.stderr.write(`[finetune] parallelism.devices is 'all': estimating for ${worldSize} GPU(s); pass --world-size N for your host\n`);
  const device = values['device-memory'] !== undefined ? parseBytes(values['device-memory'], '--device-memory') : undefined;
  const host = values['host-memory'] !== undefined ? parseBytes(values['host-memory'], '--host-memory') : 0;
  const e = estimateMemory(cfg, { worldSize });
  const verdict = device !== undefined ? e.fits(device, host) : null;
  const table = COMMON_GPUS.map(([name, bytes]) => ({ name, bytes, ...e.fits(bytes, host) }));
  if (values.json) {
    const { fits: _, ...plain } = e;
    process.stdout.write(JSON.stringify({ ...plain, family: familyOf(cfg).family, verdict, common: table }) + '\n');
    return verdict && !verdict.ok ? 2 : 0;
  }
  const f = familyOf(cfg);
  const out = [
    `${cfg.name}: ${f.family} (from ${f.from}), ${cfg.training.precision}, batch ${cfg.training.microBatchSize} x ${cfg.preprocess.blockSize} tokens per GPU, recompute ${cfg.training.recompute}`,
    `${describeParallelism(cfg)}${values['world-size'] ? ` (world size ${worldSize} from --world-size)` : ''}`,
    '',
    ...breakdownLines(e),
    '',
  ];
  if (verdict && device !== undefined) {
    out.push(verdict.ok ? `fits a ${gib(device)} GPU${host ? ` with ${gib(host)} of host memory` : ''}` : `does NOT fit a ${gib(device)} GPU: ${verdict.advice}`);
  } else {
    out.push('fits (per GPU):  ' + table.map((t) => `${t.name} ${t.ok ? 'yes' : 'no'}`).join('   '));
    const first = table.find((t) => !t.ok);
    if (first) out.push(`on a ${first.name} GPU: ${first.advice}`);
  }
  if (cfg.training.backend === 'cpu') out.push('note: training.backend is cpu, which trains in fp32 in RAM; this estimate is for the cuda backend');
  process.stdout.write(out.join('\n') + '\n');
  return verdict && !verdict.ok ? 2 : 0;
}
