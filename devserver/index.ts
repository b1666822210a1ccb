// The embedded Temporal-compatible dev server (see devserver/README.md).
export { startDevServer, type DevServer, type DevServerOptions } from './server.js';
export { ServiceError } from './contract.js';
