// Argument parsing for the subcommands (node:util parseArgs), with errors that say what was expected.
import { parseArgs, type ParseArgsConfig } from 'node:util';

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, usage: string) {
  try {
    return parseArgs({ args: valuesStartingWithDash(argv, options), options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new Error(`${(e as Error).message}\nusage: finetune ${usage}`, { cause: e });
  }
}

/**
 * `--device-memory -5GB`: parseArgs reads a value that starts with '-' as another option and fails with its own
 * message. A value option followed by something that is not an option it knows takes it as its value (as
 * `--device-memory=-5GB`), so the command's own check names the flag and what it expects.
 */
function valuesStartingWithDash(argv: string[], options: NonNullable<ParseArgsConfig['options']>): string[] {
  const known = (a: string) => {
    const name = a.startsWith('--') ? a.slice(2).split('=')[0]! : null;
    if (name !== null) return name in options;
    return a.length === 2 && Object.values(options).some((o) => o.short === a[1]);
  };
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = argv[i + 1];
    const name = a.startsWith('--') && !a.includes('=') ? a.slice(2) : null;
    if (name && options[name]?.type === 'string' && next !== undefined && next.startsWith('-') && next !== '--' && !known(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}
