// Argument parsing for the subcommands (node:util parseArgs), with errors that say what was expected.
import { parseArgs, type ParseArgsConfig } from 'node:util';

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(argv: string[], options: T, usage: string) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new Error(`${(e as Error).message}\nusage: finetune ${usage}`);
  }
}
