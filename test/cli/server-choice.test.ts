// The server rule of `finetune run`: explicit choice → configured address → Temporal's CLI on PATH → embedded.
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { resolveTarget } from '../../cli/lib/connection.js';
import { findTemporalCli, pickServer, serverKindOf } from '../../cli/lib/server.js';

const home = mkdtempSync(join(tmpdir(), 'ft-choice-'));

it('picks a configured cluster first, then the CLI on PATH, then the embedded server; an explicit choice wins', () => {
  const unset = resolveTarget({ env: { HOME: home } });
  const configured = resolveTarget({ env: { HOME: home, TEMPORAL_ADDRESS: 'temporal.example.com:7233' } });
  expect(pickServer('auto', configured, () => true)).toBe('cluster');
  expect(pickServer('auto', unset, () => true)).toBe('temporal');
  expect(pickServer('auto', unset, () => false)).toBe('embedded');
  expect(pickServer('embedded', configured, () => true)).toBe('embedded');
  expect(serverKindOf(undefined, 'FINETUNE_SERVER')).toBe('auto');
  expect(() => serverKindOf('docker', '--server')).toThrow("--server: 'docker' is not a server choice (auto, cluster, temporal, embedded)");
});

it('finds the temporal CLI on PATH only when it runs (a pyenv shim of an uninstalled tool does not count)', () => {
  const bin = mkdtempSync(join(tmpdir(), 'ft-bin-'));
  const tool = join(bin, 'temporal');
  writeFileSync(tool, '#!/bin/sh\necho "pyenv: temporal: command not found" >&2\nexit 127\n');
  chmodSync(tool, 0o755);
  expect(findTemporalCli({ PATH: bin })).toBeNull();
  writeFileSync(tool, '#!/bin/sh\necho "temporal version 1.9.1 (Server 1.32.0, UI 2.54.1)"\n');
  expect(findTemporalCli({ PATH: bin })).toBe(tool);
  expect(findTemporalCli({ PATH: '/nonexistent' })).toBeNull();
  expect(() => findTemporalCli({ FINETUNE_TEMPORAL_CLI: '/bin/false', PATH: '' })).toThrow(/FINETUNE_TEMPORAL_CLI=\/bin\/false is not a working temporal CLI/);
});
