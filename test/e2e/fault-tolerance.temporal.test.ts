// The suite of fault-tolerance.test.ts on Temporal's own dev server.
import { runSuiteOn } from '../servers.js';

await runSuiteOn('temporal', () => import('./fault-tolerance.test.js'));
