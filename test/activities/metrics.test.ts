// The per-run metrics log (activities/lib/metrics.ts): appends survive a partial last line, a start record
// replaces the steps past it (a killed attempt's), compaction keeps exactly what the replacement keeps, the
// summary sums what produced the exported model, and the loss curve is drawn from it.
import { appendFileSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { lossCurveSvg } from '../../activities/lib/losscurve.js';
import { appendMetrics, metricsFile, parseMetrics, readMetrics, startMetrics, stepRecords, summarize, type StartRecord } from '../../activities/lib/metrics.js';

const start = (step: number, attempt: number, resume = false): StartRecord => ({
  kind: 'start', step, attempt, time: new Date().toISOString(), workflowId: 'w',
  resume: resume ? { atStep: step, attempt, from: { dir: `/c/step-${step}`, step }, skipped: [], cause: 'retry' } : null,
  build: { id: 'b@1', backends: 'cpu', blas: 'x', node: '20' },
});
const group = (from: number, to: number, lossAt: (s: number) => number, tokensPerStep = 128) =>
  stepRecords(from, { step: to, losses: Array.from({ length: to - from }, (_, i) => lossAt(from + i + 1)), tokens: (to - from) * tokensPerStep }, new Map(), 100);

describe('metrics log', () => {
  it('a resumed attempt replaces the killed attempt\'s steps past its checkpoint; the summary equals an uninterrupted log', async () => {
    const loss = (s: number) => 10 - s / 10;
    const clean = mkdtempSync(join(tmpdir(), 'ft-metrics-'));
    await startMetrics(clean, start(0, 1), false);
    for (let s = 0; s < 30; s += 5) await appendMetrics(clean, group(s, s + 5, loss));
    const ref = summarize((await readMetrics(clean))!, 30);
    expect(ref).toMatchObject({ steps: 30, firstLoss: 9.9, lastLoss: 7, tokens: 30 * 128, resumes: [] });

    const dir = mkdtempSync(join(tmpdir(), 'ft-metrics-'));
    await startMetrics(dir, start(0, 1), false);
    for (let s = 0; s < 15; s += 5) await appendMetrics(dir, group(s, s + 5, loss));
    // Killed mid-append: a partial line; the steps 11-15 were never checkpointed (the last checkpoint is step 10).
    appendFileSync(metricsFile(dir), '{"kind":"step","step":16,"lo');
    expect(parseMetrics(readFileSync(metricsFile(dir), 'utf8')).skippedLines).toBe(1);
    await startMetrics(dir, start(10, 2, true), true); // the retry loads step 10 and compacts the log
    const compacted = readFileSync(metricsFile(dir), 'utf8');
    expect(compacted).not.toContain('"step":16,"lo');
    expect(parseMetrics(compacted).steps.map((s) => s.step)).toEqual(Array.from({ length: 15 }, (_, i) => i + 1));
    // The killed attempt's steps 11-15 are replaced as the retry logs them again (here with other timings).
    for (let s = 10; s < 30; s += 5) await appendMetrics(dir, stepRecords(s, { step: s + 5, losses: [1, 2, 3, 4, 5].map((i) => loss(s + i)), tokens: 5 * 128 }, new Map(), 999));
    // A later partial line is ended before the next append, so that record is not glued to it.
    appendFileSync(metricsFile(dir), '{"kind":"st');
    await appendMetrics(dir, [{ kind: 'eval', step: 30, loss: 6.5, perplexity: Math.exp(6.5), accuracy: 0.2, time: new Date().toISOString() }]);
    const v = (await readMetrics(dir))!;
    expect(v.evals.map((e) => e.step)).toEqual([30]);
    const got = summarize(v, 30);
    expect({ ...got, resumes: [], tokensPerSec: 0 }).toEqual({ ...ref, resumes: [], tokensPerSec: 0 });
    expect(v.steps.filter((x) => x.step > 10).every((x) => x.ms === 999 / 5)).toBe(true);
    expect(got.resumes).toEqual([expect.objectContaining({ atStep: 10, attempt: 2, cause: 'retry' })]);
    // Up to an earlier exported step (a stop): only the steps that produced it.
    expect(summarize(v, 20)).toMatchObject({ steps: 20, tokens: 20 * 128, lastLoss: 8 });

    const svg = lossCurveSvg(v, { title: 'run <1>' });
    expect(svg).toMatch(/^<svg /);
    expect(svg).toContain('run &lt;1&gt;');
    expect(svg.match(/<polyline class="train"[^>]*points="([^"]*)"/)![1]!.split(' ')).toHaveLength(30);
    expect(svg).toContain('resume @10');
    expect(svg.match(/class="eval"/g)).toHaveLength(1);
  });

  it('the last record of a step wins; a start deletes nothing (a later segment may continue from a newer checkpoint)', () => {
    // A re-run resumes at 20 from a cancelled run that reached 40; its next segment continues from checkpoint 40.
    const lines = [start(0, 1), ...group(0, 40, (s) => s), start(20, 1, true), start(40, 1, true), ...group(40, 60, (s) => s)].map((r) => JSON.stringify(r)).join('\n');
    const v = parseMetrics(lines);
    expect(v.steps.map((s) => s.step)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1));
    expect(v.starts).toHaveLength(3);
    const w = parseMetrics([start(0, 1), ...group(0, 10, (s) => s), start(5, 2, true), ...group(5, 10, (s) => s + 100)].map((r) => JSON.stringify(r)).join('\n'));
    expect(w.steps.map((s) => s.loss)).toEqual([1, 2, 3, 4, 5, 106, 107, 108, 109, 110]);
  });

  it('per-step tokens sum exactly to the engine call\'s tokens', () => {
    const r = stepRecords(0, { step: 3, losses: [1, 2, 3], tokens: 100 }, new Map([[2, { lr: 1e-3, gradNorm: 0.5 }]]), 300);
    expect(r.map((s) => s.tokens).reduce((a, b) => a + b)).toBe(100);
    expect(r[1]).toMatchObject({ step: 2, lr: 1e-3, gradNorm: 0.5 });
  });
});
