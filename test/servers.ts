// The Temporal servers the end-to-end suites run on: the embedded dev server (devserver/) and Temporal's own dev
// server (`temporal server start-dev`, the official CLI). Each suite runs once per server; every difference between
// the two is a bug of the embedded server. Without the CLI the Temporal half is skipped with a note, unless
// FINETUNE_REQUIRE_TEMPORAL_CLI=1 (CI installs the CLI and sets it), which makes a missing CLI an error.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTemporalCli, INSTALL_CLI_HINT } from '../cli/lib/server.js';
import { startDevServer, type DevServer } from '../devserver/index.js';
import { freePort, spawnFinetune, type Proc } from './e2e/procs.js';
import { startTemporalDevServer } from './servers/temporal-cli.js';

export type ServerName = 'embedded' | 'temporal';

const cli = findTemporalCli();
if (!cli && process.env.FINETUNE_REQUIRE_TEMPORAL_CLI === '1')
  throw new Error(`FINETUNE_REQUIRE_TEMPORAL_CLI=1 but Temporal's CLI is not on PATH (or FINETUNE_TEMPORAL_CLI): ${INSTALL_CLI_HINT}`);
if (!cli) process.stderr.write(`[test] Temporal's CLI not found: the suites run on the embedded server only (${INSTALL_CLI_HINT})\n`);

/** The path of the `temporal` CLI the suites use, or null. */
export const TEMPORAL_CLI = cli;

/** Every server the suites run on here: the embedded one, and Temporal's dev server when its CLI is found. */
export const SERVERS: ServerName[] = cli ? ['embedded', 'temporal'] : ['embedded'];

/**
 * The server this test file's suites run on: 'embedded', or 'temporal' inside a `<suite>.temporal.test.ts` twin, which
 * runs the whole suite of `<suite>.test.ts` again on Temporal's dev server (see runSuiteOn).
 */
export function suiteServer(): ServerName {
  return process.env.FINETUNE_TEST_SERVER === 'temporal' ? 'temporal' : 'embedded';
}

/**
 * The body of a `<suite>.temporal.test.ts` twin: `await runSuiteOn('temporal', () => import('./<suite>.test.js'))`.
 * Skips (with the reason) when Temporal's CLI is missing and not required.
 */
export async function runSuiteOn(name: ServerName, load: () => Promise<unknown>): Promise<void> {
  if (name === 'temporal' && !cli) {
    const { it } = await import('vitest');
    it.skip(`on Temporal's dev server: its CLI is not installed (${INSTALL_CLI_HINT})`, () => undefined);
    return;
  }
  process.env.FINETUNE_TEST_SERVER = name;
  await load();
}

export interface TestServer {
  name: ServerName;
  address: string;
  /** Temporal's Web UI (only Temporal's dev server started with `ui: true`). */
  uiUrl?: string;
  dbFile: string;
  /** Kill the server process (SIGKILL by default); its database stays. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Start it again on the same database and port (after kill). */
  restart(): Promise<void>;
  /** Stop it for good. */
  close(): Promise<void>;
  /** What the server printed (process servers). */
  output(): string;
}

export interface ServerOptions {
  /** SQLite file; default a new one in a temp directory. */
  dbFile?: string;
  /** The embedded server in this process (fast; cannot be killed) instead of as a `finetune devserver` process. */
  inProcess?: boolean;
  /** Serve Temporal's Web UI (Temporal's dev server only). */
  ui?: boolean;
  /** Extra namespaces to register. */
  namespaces?: string[];
  /** Custom search attributes to register, name → type (Keyword, Int, ...). */
  searchAttributes?: Record<string, string>;
}

export async function startServer(name: ServerName, o: ServerOptions = {}): Promise<TestServer> {
  const inProcess = name === 'embedded' && o.inProcess;
  const dbFile = o.dbFile ?? (inProcess ? ':memory:' : join(mkdtempSync(join(tmpdir(), `ft-${name}-`)), 'temporal.db'));
  const port = await freePort();
  if (inProcess) {
    let server: DevServer | null = await startDevServer({ port, dbFile });
    return {
      name, address: server.address, dbFile, output: () => '',
      kill: () => Promise.reject(new Error('an in-process server cannot be killed: start it with inProcess false')),
      restart: () => Promise.reject(new Error('an in-process server cannot be restarted')),
      async close() {
        await server?.close();
        server = null;
      },
    };
  }
  if (name === 'temporal') {
    const real = await startTemporalDevServer({ dbFile, port, headless: !o.ui, namespace: o.namespaces?.[0], searchAttributes: o.searchAttributes });
    return { name, address: real.address, uiUrl: o.ui ? real.uiUrl : undefined, dbFile, output: () => '', kill: real.kill, restart: real.restart, close: real.close };
  }
  const address = `127.0.0.1:${port}`;
  let proc: Proc | null = null;
  const launch = async () => {
    proc = spawnFinetune(['devserver', '--port', String(port), '--db', dbFile, ...(o.namespaces ?? []).flatMap((n) => ['--namespace', n]),
      ...Object.entries(o.searchAttributes ?? {}).flatMap(([k, v]) => ['--search-attribute', `${k}=${v}`])]);
    await proc.waitFor(/listening on 127\.0\.0\.1:\d+/, 120_000);
  };
  await launch();
  return {
    name, address, dbFile,
    output: () => proc?.output() ?? '',
    kill: async (signal) => proc?.kill(signal),
    restart: launch,
    close: async () => proc?.kill('SIGKILL'),
  };
}
