// Replays the committed reference histories (test/histories/finetune*.json) through the current workflow code:
// a change that would break runs in flight fails here (put it behind patched()). Refresh with
// `UPDATE_HISTORIES=1 npx vitest run test/workflows/finetune.test.ts` only for intended, compatible changes.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils.js';
import { temporal } from '@temporalio/proto';
import { expect, it } from 'vitest';
import { replay } from './helpers.js';

it('replays the committed finetune histories', async () => {
  const dir = join(__dirname, '../histories');
  const files = readdirSync(dir).filter((f) => f.startsWith('finetune') && f.endsWith('.json'));
  expect(files.length).toBeGreaterThan(0);
  await replay(files.map((f) => ({ workflowId: f, history: load(JSON.parse(readFileSync(join(dir, f), 'utf8'))) })));
});

/** `temporal workflow show --output json` form, or {encoding: 'base64', history} (protobuf bytes). */
function load(j: { encoding?: string; history?: string }) {
  if (j.encoding === 'base64' && j.history) return temporal.api.history.v1.History.decode(Buffer.from(j.history, 'base64'));
  return historyFromJSON(j);
}
