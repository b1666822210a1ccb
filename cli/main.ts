// `finetune <command>`: one file per subcommand, loaded on demand so `finetune prepare` never loads Temporal.
const commands: Record<string, { file: string; help: string }> = {
  prepare: { file: './prepare.ts', help: 'prepare <config.json> [--set k=v]... [--out DIR]   tokenize and shard locally' },
  run: { file: './run.ts', help: 'run <config.json> [--set k=v]... [--json]            the whole pipeline as a workflow' },
  start: { file: './start.ts', help: 'start <config.json> [--set k=v]...                  start the workflow, print its id' },
  estimate: { file: './estimate.ts', help: 'estimate <config.json> [--device-memory 16GiB]       per-GPU memory, ZeRO/offload advice' },
  status: { file: './status.ts', help: 'status <workflow-id> [--json]                       progress of a run' },
  worker: { file: './worker.ts', help: 'worker [--address host:port] [--queues a,b] [--rank-queue q]  run workers' },
  schedule: { file: './schedule.ts', help: 'schedule create|list|describe|trigger|pause|delete  scheduled retraining' },
  devserver: { file: './devserver.ts', help: 'devserver [--port 7233] [--db FILE] [--namespace default]' },
  // `server start-dev ...` is how @temporalio/testing launches an existing-path server executable.
  server: { file: './devserver.ts', help: 'server start-dev ...                                (the temporal CLI form of devserver)' },
};

function usage(): string {
  return ['usage: finetune <command> [options]', '', ...Object.values(commands).map((c) => '  ' + c.help)].join('\n');
}

const [cmd, ...rest] = process.argv.slice(2);
if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
  console.log(usage());
  process.exit(cmd ? 0 : 1);
}
const entry = commands[cmd];
if (!entry) {
  console.error(`finetune: unknown command '${cmd}'\n\n${usage()}`);
  process.exit(1);
}
const mod = (await import(entry.file)) as { main: (argv: string[]) => Promise<number | void> };
try {
  const code = await mod.main(cmd === 'server' ? process.argv.slice(3) : rest);
  if (typeof code === 'number') process.exitCode = code;
} catch (e) {
  const err = e as Error & { code?: string };
  console.error(`finetune ${cmd}: ${err.message}`);
  if (process.env.FINETUNE_DEBUG) console.error(err.stack);
  process.exitCode = 1;
}
