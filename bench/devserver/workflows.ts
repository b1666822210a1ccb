// The workload of bench/devserver.ts: `basic` runs one activity and one timer (3 workflow tasks, 16 events).
import { proxyActivities, sleep } from '@temporalio/workflow';
import type * as activities from './activities.js';

const quick = proxyActivities<typeof activities>({ startToCloseTimeout: '10s', retry: { initialInterval: '50ms', maximumAttempts: 3 } });

export async function basic(name: string): Promise<string> {
  const greeting = await quick.greet(name);
  await sleep(50);
  return greeting;
}
