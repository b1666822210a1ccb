// The suite of cli-run.test.ts on Temporal's own dev server.
import { runSuiteOn } from '../servers.js';

await runSuiteOn('temporal', () => import('./cli-run.test.js'));
