// One error type for the data half of the pipeline. `code` lets activities decide retry policy without parsing
// messages: BAD_INPUT (fix the corpus or config; never retried), CANCELLED (the caller's AbortSignal fired),
// CORRUPT (a prepared result fails its own checks; re-run prepare), IO (disk trouble; worth a retry).
export type DataErrorCode = 'BAD_INPUT' | 'CANCELLED' | 'CORRUPT' | 'IO';

export class DataError extends Error {
  constructor(
    readonly code: DataErrorCode,
    message: string,
    /** Where the problem is: `file:line`, `file row N`, or a shard path. */
    readonly where?: string,
    options?: { cause?: unknown },
  ) {
    super(where ? `${where}: ${message}` : message, options);
    this.name = 'DataError';
  }
  /** BAD_INPUT and CORRUPT cannot be fixed by trying again. */
  get retryable(): boolean {
    return this.code === 'IO';
  }
}

export function badInput(where: string | undefined, message: string, cause?: unknown): DataError {
  return new DataError('BAD_INPUT', message, where, cause === undefined ? undefined : { cause });
}

/** Throw DataError('CANCELLED') when the signal has fired; call between units of work. */
export function checkAborted(signal?: AbortSignal): void {
  if (signal?.aborted) {
    const reason = signal.reason instanceof Error ? signal.reason.message : String(signal.reason ?? 'aborted');
    throw new DataError('CANCELLED', `cancelled: ${reason}`);
  }
}
