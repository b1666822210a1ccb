// Retry classification in one place. An attempt that cannot succeed by running again (bad config, bad data,
// out of memory, divergence, shape errors) becomes a non-retryable ApplicationFailure whose type is the error's
// code and whose message says what to change; a dead worker, an I/O error or a device error stays retryable.
import { ApplicationFailure, CancelledFailure } from '@temporalio/common';

/** Engine error codes (native/index.ts EngineError.code) that no retry can fix, with what to do instead. */
const ENGINE_NON_RETRYABLE: Record<string, string> = {
  BAD_CONFIG: 'fix the config field named above',
  BAD_SHAPE: 'the data and the model disagree on shapes: check preprocess.blockSize against model.nPositions and the tokenizer against model.vocabSize',
  OUT_OF_MEMORY:
    'lower training.microBatchSize (raising training.gradAccumSteps keeps the tokens per step), set training.recompute to "gelu-layernorm", raise parallelism.zeroStage, or set parallelism.offload.optimizer to "cpu"',
  NON_FINITE_LOSS: 'the loss diverged: lower training.learningRate, raise training.warmupSteps, or keep training.gradClip at 1.0',
};

/** Data error codes (datasets/errors.ts DataError.code) that no retry can fix. */
const DATA_NON_RETRYABLE: Record<string, string> = {
  BAD_INPUT: 'fix the corpus or the data section of the config',
  CORRUPT: 'delete the prepared data directory named above and run again',
};

interface CodedError extends Error {
  code?: unknown;
  hint?: unknown;
  advice?: unknown;
  path?: unknown;
  syscall?: unknown;
}

/**
 * File-system errors by cause (errno codes of Node's fs, or named in an engine IO error's message). A read-only
 * or forbidden path, or a file where a directory must be, fails every attempt the same way: non-retryable, with
 * the real cause. A full disk may be freed meanwhile: retryable, but its message says what to free.
 */
export const STORAGE_NON_RETRYABLE: Record<string, string> = {
  EROFS: 'the file system is read-only: point storage.root (and the data paths) at a writable, shared directory',
  EACCES: 'permission denied: give the worker user write access, or point storage.root at a directory it may write',
  EPERM: 'operation not permitted: point storage.root at a directory the worker may write',
  ENOTDIR: 'a file stands where a directory must be: check storage.root and the paths under it',
};
const ENOSPC_ADVICE = 'no space left on the device: free space under storage.root (old checkpoints, prepared data) or lower checkpoint.keepLast; the activity is retried';

/** The errno code of a file-system error: Node's `code`, or one named in an engine error's message. */
export function errnoOf(e: CodedError): string | undefined {
  if (typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code) && e.code !== 'EngineError') return e.code;
  const m = /\b(EROFS|EACCES|EPERM|ENOTDIR|ENOSPC)\b|(Read-only file system|Permission denied|Not a directory|No space left on device|Operation not permitted)/.exec(e.message ?? '');
  if (!m) return undefined;
  return m[1] ?? { 'Read-only file system': 'EROFS', 'Permission denied': 'EACCES', 'Not a directory': 'ENOTDIR', 'No space left on device': 'ENOSPC', 'Operation not permitted': 'EPERM' }[m[2]!];
}

/** Turn any error from the engine, the data layer or the config into what Temporal should do with it. */
export function classify(err: unknown, where: string): Error {
  if (err instanceof ApplicationFailure || err instanceof CancelledFailure) return err;
  const e: CodedError = err instanceof Error ? err : new Error(String(err));
  const code = typeof e.code === 'string' ? e.code : undefined;
  // Engine errors already end their message with the hint (native/index.ts): name it once.
  const hint = typeof e.hint === 'string' && e.hint && !e.message.includes(e.hint) ? ` (${e.hint})` : '';
  if (e.name === 'ConfigError' || code === 'BAD_CONFIG')
    return ApplicationFailure.create({ message: `${where}: ${e.message}${hint}`, type: 'BAD_CONFIG', nonRetryable: true, cause: e });
  if (code === 'ABORTED' || code === 'CANCELLED') return new CancelledFailure(`${where}: ${e.message}`);
  const errno = errnoOf(e);
  if (errno && errno in STORAGE_NON_RETRYABLE)
    return ApplicationFailure.create({ message: `${where}: ${e.message}${hint}. What to do: ${STORAGE_NON_RETRYABLE[errno]}`, type: errno, nonRetryable: true, cause: e });
  if (errno === 'ENOSPC')
    return ApplicationFailure.create({ message: `${where}: ${e.message}${hint}. What to do: ${ENOSPC_ADVICE}`, type: 'ENOSPC', nonRetryable: false, cause: e });
  if (e.name === 'DataError' && code && code in DATA_NON_RETRYABLE)
    return ApplicationFailure.create({
      message: `${where}: ${e.message}. What to do: ${DATA_NON_RETRYABLE[code]}`,
      type: code === 'BAD_INPUT' ? 'BAD_DATA' : 'CORRUPT_DATA',
      nonRetryable: true,
      cause: e,
    });
  if (code && code in ENGINE_NON_RETRYABLE)
    return ApplicationFailure.create({
      message: `${where}: ${e.message}${hint}. What to do: ${code === 'OUT_OF_MEMORY' ? outOfMemoryAdvice(e) : ENGINE_NON_RETRYABLE[code]}`,
      type: code,
      nonRetryable: true,
      cause: e,
    });
  // IO, DEVICE, INTERNAL, BAD_CHECKPOINT that survived the fallback, and anything unknown: worth another attempt
  // (possibly on another worker, after a CUDA context poisoned by a device error is gone with its process).
  return ApplicationFailure.create({ message: `${where}: ${e.message}${hint}`, type: code ?? e.name ?? 'Error', nonRetryable: false, cause: e });
}

/**
 * What to do about running out of memory, in one place: the engine's pre-flight verdict for this config on this GPU
 * (native/index.ts withEstimate: the settings that make it fit, with numbers) when it could tell, else every setting
 * that lowers memory.
 */
export function outOfMemoryAdvice(e: { advice?: unknown }): string {
  return typeof e.advice === 'string' && e.advice ? e.advice : ENGINE_NON_RETRYABLE.OUT_OF_MEMORY!;
}

/** Divergence detected from the losses the engine returned (it also throws NON_FINITE_LOSS on NaN/Inf itself). */
export function divergence(step: number, loss: number, limit: number): ApplicationFailure {
  return ApplicationFailure.create({
    message: `training diverged at step ${step}: loss ${loss} ${Number.isFinite(loss) ? `exceeds training.divergenceLoss ${limit}` : 'is not finite'}. What to do: ${ENGINE_NON_RETRYABLE.NON_FINITE_LOSS}`,
    type: 'DIVERGED',
    nonRetryable: true,
  });
}
