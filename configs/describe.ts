// What a run's start options tell a person in Temporal's Web UI and CLI before any worker has looked at it: a
// one-line summary (the run's header and `temporal workflow describe`) and a short Temporal-markdown description
// (the Web UI's User Metadata tab). Both come from the config alone, so `finetune start`, `finetune run` and a
// schedule's action set the same text.
import type { FinetuneConfig } from './schemas/index.js';
import { describeParallelism } from './parallel.js';

const plural = (n: number, one: string) => `${n} ${one}${n === 1 ? '' : 's'}`;

function modelOf(cfg: FinetuneConfig): string {
  const m = cfg.model;
  const init = m.init === 'pretrained' ? `pretrained ${m.path}` : `${m.family} ${m.nLayer}L×${m.nEmbd}`;
  return m.continueSeries ? `${init} (continuing the series ${cfg.name})` : init;
}

function lengthOf(cfg: FinetuneConfig): string {
  return cfg.training.maxSteps ? plural(cfg.training.maxSteps, 'step') : plural(cfg.training.epochs, 'epoch');
}

function sourceOf(s: FinetuneConfig['data']['train']): string {
  if (s.type === 'builtin') return `builtin:${s.name}`;
  const p = Array.isArray(s.path) ? `${s.path[0]}${s.path.length > 1 ? ` +${s.path.length - 1}` : ''}` : s.path;
  return `${s.type}:${p}`;
}

/** One line: name, model, length, and the GPU layout (or CPU). */
export function runSummary(cfg: FinetuneConfig): string {
  return `${cfg.name}: ${modelOf(cfg)}, ${lengthOf(cfg)}, ${cfg.training.backend === 'cpu' ? 'on CPU' : describeParallelism(cfg)}`;
}

/** A markdown list: the model, data, training, parallelism, checkpoints and where it all goes. */
export function runDetails(cfg: FinetuneConfig): string {
  const { data, preprocess: pre, training: t, checkpoint: c } = cfg;
  const validation = data.validation ? `validation ${sourceOf(data.validation)}` : `${+(data.validationFraction * 100).toFixed(2)}% held out for validation`;
  return [
    `**model** ${modelOf(cfg)}${cfg.model.init === 'pretrained' ? '' : ` (${cfg.model.nHead} heads, ${cfg.model.init} init)`}`,
    `**data** ${sourceOf(data.train)}, ${pre.mode} into ${pre.blockSize}-token blocks, ${validation}`,
    `**training** ${lengthOf(cfg)} in segments of ${t.segmentSteps}, batch ${t.microBatchSize}×${t.gradAccumSteps}, lr ${t.learningRate} ${t.schedule}, backend ${t.backend}`,
    `**parallelism** ${describeParallelism(cfg)}`,
    `**checkpoints** ${c.everySteps ? `every ${plural(c.everySteps, 'step')}` : 'at segment ends'}${c.everyMinutes ? ` or ${c.everyMinutes} min` : ''}, last ${c.keepLast} kept`,
    `**storage** ${cfg.storage.root}/${cfg.name}`,
  ].map((line) => `- ${line}`).join('\n');
}
