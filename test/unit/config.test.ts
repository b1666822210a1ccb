import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, applyOverrides, canonicalJson, fingerprintOf, loadConfig, parseConfig } from '../../configs/index.js';

function writeConfig(obj: unknown): string {
  const dir = mkdtempSync(join(tmpdir(), 'cfg-'));
  const f = join(dir, 'config.json');
  writeFileSync(f, JSON.stringify(obj));
  return f;
}

describe('FinetuneConfig', () => {
  it('fills every default from an empty object', () => {
    const c = parseConfig({});
    expect(c.preprocess.mode).toBe('concat');
    expect(c.data.train).toEqual({ type: 'builtin', name: 'moby-dick' });
    expect(c.parallelism.zeroStage).toBe(0);
    expect(c.temporal.taskQueue).toBe('finetune');
  });

  it('loads every preset', () => {
    for (const p of ['default', 'shakespeare-gptj-ray']) {
      const c = loadConfig(`configs/presets/${p}.json`);
      expect(c.name.length).toBeGreaterThan(0);
    }
    const ray = loadConfig('configs/presets/shakespeare-gptj-ray.json');
    expect(ray.preprocess).toMatchObject({ mode: 'lines', blockSize: 512, dropSpeakerLines: true });
    expect(ray.parallelism).toMatchObject({ zeroStage: 3, offload: { optimizer: 'cpu' } });
  });

  it('rejects unknown keys and names them', () => {
    const f = writeConfig({ training: { learningrate: 1e-3 } });
    expect(() => loadConfig(f)).toThrow(/training\.learningrate: unknown key/);
  });

  it('names the path, what was given and what is allowed', () => {
    try {
      parseConfig({ preprocess: { mode: 'words' }, training: { learningRate: -1 } });
      expect.unreachable();
    } catch (e) {
      const err = e as ConfigError;
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toMatch(/preprocess\.mode: one of "lines", "concat", "instruct"; given "words"/);
      expect(err.message).toMatch(/training\.learningRate: .*given -1/);
    }
  });

  it('checks blockSize against the model', () => {
    expect(() => parseConfig({ preprocess: { blockSize: 512 }, model: { nPositions: 256 } })).toThrow(
      /preprocess\.blockSize: blockSize 512 exceeds the model's nPositions 256/,
    );
  });

  it('applies --set overrides with JSON values', () => {
    const f = writeConfig({ training: { maxSteps: 5 } });
    const c = loadConfig(f, ['training.maxSteps=7', 'preprocess.mode=lines', 'generation.prompts=["a","b"]']);
    expect(c.training.maxSteps).toBe(7);
    expect(c.preprocess.mode).toBe('lines');
    expect(c.generation.prompts).toEqual(['a', 'b']);
    expect(() => applyOverrides({}, ['nokey'])).toThrow(/expected key.path=value/);
    expect(() => loadConfig(f, ['training.maxSteps.x=1'])).toThrow(/maxSteps is not an object/);
  });

  it('resolves relative paths against the config file', () => {
    const f = writeConfig({ data: { train: { type: 'text', path: 'corpus.txt' } } });
    const c = loadConfig(f);
    expect(c.data.train).toMatchObject({ path: join(f, '..', 'corpus.txt') });
  });
});

describe('canonical fingerprints', () => {
  it('ignores key order, not values', () => {
    expect(canonicalJson({ b: 1, a: [1, { d: 2, c: 3 }] })).toBe('{"a":[1,{"c":3,"d":2}],"b":1}');
    expect(fingerprintOf({ a: 1, b: 2 })).toBe(fingerprintOf({ b: 2, a: 1 }));
    expect(fingerprintOf({ a: 1 })).not.toBe(fingerprintOf({ a: 2 }));
    expect(fingerprintOf('ab', 'c')).not.toBe(fingerprintOf('a', 'bc'));
  });
  it('fails instead of hashing what it cannot represent', () => {
    expect(() => canonicalJson(new Map())).toThrow(/Map/);
    expect(() => canonicalJson(NaN)).toThrow(/non-finite/);
  });
});
