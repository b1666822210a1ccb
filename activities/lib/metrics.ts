// The per-run metrics log, `<runDir>/metrics.jsonl`: the source of truth for a run's training numbers.
//
// One JSON object per line, appended by the training activities:
//   {"kind":"start",...}  an attempt began training at `step` (resume: where it loaded from and why, engine build)
//   {"kind":"step",...}   one optimizer step: loss, lr, grad norm, tokens, tokens/s, ms, time
//   {"kind":"eval",...}   an evaluation point (validation loss at `step`)
//
// Crash-safe: a record is appended (and fdatasync'ed) after the engine call that produced it returned and before
// the checkpoint that covers it is committed, so every committed step has its record. A process killed mid-append
// leaves at most one partial last line: readers skip it, and the next writer ends it with a newline first.
//
// Deduplicated on resume: an attempt starts from a committed checkpoint and logs the steps after it again, each
// replacing the record an earlier attempt left for that step (a killed attempt's steps past its last checkpoint,
// a stale attempt's steps): the last record of a step wins. Training is deterministic, so the replacement holds
// the same numbers whoever wrote it; what differs (time, tokens/s) is the attempt that produced the model. Steps
// past the checkpoint a run finally exported (a killed attempt's, when the run then stopped earlier) are not
// counted: summarize() takes the steps up to that checkpoint. A start record never deletes steps by itself: a
// later segment may continue from a newer checkpoint (of a cancelled earlier run of the id) whose steps are only
// in the log. When an attempt loaded its state from disk it rewrites the file deduplicated (private file, then
// rename), so the log does not keep dead records.
import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { EngineBuild, ResumeRecord } from '../../common/index.js';

export const METRICS_FILE = 'metrics.jsonl';
export const LOSS_CURVE_FILE = 'loss.svg';

export function metricsFile(runDir: string): string {
  return join(runDir, METRICS_FILE);
}

export interface StartRecord {
  kind: 'start';
  step: number;
  attempt: number;
  time: string;
  workflowId: string;
  /** Set when this attempt did not continue the previous one in memory: where it loaded from and why. */
  resume: ResumeRecord | null;
  build: EngineBuild | null;
}

export interface StepRecord {
  kind: 'step';
  step: number;
  loss: number;
  lr: number | null;
  gradNorm: number | null;
  /** Tokens of the engine call that ran this step, spread over its steps (exact sums; per step in concat mode). */
  tokens: number;
  tokensPerSec: number;
  ms: number;
  time: string;
}

export interface EvalRecord {
  kind: 'eval';
  step: number;
  loss: number;
  perplexity: number;
  accuracy: number;
  time: string;
}

export type MetricsRecord = StartRecord | StepRecord | EvalRecord;

/** The log after replacement: steps and eval points by step, and every start record in order. */
export interface MetricsView {
  steps: StepRecord[];
  evals: EvalRecord[];
  starts: StartRecord[];
  /** Lines that did not parse (a partial last line after a kill). */
  skippedLines: number;
}

export function parseMetrics(text: string): MetricsView {
  const steps = new Map<number, StepRecord>();
  const evals = new Map<number, EvalRecord>();
  const starts: StartRecord[] = [];
  let skippedLines = 0;
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let r: MetricsRecord;
    try {
      r = JSON.parse(line) as MetricsRecord;
    } catch {
      skippedLines++;
      continue;
    }
    if (r.kind === 'start') starts.push(r);
    else if (r.kind === 'step') steps.set(r.step, r);
    else if (r.kind === 'eval') evals.set(r.step, r);
  }
  const byStep = <T extends { step: number }>(m: Map<number, T>) => [...m.values()].sort((a, b) => a.step - b.step);
  return { steps: byStep(steps), evals: byStep(evals), starts, skippedLines };
}

