// The suite of readme-temporal.test.ts on Temporal's own dev server.
import { runSuiteOn } from '../servers.js';

await runSuiteOn('temporal', () => import('./readme-temporal.test.js'));
