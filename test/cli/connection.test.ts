// Connection settings as Temporal's tools write them (@temporalio/envconfig): a profile of a TOML config file,
// TEMPORAL_* variables over it, flags over both; and errors that name the wrong address, TLS or namespace within
// seconds. Against the suite's server (embedded here, Temporal's dev server in the .temporal twin).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, resolveTarget } from '../../cli/lib/connection.js';
import { freePort, spawnFinetune } from '../e2e/procs.js';
import { startServer, suiteServer, type TestServer } from '../servers.js';

const dir = mkdtempSync(join(tmpdir(), 'ft-conn-'));
let server: TestServer;

beforeAll(async () => {
  server = await startServer(suiteServer(), { inProcess: true });
  writeFileSync(join(dir, 'temporal.toml'), [
    '[profile.default]', `address = "${server.address}"`, 'namespace = "default"', '',
    '[profile.cloud]', 'address = "my-ns.a1b2c.tmprl.cloud:7233"', 'namespace = "my-ns.a1b2c"', 'api_key = "secret-key"', '',
    '[profile.missing-ns]', `address = "${server.address}"`, 'namespace = "no-such-namespace"', '',
  ].join('\n'));
});
afterAll(async () => {
  await server?.close();
});

const env = (vars: Record<string, string> = {}) => ({ HOME: dir, TEMPORAL_CONFIG_FILE: join(dir, 'temporal.toml'), ...vars });

describe(`connection settings (${suiteServer()} server)`, () => {
  it('reads the profile, lets TEMPORAL_* override it and flags override both, and says where each came from', () => {
    const def = resolveTarget({ env: env() });
    expect(def).toMatchObject({ address: server.address, namespace: 'default', configured: true, tls: false });
    expect(def.addressSource).toBe(`profile 'default' of ${join(dir, 'temporal.toml')}`);

    const cloud = resolveTarget({ env: env({ TEMPORAL_PROFILE: 'cloud' }) });
    expect(cloud).toMatchObject({ address: 'my-ns.a1b2c.tmprl.cloud:7233', namespace: 'my-ns.a1b2c', tls: true });
    expect(cloud.connectionOptions.apiKey).toBe('secret-key'); // an API key turns TLS on, as for Temporal Cloud

    const over = resolveTarget({ env: env({ TEMPORAL_PROFILE: 'cloud', TEMPORAL_ADDRESS: 'h:1', TEMPORAL_NAMESPACE: 'n1' }) });
    expect(over).toMatchObject({ address: 'h:1', addressSource: 'TEMPORAL_ADDRESS', namespace: 'n1', namespaceSource: 'TEMPORAL_NAMESPACE' });
    const flags = resolveTarget({ address: 'f:2', namespace: 'n2', env: env({ TEMPORAL_ADDRESS: 'h:1' }) });
    expect(flags).toMatchObject({ address: 'f:2', addressSource: '--address', namespace: 'n2', namespaceSource: '--namespace' });
    // A run's config naming its namespace wins over the environment's.
    expect(resolveTarget({ configNamespace: 'runs', env: env({ TEMPORAL_NAMESPACE: 'n1' }) }).namespace).toBe('runs');

    const none = resolveTarget({ env: { HOME: dir, TEMPORAL_ADDRESS: '' } });
    expect(none).toMatchObject({ address: 'localhost:7233', configured: false, addressSource: 'the default' });
    expect(() => resolveTarget({ profile: 'nope', env: env() })).toThrow(/temporal\.toml, profile 'nope'.*not found/);
  });

  it('connects with the profile, and checks the namespace', async () => {
    const client = await connectClient(resolveTarget({ env: env() }));
    await client.connection.close();
    const t0 = Date.now();
    await expect(connectClient(resolveTarget({ env: env({ TEMPORAL_PROFILE: 'missing-ns' }) }))).rejects.toThrow(
      /namespace 'no-such-namespace' \(profile 'missing-ns' of .*temporal\.toml\) does not exist on Temporal at 127\.0\.0\.1:\d+.*temporal operator namespace create/s);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('a wrong address or TLS setting fails within seconds, naming it', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    let t0 = Date.now();
    await expect(connectClient(resolveTarget({ env: { HOME: dir, TEMPORAL_ADDRESS: dead } }))).rejects.toThrow(
      new RegExp(`cannot reach Temporal at ${dead.replace(/\./g, '\\.')} \\(TEMPORAL_ADDRESS\\)`));
    expect(Date.now() - t0).toBeLessThan(10_000);
    t0 = Date.now();
    await expect(connectClient(resolveTarget({ env: { HOME: dir, TEMPORAL_ADDRESS: server.address, TEMPORAL_TLS: 'true' } }))).rejects.toThrow(
      /cannot reach Temporal at 127\.0\.0\.1:\d+ \(TEMPORAL_ADDRESS, TLS\)[^]*(TLS|server speaks TLS)/);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('the CLI uses the profile (schedule list) and exits 1 with the message on a bad namespace', async () => {
    const ok = spawnFinetune(['schedule', 'list'], { ...env(), TEMPORAL_ADDRESS: '', TEMPORAL_NAMESPACE: '' });
    await new Promise((r) => ok.child.once('exit', r));
    expect(ok.child.exitCode, ok.output()).toBe(0);
    const bad = spawnFinetune(['status', 'wf-x', '--namespace', 'nowhere'], { ...env(), TEMPORAL_ADDRESS: '' });
    await new Promise((r) => bad.child.once('exit', r));
    expect(bad.child.exitCode).toBe(1);
    expect(bad.output()).toMatch(/finetune status: namespace 'nowhere' \(--namespace\) does not exist/);
  });
});
