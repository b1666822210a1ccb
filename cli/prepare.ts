// `finetune prepare <config.json> [--set key=value]... [--out DIR] [--json]`: the data steps of the pipeline run
// locally, no Temporal: fingerprint, tokenize, shard. Shows progress bars and ends with a summary table.
import { parseArgs } from 'node:util';
import cliProgress from 'cli-progress';
import { loadConfig } from '../configs/index.js';
import { prepareData, type PrepareProgress } from '../datasets/index.js';
import type { SplitStats } from '../datasets/manifest.js';

const USAGE = 'prepare <config.json> [--set key=value]... [--out DIR] [--json]';

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

function progressView(out: NodeJS.WriteStream) {
  if (!out.isTTY) {
    let last = '';
    return {
      update(p: PrepareProgress) {
        const pct = p.totalBytes ? Math.floor((100 * p.bytes) / p.totalBytes / 10) * 10 : 0;
        const line = `${p.stage} ${pct}%`;
        if (line !== last) out.write(`${line}  ${mb(p.bytes)}${p.totalBytes ? ` / ${mb(p.totalBytes)}` : ''}  ${p.sequences} sequences\n`);
        last = line;
      },
      stop() {},
    };
  }
  const multi = new cliProgress.MultiBar(
    { stream: out, hideCursor: true, clearOnComplete: false, fps: 5, format: ' {stage} |{bar}| {percentage}% {done}/{size} MB  {sequences} seq  {rate}' },
    cliProgress.Presets.shades_classic,
  );
  const bars = new Map<string, cliProgress.SingleBar>();
  const started = Date.now();
  return {
    update(p: PrepareProgress) {
      if (p.stage === 'done') return;
      const total = Math.max(1, p.totalBytes ?? p.bytes);
      const secs = (Date.now() - started) / 1000;
      const payload = {
        stage: p.stage.padEnd(8),
        done: (p.bytes / 1e6).toFixed(1),
        size: (total / 1e6).toFixed(1),
        sequences: p.sequences,
        rate: secs > 0 ? `${(p.bytes / 1e6 / secs).toFixed(1)} MB/s` : '',
      };
      let bar = bars.get(p.stage);
      if (!bar) {
        for (const b of bars.values()) b.update(b.getTotal());
        bars.set(p.stage, (bar = multi.create(total, 0, payload)));
      }
      bar.setTotal(total);
      bar.update(Math.min(p.bytes, total), payload);
    },
    stop: () => multi.stop(),
  };
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ')).join('\n');
}

export async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { set: { type: 'string', multiple: true }, out: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    });
  } catch (e) {
    throw new Error(`${(e as Error).message}\nusage: finetune ${USAGE}`, { cause: e });
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(`usage: finetune ${USAGE}`);
    return 0;
  }
  if (positionals.length !== 1) throw new Error(`expected one config file\nusage: finetune ${USAGE}`);
  const cfg = loadConfig(positionals[0]!, values.set ?? []);

  const ac = new AbortController();
  const onSigint = () => ac.abort(new Error('interrupted (Ctrl-C)'));
  process.once('SIGINT', onSigint);
  const view = values.json ? undefined : progressView(process.stderr);
  const t0 = Date.now();
  let result;
  try {
    result = await prepareData(cfg, { outDir: values.out, signal: ac.signal, onProgress: (p) => view?.update(p) });
  } finally {
    view?.stop();
    process.off('SIGINT', onSigint);
  }
  const { dir, manifest: m, reused } = result;
  if (values.json) {
    console.log(JSON.stringify({ dir, reused, manifest: m }, null, 2));
    return 0;
  }
  const row = (name: string, s: SplitStats) => [
    name,
    String(s.examples),
    String(s.sequences),
    String(s.tokens),
    String(s.paddingTokens),
    String(s.lossTokens),
    String(s.truncatedExamples),
    String(s.droppedTokens),
    String(s.shards.length),
  ];
  console.log(
    `\n${reused ? 'reused' : 'prepared'} ${m.mode} blockSize ${m.blockSize}, tokenizer ${m.tokenizer.name} ` +
      `(eos ${m.eosId}, pad ${m.padId}) in ${((Date.now() - t0) / 1000).toFixed(1)}s\n`,
  );
  console.log(
    table([
      ['split', 'examples', 'sequences', 'tokens', 'padding', 'loss tokens', 'truncated', 'dropped', 'shards'],
      row('train', m.splits.train),
      row('validation', m.splits.validation),
    ]),
  );
  console.log(`\n${dir}/manifest.json`);
  return 0;
}
