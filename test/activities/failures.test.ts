// Retry classification: what no retry can fix becomes a non-retryable ApplicationFailure typed by the error's code,
// with advice; I/O, device and unknown errors stay retryable; cancellation stays cancellation.
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';
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
});
