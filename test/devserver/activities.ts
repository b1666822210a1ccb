// Activities for the dev-server conformance suite; real ones (heartbeats, cancellation), no mocks.
import { Context, ApplicationFailure, CancelledFailure, CompleteAsyncError, sleep } from '@temporalio/activity';

export async function greet(name: string): Promise<string> {
  return `Hello, ${name}!`;
}

/** Attempt 1: heartbeat steps 1..3 then fail. Attempt 2: resume after the last heartbeat and finish. */
export async function resumable(steps: number): Promise<{ attempt: number; resumedFrom: number }> {
  const ctx = Context.current();
  const start = (ctx.info.heartbeatDetails as number | undefined) ?? 0;
  for (let i = start + 1; i <= steps; i++) {
    ctx.heartbeat(i);
    if (ctx.info.attempt === 1 && i === 3) throw new Error('worker lost its GPU (simulated)');
  }
  return { attempt: ctx.info.attempt, resumedFrom: start };
}

export async function hang(): Promise<void> {
  await Context.current().sleep(60_000).catch(() => undefined);
}

export async function heartbeatOnceThenHang(): Promise<void> {
  Context.current().heartbeat('once');
  await Context.current().sleep(60_000).catch(() => undefined);
}

export async function failNonRetryable(): Promise<void> {
  throw ApplicationFailure.nonRetryable('bad config: block_size must be positive', 'BadConfig', Context.current().info.attempt);
}

export async function heartbeatUntilCancelled(): Promise<string> {
  const ctx = Context.current();
  for (;;) {
    ctx.heartbeat();
    try {
      await ctx.sleep(100);
    } catch (e) {
      if (e instanceof CancelledFailure) throw e;
      throw e;
    }
  }
}

/** Sleeps in small heartbeating steps; attempts after a crash resume from the heartbeat. */
export async function slowStep(totalMs: number): Promise<number> {
  const ctx = Context.current();
  let done = (ctx.info.heartbeatDetails as number | undefined) ?? 0;
  while (done < totalMs) {
    await sleep(100);
    done += 100;
    ctx.heartbeat(done);
  }
  return ctx.info.attempt;
}

/** Task tokens of activities that complete asynchronously; the test completes them through the client. */
export const asyncTokens: Uint8Array[] = [];

export async function completeLater(): Promise<string> {
  asyncTokens.push(Context.current().info.taskToken);
  throw new CompleteAsyncError();
}

export async function failFirstAttempt(): Promise<number> {
  if (Context.current().info.attempt === 1) throw new Error('transient failure (simulated)');
  return Context.current().info.attempt;
}
