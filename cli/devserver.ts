// `finetune devserver [--port 7233] [--db FILE] [--namespace default] [--ip 127.0.0.1]`: the embedded
// Temporal-compatible server. Also accepts the Temporal CLI form that @temporalio/testing uses to launch an
// existing-path executable (`server start-dev --port N --namespace NS --ip IP --headless ...`), ignoring the
// flags it does not need, so TestWorkflowEnvironment.createLocal can run on it with no download.
import { startDevServer } from '../devserver/index.js';

const USAGE = `usage: finetune devserver [--port 7233] [--db FILE] [--namespace default] [--ip 127.0.0.1]
                          [--search-attribute Name=Type]... [--time-skipping] [--log]
  --db FILE     SQLite file holding every workflow, timer and task (default: in memory, lost on exit)
  --port 0      picks a free port; the address is printed on one line when the server is ready
  --time-skipping  virtual time for tests: the TestService of @temporalio/testing (createTimeSkipping)`;

// Flags of `temporal server start-dev` that take a value and mean nothing here.
const IGNORED_WITH_VALUE = new Set(['--log-format', '--log-level', '--dynamic-config-value', '--ui-port', '--http-port', '--metrics-port', '--config', '--log-config', '--sqlite-pragma', '--ui-ip', '--ui-public-path', '--ui-asset-path', '--ui-codec-endpoint']);

export interface DevServerArgs {
  port: number;
  ip: string;
  dbFile: string;
  namespace: string;
  searchAttributes: Record<string, string>;
  verbose: boolean;
  timeSkipping: boolean;
}

export function parseArgs(argv: string[]): DevServerArgs {
  const args: DevServerArgs = { port: 7233, ip: '127.0.0.1', dbFile: ':memory:', namespace: 'default', searchAttributes: {}, verbose: false, timeSkipping: false };
  const rest = argv[0] === 'start-dev' ? argv.slice(1) : argv;
  for (let i = 0; i < rest.length; i++) {
    const raw = rest[i]!;
    const [flag, inline] = raw.startsWith('--') && raw.includes('=') ? [raw.slice(0, raw.indexOf('=')), raw.slice(raw.indexOf('=') + 1)] : [raw, undefined];
    const value = (): string => {
      const v = inline ?? rest[++i];
      if (v === undefined) throw new Error(`${flag} needs a value\n${USAGE}`);
      return v;
    };
    switch (flag) {
      case '--port':
      case '-p': {
        const v = value();
        const port = Number(v);
        if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port: '${v}' is not a port number (0-65535)`);
        args.port = port;
        break;
      }
      case '--ip':
        args.ip = value();
        break;
      case '--db':
      case '--db-filename':
      case '-f':
        args.dbFile = value();
        break;
      case '--namespace':
      case '-n':
        args.namespace = value();
        break;
      case '--search-attribute': {
        const v = value();
        const eq = v.indexOf('=');
        if (eq <= 0) throw new Error(`--search-attribute: expected Name=Type, got '${v}'`);
        args.searchAttributes[v.slice(0, eq)] = v.slice(eq + 1);
        break;
      }
      case '--log':
        args.verbose = true;
        break;
      case '--time-skipping':
        args.timeSkipping = true;
        break;
      case '--help':
      case '-h':
        throw Object.assign(new Error(USAGE), { help: true });
      default:
        if (IGNORED_WITH_VALUE.has(flag) && inline === undefined) i++;
        // Other unknown flags (--headless, ...) are ignored, as createLocal may pass newer ones.
    }
  }
  return args;
}

export async function main(argv: string[]): Promise<number> {
  let args: DevServerArgs;
  try {
    args = parseArgs(argv);
  } catch (e) {
    const err = e as Error & { help?: boolean };
    (err.help ? console.log : console.error)(err.message);
    return err.help ? 0 : 2;
  }
  const server = await startDevServer({
    port: args.port,
    ip: args.ip,
    dbFile: args.dbFile,
    namespace: args.namespace,
    searchAttributes: args.searchAttributes,
    timeSkipping: args.timeSkipping,
    log: (line) => {
      if (args.verbose || line.startsWith('error') || line.startsWith('warn')) console.error(`devserver: ${line}`);
    },
  });
  console.log(`Temporal dev server listening on ${server.address} (namespace ${args.namespace}, db ${args.dbFile})`);
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      console.error(`devserver: ${sig}, shutting down`);
      process.off('SIGINT', onInt);
      process.off('SIGTERM', onTerm);
      void server.close().then(resolve);
    };
    const onInt = () => stop('SIGINT');
    const onTerm = () => stop('SIGTERM');
    process.on('SIGINT', onInt);
    process.on('SIGTERM', onTerm);
  });
  return 0;
}
