// The text a user reads in Temporal's Web UI: the start-time summary and details of a config, and the current
// details while training (test/e2e/webui.test.ts checks them rendered in the UI itself).
import { describe, expect, it } from 'vitest';
import { parseConfig, runDetails, runSummary } from '../../configs/index.js';
import { trainDetails } from '../../workflows/details.js';

describe('runSummary / runDetails', () => {
  it('name the model, length and layout in one line, and list the rest', () => {
    const cpu = parseConfig({ name: 'moby', training: { backend: 'cpu', maxSteps: 150 }, storage: { root: '/runs' } });
    expect(runSummary(cpu)).toBe('moby: gpt2 2L×128, 150 steps, on CPU');
    const gpu = parseConfig({ name: 'big', model: { init: 'pretrained', path: '/models/gpt2-xl', continueSeries: true }, training: { epochs: 2, gradAccumSteps: 4 }, parallelism: { devices: 4, zeroStage: 2 } });
    expect(runSummary(gpu)).toBe('big: pretrained /models/gpt2-xl (continuing the series big), 2 epochs, ZeRO-2, no offload, 1 worker x 4 GPUs = 4 ranks');
    const lines = runDetails(cpu).split('\n');
    expect(lines).toHaveLength(6);
    for (const l of lines) expect(l).toMatch(/^- \*\*(model|data|training|parallelism|checkpoints|storage)\*\* \S/);
    expect(lines[2]).toBe('- **training** 150 steps in segments of 50, batch 8×1, lr 0.0003 cosine, backend cpu');
    expect(lines[4]).toBe('- **checkpoints** every 50 steps or 10 min, last 3 kept');
    expect(lines[5]).toBe('- **storage** /runs/moby');
  });
});

describe('trainDetails', () => {
  it('step, share, loss, speed, checkpoint and the time left at the current speed', () => {
    expect(trainDetails(500, 2000, 3.14159, 1234.6, { dir: '/c/step-00000450', step: 450 }, 2)).toBe(
      '**train**: step 500/2000 (25%), loss 3.142, 1235 tok/s, checkpoint @450, ~13 min left');
    expect(trainDetails(10, 100_000, 8.5, 300, null, 1)).toBe('**train**: step 10/100000 (0%), loss 8.500, 300 tok/s, ~27.8 h left');
    // between segments: no speed measured yet, loss unknown before the first
    expect(trainDetails(0, 60, null, 0, null)).toBe('**train**: step 0/60 (0%), loss ?, 0 tok/s');
  });
});
