// Progress of a running `finetune` workflow, drawn from its `progress` query: one bar per stage, and for
// training step/total with loss, tokens/s and ETA. Without a TTY (CI, pipes) it prints a line per change.
import cliProgress from 'cli-progress';
import { STAGES, type Progress, type Stage } from '../../workflows/messages.js';

export interface ProgressView {
  update(p: Progress): void;
  stop(): void;
}

const fmt = (n: number | null | undefined, d = 3) => (n === null || n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(d));
const eta = (s: number | null) => (s === null ? '-' : s >= 3600 ? `${(s / 3600).toFixed(1)}h` : s >= 60 ? `${Math.round(s / 60)}m` : `${s}s`);

export function trainLine(p: Progress): string {
  if (p.totalSteps === 0) return 'not started';
  return `step ${p.step}/${p.totalSteps} loss ${fmt(p.loss)} ${p.tokensPerSec ? Math.round(p.tokensPerSec) : '-'} tok/s eta ${eta(p.etaSeconds)}` +
    (p.lastCheckpoint ? ` ckpt@${p.lastCheckpoint.step}` : '');
}

export function createProgressView(out: NodeJS.WriteStream): ProgressView {
  if (!out.isTTY) return lineView(out);
  const multi = new cliProgress.MultiBar(
    { stream: out, hideCursor: true, clearOnComplete: false, format: ' {stage} |{bar}| {info}', barsize: 30, fps: 5 },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<Stage, cliProgress.SingleBar>();
  let notes = 0;
  return {
    update(p) {
      for (const s of STAGES) {
        const st = p.stages[s];
        if (st.status === 'pending') continue;
        let bar = bars.get(s);
        const total = s === 'train' ? Math.max(1, p.totalSteps) : 1;
        const value = s === 'train' ? Math.min(p.step, total) : st.status === 'done' || st.status === 'skipped' ? 1 : 0;
        const info = s === 'train' ? trainLine(p) : st.status === 'running' ? 'running' : `${st.status}${st.ms !== undefined ? ` in ${(st.ms / 1000).toFixed(1)}s` : ''}`;
        if (!bar) bars.set(s, (bar = multi.create(total, value, { stage: s.padEnd(8), info })));
        bar.setTotal(total);
        bar.update(value, { stage: s.padEnd(8), info: s === 'train' && st.status === 'done' ? `${trainLine(p)} (done in ${((st.ms ?? 0) / 1000).toFixed(1)}s)` : info });
      }
      for (; notes < p.notes.length; notes++) multi.log(`  note: ${p.notes[notes]}\n`);
    },
    stop: () => multi.stop(),
  };
}

function lineView(out: NodeJS.WriteStream): ProgressView {
  let last = '';
  let notes = 0;
  let lastTrainPrint = 0;
  return {
    update(p) {
      const key = `${p.stage}:${STAGES.map((s) => p.stages[s].status).join(',')}`;
      const now = Date.now();
      if (key !== last) {
        last = key;
        out.write(`[finetune] stage ${p.stage}${p.stage === 'train' ? `: ${trainLine(p)}` : ''}\n`);
      } else if (p.stage === 'train' && now - lastTrainPrint > 10_000) {
        lastTrainPrint = now;
        out.write(`[finetune] train: ${trainLine(p)}\n`);
      }
      for (; notes < p.notes.length; notes++) out.write(`[finetune] note: ${p.notes[notes]}\n`);
    },
    stop() {},
  };
}

/** The final report, for people (the --json form prints the object itself). */
export function formatReport(r: import('../../workflows/messages.js').FinetuneReport): string {
  const t = r.train;
  const lines = [
    `run ${r.workflowId}: ${t.steps}/${t.totalSteps} steps${t.stoppedEarly ? ' (stopped early)' : ''}`,
    `  loss       ${fmt(t.firstLoss)} → ${fmt(t.lastLoss)}  (${t.tokensPerSec} tok/s, ${t.tokens} tokens)`,
    `  eval       ${r.eval ? `loss ${fmt(r.eval.loss)}  perplexity ${fmt(r.eval.perplexity, 1)}  accuracy ${fmt(r.eval.accuracy)}` : 'no validation split'}`,
    `  resumed    ${t.resumedFromSteps.length ? t.resumedFromSteps.map((s) => `step ${s}`).join(', ') : 'never'}`,
    `  run dir    ${r.runDir}`,
    `  model      ${r.modelDir ?? '-'}`,
    ...(r.lossCurve ? [`  loss curve ${r.lossCurve}  (open in a browser)`] : []),
    `  stages     ${Object.entries(r.stageMs).map(([s, ms]) => `${s} ${((ms ?? 0) / 1000).toFixed(1)}s`).join(', ')}`,
    ...r.notes.map((n) => `  note       ${n}`),
    '',
    ...r.samples.flatMap((s) => [`  > ${s.prompt}`, `    ${s.text.replace(/\n/g, '\n    ')}`, '']),
  ];
  return lines.join('\n');
}
