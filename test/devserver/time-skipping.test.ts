// The time-skipping environment of @temporalio/testing on the dev server (devserver/test-server.js with the
// TestService and a virtual clock), so tests can skip hours without the Java test server download.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker, bundleWorkflowCode, DefaultLogger, type WorkflowBundle } from '@temporalio/worker';
import * as activities from './activities.js';
import { workflowsPath, REAL_SERVER } from './env.js';
import type * as wf from './workflows.js';

describe.skipIf(!!REAL_SERVER)('time skipping', () => {
  let env: TestWorkflowEnvironment;
  let bundle: WorkflowBundle;
  beforeAll(async () => {
    const path = fileURLToPath(new URL('../../devserver/test-server.js', import.meta.url));
    [env, bundle] = await Promise.all([
      TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path } } }),
      bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('ERROR') }),
    ]);
  });
  afterAll(async () => env?.teardown());

  it('skips a day of timers and an hour of retry backoff while the workflow waits', async () => {
    const worker = await Worker.create({ connection: env.nativeConnection, taskQueue: 'skip', workflowBundle: bundle, activities });
    const t0 = Date.now();
    const workflowId = randomUUID();
    const elapsed = await worker.runUntil(env.client.workflow.execute<typeof wf.longWait>('longWait', { taskQueue: 'skip', workflowId }));
    expect(elapsed).toBeGreaterThanOrEqual(86_400_000 + 3_600_000);
    expect(Date.now() - t0).toBeLessThan(20_000);
    const history = await env.client.workflow.getHandle(workflowId).fetchHistory();
    await Worker.runReplayHistory({ workflowBundle: bundle }, history, workflowId);
  });

  it('moves time forward with env.sleep and reports it', async () => {
    const before = await env.currentTimeMs();
    await env.sleep('3 hours');
    expect((await env.currentTimeMs()) - before).toBeGreaterThanOrEqual(3 * 3_600_000);
  });
});
