// The data report (manifest.warnings, the run's notes) says when truncation to blockSize cuts away more than
// TRUNCATION_WARN_FRACTION of a split's tokens, in lines and packed modes alike, with the numbers and the setting.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { prepareData } from '../../datasets/index.js';
import { TRUNCATION_WARN_FRACTION } from '../../datasets/prepare.js';
import { config, tmp } from './helpers.js';

describe('truncation warnings', () => {
  const d = tmp();
  const file = join(d, 'long-lines.txt');
  writeFileSync(file, Array.from({ length: 40 }, (_, i) => `Line ${i}: ${'many words in a long line '.repeat(6)}`).join('\n'));

  for (const pad of [true, false])
    it(`lines, pad ${pad}: nearly every token cut away is counted and warned about`, async () => {
      const { manifest: m } = await prepareData(config({ data: { train: { type: 'text', path: file }, validationFraction: 0 }, preprocess: { mode: 'lines', blockSize: 8, pad } }));
      const t = m.splits.train;
      expect(t.truncatedExamples).toBe(40);
      expect(t.truncatedTokens).toBe(t.sourceTokens - 40 * 8);
      expect(t.truncatedTokens / t.sourceTokens).toBeGreaterThan(0.75);
      const pct = ((100 * t.truncatedTokens) / t.sourceTokens).toFixed(1);
      expect(m.warnings).toEqual([
        `train: truncation to blockSize 8 cut away ${pct}% of the tokens (${t.truncatedTokens} of ${t.sourceTokens}, 40 of 40 examples cut); raise preprocess.blockSize`,
      ]);
    });

  it('a one-token line (GPT-2, no BOS) has nothing to predict: dropped and reported, never an all-masked sequence', async () => {
    const f = join(d, 'short.txt');
    writeFileSync(f, ['Hello world, this is a line.', 'Yes', 'Another line with words.'].join('\n'));
    const { manifest: m } = await prepareData(config({ data: { train: { type: 'text', path: f }, validationFraction: 0 }, preprocess: { mode: 'lines', blockSize: 16 } }));
    expect(m.splits.train).toMatchObject({ examples: 3, droppedExamples: 1, sequences: 2 });
    expect(m.warnings).toEqual(['train: 1 of 3 examples dropped: no token of theirs would carry loss (lines of one token: nothing to predict)']);
  });

  it(`no warning at or below ${TRUNCATION_WARN_FRACTION * 100}%, and none for concat's tail`, async () => {
    const a = await prepareData(config({ data: { train: { type: 'text', path: file }, validationFraction: 0 }, preprocess: { mode: 'lines', blockSize: 256 } }));
    expect(a.manifest.splits.train.truncatedTokens).toBe(0);
    expect(a.manifest.warnings).toEqual([]);
    const c = await prepareData(config({ data: { train: { type: 'text', path: file }, validationFraction: 0 }, preprocess: { mode: 'concat', blockSize: 512 } }));
    expect(c.manifest.splits.train.droppedTokens).toBeGreaterThan(0);
    expect(c.manifest.warnings).toEqual([]);
  });
});
