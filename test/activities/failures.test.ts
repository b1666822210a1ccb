// Retry classification: what no retry can fix becomes a non-retryable ApplicationFailure typed by the error's code,
// with advice; I/O, device and unknown errors stay retryable; cancellation stays cancellation.
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { classify } from '../../activities/lib/failures.js';
import { ConfigError } from '../../configs/index.js';
import { DataError } from '../../datasets/index.js';
import { EngineError } from '../../native/index.js';

const engineError = (code: string, message: string) => Object.assign(Object.create(EngineError.prototype), { name: 'EngineError', code, message }) as Error;

describe('classify', () => {
  it.each([
    ['OUT_OF_MEMORY', /microBatchSize.*gradAccumSteps.*recompute.*zeroStage.*offload/],
    ['NON_FINITE_LOSS', /learningRate.*warmupSteps/],
    ['BAD_SHAPE', /blockSize.*nPositions/],
    ['BAD_CONFIG', /cuda: no device/],
  ])('engine %s is non-retryable with advice', (code, advice) => {
    const f = classify(engineError(code, 'cuda: no device'), 'train steps 0→50') as ApplicationFailure;
    expect(f).toBeInstanceOf(ApplicationFailure);
    expect(f.type).toBe(code);
    expect(f.nonRetryable).toBe(true);
    expect(f.message).toMatch(/^train steps 0→50: /);
    expect(f.message).toMatch(advice);
  });

  it("an OUT_OF_MEMORY whose pre-flight verdict could tell names the verdict's advice instead of the generic list", () => {
    const advice = "needs 31.2 GiB per device, 22.49 GiB available; to fit: set training.recompute to 'gelu-layernorm'";
    const f = classify(Object.assign(engineError('OUT_OF_MEMORY', 'out of GPU memory'), { advice }), 'train steps 0→50') as ApplicationFailure;
    expect(f.type).toBe('OUT_OF_MEMORY');
    expect(f.nonRetryable).toBe(true);
    expect(f.message).toBe(`train steps 0→50: out of GPU memory. What to do: ${advice}`);
  });

  it.each(['IO', 'DEVICE', 'INTERNAL', 'BAD_CHECKPOINT'])('engine %s is retried', (code) => {
    const f = classify(engineError(code, 'disk full'), 'save') as ApplicationFailure;
    expect(f.nonRetryable).toBe(false);
    expect(f.type).toBe(code);
  });

  it('config and data errors are non-retryable; data I/O is retried; aborts stay cancellations', () => {
    expect((classify(new ConfigError('invalid config:\n  training.learningRate: ...'), 'validate') as ApplicationFailure).type).toBe('BAD_CONFIG');
    const bad = classify(new DataError('BAD_INPUT', 'line 3 is not JSON', 'c.jsonl:3'), 'prepare') as ApplicationFailure;
    expect([bad.type, bad.nonRetryable]).toEqual(['BAD_DATA', true]);
    expect(bad.message).toContain('c.jsonl:3');
    expect((classify(new DataError('IO', 'EIO'), 'prepare') as ApplicationFailure).nonRetryable).toBe(false);
    expect(classify(new DataError('CANCELLED', 'cancelled'), 'prepare')).toBeInstanceOf(CancelledFailure);
    expect(classify(engineError('ABORTED', 'aborted'), 'train')).toBeInstanceOf(CancelledFailure);
    expect((classify(new Error('something odd'), 'x') as ApplicationFailure).nonRetryable).toBe(false);
  });

  // Real file-system errors, produced here, not constructed: a file where a directory must be (ENOTDIR), a full
  // device (/dev/full always answers ENOSPC), a read-only sysfs (EPERM or EROFS, whichever the kernel gives).
  it('file-system errors by cause: ENOTDIR/EROFS/EACCES/EPERM non-retryable with the real cause; ENOSPC retried with advice', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ft-fail-'));
    writeFileSync(join(dir, 'file'), 'x');
    const notDir = await mkdir(join(dir, 'file', 'runs'), { recursive: true }).catch((e: Error) => e);
    const f1 = classify(notDir, 'prepare data') as ApplicationFailure;
    expect([f1.type, f1.nonRetryable]).toEqual(['ENOTDIR', true]);
    expect(f1.message).toMatch(/^prepare data: ENOTDIR: not a directory, mkdir .*file\/runs.*What to do: a file stands where a directory must be/);

    const full = await writeFile('/dev/full', 'x'.repeat(1 << 16)).catch((e: Error) => e);
    const f2 = classify(full, 'train steps 0→20') as ApplicationFailure;
    expect([f2.type, f2.nonRetryable]).toEqual(['ENOSPC', false]);
    expect(f2.message).toMatch(/ENOSPC: no space left on device.*free space under storage\.root/);

    const ro = await mkdir('/sys/finetune-probe').catch((e: Error) => e);
    const f3 = classify(ro, 'validate') as ApplicationFailure;
    expect(['EPERM', 'EROFS', 'EACCES']).toContain(f3.type);
    expect(f3.nonRetryable).toBe(true);

    // The engine's IO errors carry the OS message: classified by it, and the hint is named once.
    const io = Object.assign(Object.create(EngineError.prototype), { name: 'EngineError', code: 'IO', message: 'save_checkpoint: Read-only file system\n  hint: check the directory', hint: 'check the directory' }) as Error;
    const f4 = classify(io, 'save') as ApplicationFailure;
    expect([f4.type, f4.nonRetryable]).toEqual(['EROFS', true]);
    expect(f4.message.split('check the directory')).toHaveLength(2);
  });
});

