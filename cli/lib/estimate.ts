// What a run will ask of its GPUs, for people: the family (from a pretrained directory's config.json), the parallel
// layout, and the engine's pre-flight memory estimate (native/engine/zero.cpp estimate_memory, through
// native/index.ts estimateMemory). Shared by `finetune estimate`, `run`, `start` and the workflow memo.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeParallelism, worldSizeOf, type FinetuneConfig } from '../../configs/index.js';
import type { MemoryEstimate } from '../../native/index.js';

const GiB = 2 ** 30;
export const gib = (b: number) => (b === 0 ? '0' : b < GiB ? `${(b / 2 ** 20).toFixed(b < 10 * 2 ** 20 ? 1 : 0)} MiB` : `${(b / GiB).toFixed(b >= 10 * GiB ? 1 : 2)} GiB`);

/** `16GiB`, `16G`, `80 GB`, `24000MiB`, or plain bytes. GB/MB are decimal, GiB/G/MiB/M binary. */
export function parseBytes(s: string, flag: string): number {
  const m = /^\s*([\d.]+)\s*(gib|gb|g|mib|mb|m|tib|tb|t|b)?\s*$/i.exec(s);
  if (!m || !(Number(m[1]) > 0)) throw new Error(`${flag}: expected a size like 16GiB, 80GB or 24000MiB, got ${JSON.stringify(s)}`);
  const unit = (m[2] ?? 'b').toLowerCase();
  const mult: Record<string, number> = { b: 1, m: 2 ** 20, mib: 2 ** 20, mb: 1e6, g: GiB, gib: GiB, gb: 1e9, t: 2 ** 40, tib: 2 ** 40, tb: 1e12 };
  return Math.round(Number(m[1]) * mult[unit]!);
}

/** model_type of a pretrained directory (what the engine will build), else model.family. */
export function familyOf(cfg: FinetuneConfig): { family: string; from: string } {
  if (cfg.model.init !== 'pretrained' || !cfg.model.path) return { family: cfg.model.family, from: 'model.family' };
  try {
    const j = JSON.parse(readFileSync(join(cfg.model.path, 'config.json'), 'utf8')) as { model_type?: unknown };
    return { family: typeof j.model_type === 'string' ? j.model_type : 'gpt2', from: join(cfg.model.path, 'config.json') };
  } catch (e) {
    return { family: 'unknown', from: `${join(cfg.model.path, 'config.json')} (${(e as Error).message})` };
  }
}

/** The per-GPU breakdown as aligned lines. */
export function breakdownLines(e: MemoryEstimate): string[] {
  const d = e.device;
  const row = (name: string, b: number, note = '') => `  ${name.padEnd(22)} ${gib(b).padStart(10)}${note ? `  ${note}` : ''}`;
  return [
    `per GPU (${e.worldSize} rank${e.worldSize === 1 ? '' : 's'}, ${(e.nParams / 1e6).toFixed(1)}M parameters, shard ${(e.shardElems / 1e6).toFixed(1)}M elements)`,
    `  model states: ${e.formula}`,
    row('weights', d.params),
    row('gradients', d.grads),
    row('fp32 master weights', d.master, d.master === 0 && e.host > 0 ? '(on the host)' : ''),
    row('AdamW moments', d.moments, d.moments === 0 && e.host > 0 ? '(on the host)' : ''),
    row('activations', d.activations),
    row('buffers', d.buffers, 'ZeRO buckets / gathered layers, tokens'),
    row('total', d.total),
    ...(e.host > 0 ? [`host (pinned, per rank) ${gib(e.host).padStart(10)}  fp32 master + m + v + gradients + bf16 staging (optimizer offload)`] : []),
  ];
}

/** One line for `run`/`start` and the workflow memo: `~6.2 GiB per GPU (model states 5.8 GiB, activations 0.4 GiB), host 28 GiB`. */
export function estimateLine(e: MemoryEstimate): string {
  const d = e.device;
  const states = d.params + d.grads + d.master + d.moments;
  return `~${gib(d.total)} per GPU (model states ${gib(states)}, activations ${gib(d.activations)})${e.host ? `, ${gib(e.host)} pinned host memory per rank` : ''}`;
}

/** The lines `run` and `start` print before they start: family, layout, memory (when the engine can tell). */
export async function planLines(cfg: FinetuneConfig): Promise<string[]> {
  const f = familyOf(cfg);
  const lines = [
    `model ${f.family}${cfg.model.init === 'pretrained' ? ` from ${cfg.model.path}` : ` ${cfg.model.nLayer}L x ${cfg.model.nEmbd}, random init`}; backend ${cfg.training.backend}`,
    `parallel ${describeParallelism(cfg)}`,
  ];
  try {
    const { estimateMemory } = await import('../../native/index.js');
    lines.push(`memory ${estimateLine(estimateMemory(cfg, { worldSize: worldSizeOf(cfg) }))}${cfg.training.backend === 'cpu' ? ' (for the cuda backend; the cpu backend is fp32 in RAM)' : ''}`);
  } catch (e) {
    lines.push(`memory estimate unavailable: ${(e as Error).message.split('\n')[0]}`);
  }
  return lines;
}
