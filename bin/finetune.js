#!/usr/bin/env node
// The `finetune` command. The project runs from its TypeScript sources through tsx, so `npx finetune` works
// right after `npm install` with no separate build step to forget.
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