export async function readMetrics(runDir: string): Promise<MetricsView | null> {
  try {
    return parseMetrics(await readFile(metricsFile(runDir), 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

function serialize(records: MetricsRecord[]): string {
  return records.map((r) => JSON.stringify(r) + '\n').join('');
}

/** Append records durably (O_APPEND, one write, fdatasync); a partial last line left by a kill is ended first. */
export async function appendMetrics(runDir: string, records: MetricsRecord[]): Promise<void> {
  if (records.length === 0) return;
  const file = metricsFile(runDir);
  await mkdir(dirname(file), { recursive: true });
  const fh = await open(file, 'a+');
  try {
    let prefix = '';
    const { size } = await fh.stat();
    if (size > 0) {
      const last = Buffer.alloc(1);
      await fh.read(last, 0, 1, size - 1);
      if (last[0] !== 0x0a) prefix = '\n';
    }
    await fh.write(prefix + serialize(records));
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

/**
 * Record the start of an attempt at `start.step`. With `compact` (the attempt loaded its state from disk: a retry,
 * another worker, a re-run) the file is first rewritten with one record per step.
 */
export async function startMetrics(runDir: string, start: StartRecord, compact: boolean): Promise<void> {
  const file = metricsFile(runDir);
  if (compact) {
    let text: string | null = null;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (text !== null) {
      const v = parseMetrics(text + '\n' + JSON.stringify(start));
      // The start records, then one record per step and eval point, then this start.
      const kept: MetricsRecord[] = [...v.starts.slice(0, -1), ...v.steps, ...v.evals];
      const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
      try {
        const fh = await open(tmp, 'w');
        try {
          await fh.write(serialize([...kept, start]));
          await fh.datasync();
        } finally {
          await fh.close();
        }
        await rename(tmp, file);
      } catch (e) {
        await rm(tmp, { force: true });
        throw e;
      }
      return;
    }
  }
  await appendMetrics(runDir, [start]);
}

/** Step records of one engine.train call that ran steps (from, to]; `progress` holds the per-step lr/grad norm. */
export function stepRecords(
  from: number,
  r: { step: number; losses: number[]; tokens: number },
  progress: Map<number, { lr: number; gradNorm: number }>,
  ms: number,
): StepRecord[] {
  const n = r.losses.length;
  if (n === 0) return [];
  const time = new Date().toISOString();
  const base = Math.floor(r.tokens / n);
  const tokensPerSec = ms > 0 ? Math.round(r.tokens / (ms / 1000)) : 0;
  return r.losses.map((loss, i) => {
    const step = r.step - n + i + 1;
    const p = progress.get(step);
    return {
      kind: 'step', step, loss, lr: p?.lr ?? null, gradNorm: p?.gradNorm ?? null,
      tokens: i === n - 1 ? r.tokens - base * (n - 1) : base, tokensPerSec, ms: ms / n, time,
    } satisfies StepRecord;
  }).filter((s) => s.step > from);
}

/** The report's training numbers, from the log, up to the step of the checkpoint the run exported. */
export interface LoggedTraining {
  steps: number;
  firstLoss: number | null;
  lastLoss: number | null;
  tokens: number;
  tokensPerSec: number;
  resumes: ResumeRecord[];
  builds: EngineBuild[];
}

export function summarize(v: MetricsView, upToStep: number): LoggedTraining {
  const steps = v.steps.filter((s) => s.step <= upToStep);
  const tokens = steps.reduce((a, s) => a + s.tokens, 0);
  const ms = steps.reduce((a, s) => a + s.ms, 0);
  const builds: EngineBuild[] = [];
  for (const s of v.starts) if (s.build && !builds.some((b) => b.id === s.build!.id)) builds.push(s.build);
  return {
    steps: steps.at(-1)?.step ?? 0,
    firstLoss: steps[0]?.loss ?? null,
    lastLoss: steps.at(-1)?.loss ?? null,
    tokens,
    tokensPerSec: ms > 0 ? Math.round(tokens / (ms / 1000)) : 0,
    resumes: v.starts.filter((s) => s.resume).map((s) => s.resume!),
    builds,
  };
}
