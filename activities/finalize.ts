// finalizeRun: write the run's report next to its checkpoints and point the series at the new model, so the next
// scheduled run (model.continueSeries) starts from it. Both writes are atomic renames.
//
// The report's training numbers (first/last loss, tokens, tokens/s, resumes and their causes, engine builds) come
// from the run's metrics log (lib/metrics.ts), up to the step of the checkpoint that was exported: they are true
// after any kill, stop, "checkpoint now", cancel-and-re-run or continue-as-new, whatever the workflow saw of the
// segments. The loss curve (loss.svg) is drawn from the same log. The report is returned, and the workflow
// returns it.
import { join } from 'node:path';
import type { FinetuneReport, TrainSummary } from '../common/index.js';
import { writeJsonAtomic, writeTextAtomic } from './lib/fsutil.js';
import { lossCurveSvg } from './lib/losscurve.js';
import { appendMetrics, LOSS_CURVE_FILE, metricsFile, readMetrics, summarize } from './lib/metrics.js';
import type { SeriesPointer } from './validate.js';

/** The report with its training numbers taken from the metrics log (when the log covers every step). */
export async function reportFromMetrics(report: FinetuneReport): Promise<FinetuneReport> {
  const upTo = report.train.lastCheckpoint?.step ?? report.train.steps;
  if (report.eval && upTo > 0) {
    const v = await readMetrics(report.runDir);
    if (v && !v.evals.some((e) => e.step === upTo))
      await appendMetrics(report.runDir, [{ kind: 'eval', step: upTo, loss: report.eval.loss, perplexity: report.eval.perplexity, accuracy: report.eval.accuracy, time: new Date().toISOString() }]);
  }
  const view = await readMetrics(report.runDir);
  if (!view) return { ...report, metricsLog: undefined, lossCurve: null };
  const logged = summarize(view, upTo);
  const covered = view.steps.filter((s) => s.step <= upTo).length;
  let train: TrainSummary = report.train;
  let notes = report.notes;
  if (covered === upTo) {
    // The workflow noted the resumes of the segments it saw complete; the log has every one, with its cause.
    notes = notes.filter((n) => !/^resumed (from|at) /.test(n));
    train = {
      ...report.train, steps: upTo, firstLoss: logged.firstLoss, lastLoss: logged.lastLoss, tokens: logged.tokens,
      tokensPerSec: logged.tokensPerSec || report.train.tokensPerSec, resumes: logged.resumes,
      resumedFromSteps: logged.resumes.map((r) => r.atStep), engineBuilds: logged.builds,
    };
    for (const r of logged.resumes)
      notes.push(`resumed at step ${r.atStep} from ${r.from ? `checkpoint step ${r.from.step}` : 'the initial model'} (attempt ${r.attempt})${r.cause ? `: ${r.cause}` : ''}`);
  } else notes.push(`the metrics log ${metricsFile(report.runDir)} covers ${covered} of the ${upTo} steps: the training numbers are the workflow's own`);
  for (const r of logged.resumes)
    if (r.checkpointBuild)
      notes.push(`step ${r.atStep} resumed on another engine build than the one that wrote its checkpoint (${r.checkpointBuild.id}, BLAS ${r.checkpointBuild.blas}): the weights may differ from an uninterrupted run's`);
  if (logged.builds.length > 1) notes.push(`trained by ${logged.builds.length} engine builds: ${logged.builds.map((b) => `${b.id} (${b.backends}, BLAS ${b.blas})`).join(', ')}`);
  const lossCurve = join(report.runDir, LOSS_CURVE_FILE);
  await writeTextAtomic(lossCurve, lossCurveSvg(view, { title: `${report.name} (${report.workflowId}): loss by step`, upToStep: upTo }));
  return { ...report, train, notes, metricsLog: metricsFile(report.runDir), lossCurve };
}

export async function finalizeRun(a: { report: FinetuneReport; seriesDir: string; totalMs: number }): Promise<{ reportFile: string; report: FinetuneReport }> {
  const reportFile = join(a.report.runDir, 'report.json');
  const report = await reportFromMetrics(a.report);
  await writeJsonAtomic(reportFile, { ...report, totalMs: a.totalMs, finishedAt: new Date().toISOString() });
  if (report.modelDir) {
    const pointer: SeriesPointer = {
      modelDir: report.modelDir, workflowId: report.workflowId, step: report.train.steps,
      evalLoss: report.eval?.loss ?? null, finishedAt: new Date().toISOString(),
    };
    await writeJsonAtomic(join(a.seriesDir, 'latest.json'), pointer);
  }
  return { reportFile, report };
}
