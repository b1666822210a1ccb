// The suite of overlapping-attempts.test.ts on Temporal's own dev server.
import { runSuiteOn } from '../servers.js';

await runSuiteOn('temporal', () => import('./overlapping-attempts.test.js'));
