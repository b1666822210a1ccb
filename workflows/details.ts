// The `finetune` workflow's current details while it trains: one markdown line that the Web UI shows in the run's
// User Metadata tab (and `temporal workflow describe` prints), kept short enough to read at a glance.
import type { CheckpointRef } from './messages.js';

/** Where training is, how it goes, what is safe on disk and, when the speed is known, how long it still needs. */
export function trainDetails(step: number, total: number, loss: number | null, tokensPerSec: number, checkpoint: CheckpointRef | null, stepsPerSec = 0): string {
  const left = stepsPerSec > 0 && total > step ? (total - step) / stepsPerSec / 60 : null;
  return `**train**: step ${step}/${total} (${Math.floor((100 * step) / Math.max(total, 1))}%), loss ${loss?.toFixed(3) ?? '?'}, ${Math.round(tokensPerSec)} tok/s` +
    (checkpoint ? `, checkpoint @${checkpoint.step}` : '') +
    (left === null ? '' : left < 60 ? `, ~${Math.ceil(left)} min left` : `, ~${(left / 60).toFixed(1)} h left`);
}
