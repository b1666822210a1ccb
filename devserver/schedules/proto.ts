// @temporalio/proto is CommonJS whose named exports Node's ESM loader cannot see (vitest hides this; plain tsx
// does not), so the runtime value is loaded through require. Types come from the package as usual.
import { createRequire } from 'node:module';
import type { temporal as T } from '@temporalio/proto';

const require = createRequire(import.meta.url);
export const temporal = (require('@temporalio/proto') as { temporal: typeof T }).temporal;
