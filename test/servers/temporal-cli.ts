// Temporal's own dev server (`temporal server start-dev` of the Temporal CLI), for tests that compare our embedded
// server with the real one or run end to end on a real server.
//
//   const cli = findTemporalCli();            // FINETUNE_TEMPORAL_CLI, else `temporal` on PATH, else null
//   const real = await startTemporalDevServer({ dbFile: 'state.db' }); // free ports, waits for GetSystemInfo
//   real.address                              // '127.0.0.1:PORT' for Connection.connect / NativeConnection
//   await real.kill('SIGKILL');               // e.g. to test recovery; resolves when the process has exited
//   await real.restart();                     // same binary, ports and database; resolves when it answers again
//   await real.close();                       // at the end: SIGKILL, and the temporary database is removed
//
// Without `dbFile` the server gets a SQLite file in a fresh temporary directory, kept across kill() and restart()
// and removed by close() (or when this process exits normally); a `dbFile` you pass is never removed.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { answers, findTemporalCli, freePort, isFree } from '../../cli/lib/server.js';

export interface TemporalDevServerOptions {
  /** SQLite file for the server's state (default: a new file in a temporary directory). */
  dbFile?: string;
  /** Front-end gRPC port (default: a free port). */
  port?: number;
  /** Web UI port (default: a free port); the UI is only served when `headless` is false. */
  uiPort?: number;
  /** Disable the Web UI (default true). */
  headless?: boolean;
  /** A namespace to create at launch besides `default`. */
  namespace?: string;
  /** Custom search attributes to register at launch, name → type (`Keyword`, `Int`, `Datetime`, ...). */
  searchAttributes?: Record<string, string>;
  /** How long to wait for the server to answer GetSystemInfo (default 60 s). */
  startTimeoutMs?: number;
}

export interface TemporalDevServer {
  /** `127.0.0.1:PORT` of the gRPC front end. */
  address: string;
  /** `http://127.0.0.1:UI_PORT` (served only when not headless). */
  uiUrl: string;
  /** The SQLite file holding the server's state. */
  dbFile: string;
  /** The running server process (a new one after restart()). */
  readonly process: ChildProcess;
  /** Sends `signal` (default SIGKILL) and resolves once the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Kills the server if it still runs, then starts it again on the same database and ports. */
  restart(): Promise<void>;
  /** Kills the server (SIGKILL) and removes the temporary database directory it was given, if any. */
  close(): Promise<void>;
}

/** The Temporal CLI binary: FINETUNE_TEMPORAL_CLI, else a working `temporal` on PATH, else null (as `finetune run`). */
export { findTemporalCli };

export { freePort };

/** Resolves when GetSystemInfo answers at `address`; rejects when `exited()` reports the process gone or time runs out. */
async function waitUntilServing(address: string, timeoutMs: number, exited: () => string | null): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await answers(address, 1000))) {
    const why = exited();
    if (why) throw new Error(`temporal server start-dev exited before serving on ${address}: ${why}`);
    if (Date.now() > until) throw new Error(`temporal server start-dev did not answer GetSystemInfo on ${address} within ${timeoutMs} ms`);
  }
}

/** Starts `temporal server start-dev` and resolves once it answers GetSystemInfo. Throws when no CLI is found. */
export async function startTemporalDevServer(opts: TemporalDevServerOptions = {}): Promise<TemporalDevServer> {
  const bin = findTemporalCli();
  if (!bin) throw new Error('the Temporal CLI was not found: put `temporal` on PATH or set FINETUNE_TEMPORAL_CLI');
  let dbFile = opts.dbFile;
  let tempDir: string | undefined;
  if (!dbFile) {
    const dir = mkdtempSync(join(tmpdir(), 'temporal-dev-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    tempDir = dir;
    dbFile = join(dir, 'temporal.db');
  }
  const port = opts.port ?? (await freePort());
  const uiPort = opts.uiPort ?? (await freePort());
  const args = ['server', 'start-dev', '--db-filename', dbFile, '--ip', '127.0.0.1', '--port', String(port), '--ui-port', String(uiPort), '--log-level', 'error'];
  if (opts.headless ?? true) args.push('--headless');
  if (opts.namespace && opts.namespace !== 'default') args.push('--namespace', opts.namespace);
  for (const [name, type] of Object.entries(opts.searchAttributes ?? {})) args.push('--search-attribute', `${name}=${type}`);
  const address = `127.0.0.1:${port}`;

  let child!: ChildProcess;
  let exitInfo: string | null = null;
  let output = '';
  const launch = async () => {
    exitInfo = null;
    output = '';
    // Something already listening would answer instead of the new server.
    if (!(await isFree(port))) throw new Error(`cannot start temporal server start-dev on port ${port}: it is in use`);
    child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (b: Buffer) => {
      output = (output + b.toString()).slice(-4000);
    };
    child.stdout!.on('data', keep);
    child.stderr!.on('data', keep);
    child.once('error', (e) => (exitInfo = e.message));
    child.once('exit', (code, signal) => (exitInfo = `exit ${code ?? signal}; output: ${output.trim() || '(none)'}`));
    try {
      await waitUntilServing(address, opts.startTimeoutMs ?? 60_000, () => exitInfo);
    } catch (e) {
      child.kill('SIGKILL');
      throw e;
    }
  };
  const kill = (signal: NodeJS.Signals = 'SIGKILL') =>
    new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill(signal);
    });

  await launch();
  return {
    address,
    uiUrl: `http://127.0.0.1:${uiPort}`,
    dbFile,
    get process() {
      return child;
    },
    kill,
    async restart() {
      await kill('SIGKILL');
      await launch();
    },
    async close() {
      await kill('SIGKILL');
      if (tempDir) rmSync(tempDir, { recursive: true, force: true });
    },
  };
}
