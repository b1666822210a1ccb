#!/usr/bin/env node
// The `finetune` command. The project runs from its TypeScript sources through tsx, so `npx finetune` works
// right after `npm install` with no separate build step to forget. Nothing here builds anything: the engine addon
// is built by `npm install` (only when missing) or `npm run build:native`, and loaded on first use.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
let register;
try {
  ({ register } = await import('tsx/esm/api'));
} catch (e) {
  console.error(`finetune: cannot load tsx, which runs the TypeScript sources (${e.message}).\n` +
    `Install the dependencies of ${root}: cd ${JSON.stringify(root)} && npm install`);
  process.exit(1);
}
register();
try {
  await import('../cli/main.ts');
} catch (e) {
  // A failure before main.ts reports anything itself (a broken or moved checkout): say what, never exit silently.
  console.error(`finetune: cannot start from ${root}: ${e?.stack ?? e}`);
  process.exit(1);
}
