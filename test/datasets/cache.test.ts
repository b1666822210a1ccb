// Content addressing and atomic commit: the fingerprint follows content and semantic settings only; a repeat
// reuses the result; concurrent attempts agree; a killed attempt leaves nothing that looks complete.
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import { DataError, prepareData, readManifest, verifyShards } from '../../datasets/index.js';
// @ts-expect-error plain .mjs fixture without type declarations
import { writeCorpus } from '../fixtures/datasets/gen-corpus.mjs';
import { config, FIXTURES, tmp } from './helpers.js';

const ROOT = resolve(import.meta.dirname, '../..');

describe('content-addressed output', () => {
  it('fingerprints content and semantic settings, not paths, mtimes or worker counts', async () => {
    const d = tmp();
    copyFileSync(`${FIXTURES}/hello.txt`, join(d, 'copy.txt'));
    const root = tmp();
    const base = { data: { train: { type: 'text' as const, path: `${FIXTURES}/hello.txt` }, validationFraction: 0 }, preprocess: { blockSize: 2 }, storage: { root } };
    const first = await prepareData(config(base));
    expect(first.reused).toBe(false);
    expect(first.dir).toBe(join(root, 'data', first.manifest.fingerprint));
    // same bytes elsewhere, explicit defaults, other worker count: same result, reused
    const same = await prepareData(
      config({ ...base, data: { ...base.data, train: { type: 'text', path: join(d, 'copy.txt') } }, preprocess: { blockSize: 2, workers: 1, mode: 'concat', sequencesPerShard: 4096 } }),
    );
    expect(same).toMatchObject({ dir: first.dir, reused: true });
    // different content, block size or split: different fingerprints
    writeFileSync(join(d, 'copy.txt'), 'Hello world\n\nHello World\n');
    const fps = new Set([first.manifest.fingerprint]);
    for (const over of [
      { data: { ...base.data, train: { type: 'text' as const, path: join(d, 'copy.txt') } } },
      { preprocess: { blockSize: 3 } },
      { data: { ...base.data, validationFraction: 0.1 } },
      { data: { ...base.data, splitSeed: 7 } },
    ])
      fps.add((await prepareData(config({ ...base, ...over }))).manifest.fingerprint);
    expect(fps.size).toBe(5);
  });

  it('readManifest requires the DONE marker; a directory without one is never reused', async () => {
    const cfg = config({ data: { train: { type: 'text', path: `${FIXTURES}/hello.txt` }, validationFraction: 0 }, preprocess: { blockSize: 2 } });
    const { dir } = await prepareData(cfg);
    rmSync(join(dir, 'DONE'));
    expect(() => readManifest(dir)).toThrow(/no DONE marker/);
    await expect(prepareData(cfg)).rejects.toThrow(/not a completed prepare output/);
  });

  it('--out into a directory holding other prepared data is refused', async () => {
    const out = join(tmp(), 'out');
    const a = config({ data: { train: { type: 'text', path: `${FIXTURES}/hello.txt` }, validationFraction: 0 }, preprocess: { blockSize: 2 } });
    await prepareData(a, { outDir: out });
    expect((await prepareData(a, { outDir: out })).reused).toBe(true);
    const err = await prepareData({ ...a, preprocess: { ...a.preprocess, blockSize: 3 } }, { outDir: out }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DataError);
    expect((err as Error).message).toMatch(/holds prepared data with another fingerprint/);
  });

  it('two concurrent attempts: one result, both see it, no temporary directories left', async () => {
    const cfg = config({});
    const [a, b] = await Promise.all([prepareData(cfg), prepareData(cfg)]);
    expect(a.dir).toBe(b.dir);
    expect(a.manifest.fingerprint).toBe(b.manifest.fingerprint);
    await verifyShards(a.dir, readManifest(a.dir));
    expect(readdirSync(join(cfg.storage.root, 'data'))).toEqual([a.manifest.fingerprint]);
  });

  it('a killed attempt leaves only its temporary directory; the next attempt cleans it and completes', async () => {
    const work = tmp('kill-');
    onTestFinished(() => rmSync(work, { recursive: true, force: true }));
    writeCorpus(join(work, 'corpus.txt'), 12);
    const cfgFile = join(work, 'config.json');
    writeFileSync(
      cfgFile,
      JSON.stringify({ data: { train: { type: 'text', path: join(work, 'corpus.txt') } }, preprocess: { blockSize: 64, sequencesPerShard: 256 }, storage: { root: work } }),
    );
    const child = spawn(process.execPath, ['bin/finetune.js', 'prepare', cfgFile], { cwd: ROOT, stdio: 'ignore' });
    const dataDir = join(work, 'data');
    // wait until the attempt has written a shard into its private directory, then kill it hard
    const deadline = Date.now() + 60_000;
    for (;;) {
      const tmps = existsSync(dataDir) ? readdirSync(dataDir).filter((n) => n.includes('.tmp-')) : [];
      if (tmps.some((t) => existsSync(join(dataDir, t, 'data')) && readdirSync(join(dataDir, t, 'data')).length > 0)) break;
      if (Date.now() > deadline || child.exitCode !== null) throw new Error('the child never started writing shards');
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const left = readdirSync(dataDir);
    expect(left.length).toBe(1);
    expect(left[0]).toMatch(/\.tmp-/); // nothing at the final name
    const cfg = (await import('../../configs/index.js')).loadConfig(cfgFile);
    const r = await prepareData(cfg);
    expect(r.reused).toBe(false);
    expect(readdirSync(dataDir)).toEqual([r.manifest.fingerprint]);
    await verifyShards(r.dir, r.manifest);
  });
});
