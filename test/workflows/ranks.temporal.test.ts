// The suite of ranks.test.ts on Temporal's own dev server.
import { runSuiteOn } from '../servers.js';

await runSuiteOn('temporal', () => import('./ranks.test.js'));
