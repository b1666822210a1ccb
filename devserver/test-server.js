#!/usr/bin/env node
// The time-skipping test server for @temporalio/testing:
//   TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path: 'devserver/test-server.js' } } })
// launches an existing-path test server as `<path> <port> [extra args]`; this runs the dev server in memory with
// virtual time (TestService) on that port.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli/devserver.ts');
const [port, ...rest] = process.argv.slice(2);
if (!port || !/^\d+$/.test(port)) {
  console.error('usage: devserver/test-server.js <port> [devserver flags]');
  process.exit(2);
}
process.exitCode = await main(['--port', port, '--time-skipping', ...rest]);
