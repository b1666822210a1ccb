// finalizeRun: write the run's report next to its checkpoints and point the series at the new model, so the next
// scheduled run (model.continueSeries) starts from it. Both writes are atomic renames.
import { join } from 'node:path';
import type { FinetuneReport } from '../workflows/messages.js';
import { writeJsonAtomic } from './lib/fsutil.js';
import type { SeriesPointer } from './validate.js';

export async function finalizeRun(a: { report: FinetuneReport; seriesDir: string; totalMs: number }): Promise<{ reportFile: string }> {
  const reportFile = join(a.report.runDir, 'report.json');
  await writeJsonAtomic(reportFile, { ...a.report, totalMs: a.totalMs, finishedAt: new Date().toISOString() });
  if (a.report.modelDir) {
    const pointer: SeriesPointer = {
      modelDir: a.report.modelDir, workflowId: a.report.workflowId, step: a.report.train.steps,
      evalLoss: a.report.eval?.loss ?? null, finishedAt: new Date().toISOString(),
    };
    await writeJsonAtomic(join(a.seriesDir, 'latest.json'), pointer);
  }
  return { reportFile };
}
