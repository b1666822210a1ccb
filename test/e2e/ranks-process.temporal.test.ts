// The suite of ranks-process.test.ts on Temporal's own dev server.
import { runSuiteOn } from '../servers.js';

await runSuiteOn('temporal', () => import('./ranks-process.test.js'));
