// Loading, overriding and validating FinetuneConfig. Errors name the file, the field path, what was given and
// what is allowed, so a user can fix the config without reading the schema.
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { jsonSyntaxMessage } from './json.js';
import { FinetuneConfig, type FinetuneConfigInput } from './schemas/index.js';

export * from './schemas/index.js';
export { canonicalJson, fingerprintOf } from './canonical.js';
export { runDetails, runSummary } from './describe.js';
export { describeParallelism, devicesPerWorker, localDevices, rankQueuesOf, usesRankPath, workerLayout, worldSizeOf, type WorkerLayout } from './parallel.js';

/** A configuration that failed to load or validate; `issues` lists every bad field. */
export class ConfigError extends Error {
  readonly code = 'BAD_CONFIG';
  constructor(
    message: string,
    readonly issues: { path: string; message: string }[] = [],
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

function describeValue(v: unknown): string {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 60 ? s.slice(0, 57) + '...' : s;
}

function valueAt(obj: unknown, path: (string | number)[]): unknown {
  let cur: unknown = obj;
  for (const k of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[k];
  }
  return cur;
}

/** One line per issue: `training.learningRate: expected number > 0, got -1`. */
export function formatZodError(err: z.ZodError, input: unknown, source = 'config'): ConfigError {
  const issues = err.issues.map((i) => {
    const path = i.path.join('.') || '(root)';
    let allowed = i.message;
    if (i.code === 'invalid_enum_value') allowed = `one of ${i.options.map((o) => JSON.stringify(o)).join(', ')}`;
    if (i.code === 'invalid_union_discriminator')
      allowed = `one of ${i.options.map((o) => JSON.stringify(o)).join(', ')}`;
    if (i.code === 'unrecognized_keys') {
      const parent = i.path.join('.');
      return {
        path: i.keys.map((k) => (parent ? `${parent}.${k}` : k)).join(', '),
        message: `unknown key${i.keys.length > 1 ? 's' : ''} (not in the schema; check the spelling)`,
      };
    }
    const given = valueAt(input, i.path);
    return { path, message: `${allowed}; given ${given === undefined ? 'nothing' : describeValue(given)}` };
  });
  const text = issues.map((i) => `  ${i.path}: ${i.message}`).join('\n');
  return new ConfigError(`invalid ${source}:\n${text}`, issues);
}

/** Validate a config object (already merged with overrides); throws ConfigError. */
export function parseConfig(input: unknown, source = 'config'): FinetuneConfig {
  const r = FinetuneConfig.safeParse(input);
  if (!r.success) throw formatZodError(r.error, input, source);
  return r.data;
}

/** Parse the value of `--set a.b=value`: JSON when it parses (numbers, booleans, arrays, quoted strings), else a string. */
function parseOverrideValue(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

/** Apply `a.b.c=value` overrides to a plain object (copying, never mutating the input). */
export function applyOverrides(obj: Record<string, unknown>, sets: string[]): Record<string, unknown> {
  const out = structuredClone(obj);
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq <= 0) throw new ConfigError(`--set ${JSON.stringify(s)}: expected key.path=value`);
    const keys = s.slice(0, eq).split('.');
    if (keys.some((k) => k === '' || k === '__proto__' || k === 'constructor' || k === 'prototype'))
      throw new ConfigError(`--set ${JSON.stringify(s)}: bad key path`);
    let cur: Record<string, unknown> = out;
    for (const k of keys.slice(0, -1)) {
      const next = cur[k];
      if (next === undefined) cur[k] = {};
      else if (next === null || typeof next !== 'object' || Array.isArray(next))
        throw new ConfigError(`--set ${JSON.stringify(s)}: ${k} is not an object in the config`);
      cur = cur[k] as Record<string, unknown>;
    }
    cur[keys[keys.length - 1]!] = parseOverrideValue(s.slice(eq + 1));
  }
  return out;
}

/** Make relative paths in sources and tokenizer absolute against `baseDir` (the config file's directory). */
export function resolvePaths(cfg: FinetuneConfig, baseDir: string): FinetuneConfig {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p));
  const fixSource = <S extends { type: string }>(s: S): S =>
    'path' in s ? { ...s, path: Array.isArray(s.path) ? (s.path as string[]).map(abs) : abs(s.path as string) } : s;
  return {
    ...cfg,
    data: {
      ...cfg.data,
      train: fixSource(cfg.data.train),
      validation: cfg.data.validation && fixSource(cfg.data.validation),
    },
    tokenizer: cfg.tokenizer.type === 'huggingface' ? { ...cfg.tokenizer, path: abs(cfg.tokenizer.path) } : cfg.tokenizer,
    model: cfg.model.path ? { ...cfg.model, path: abs(cfg.model.path) } : cfg.model,
    storage: { ...cfg.storage, root: abs(cfg.storage.root) },
  };
}

/**
 * Load a JSON config file, apply `--set` overrides, validate, and resolve relative paths against the file's
 * directory. The `//` key is allowed anywhere at the top level for comments (presets use it for their arithmetic).
 */
export function loadConfig(file: string, sets: string[] = []): FinetuneConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config ${file}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`config ${jsonSyntaxMessage(file, text, e)}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new ConfigError(`config ${file}: expected a JSON object at the top level`);
  const withSets = applyOverrides(stripComments(raw as Record<string, unknown>), sets);
  return resolvePaths(parseConfig(withSets, file), dirname(resolve(file)));
}

/** Remove `//` comment keys (at any depth) before validation. */
export function stripComments(obj: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    if (k === '//') continue;
    out[k] = v && typeof v === 'object' && !Array.isArray(v) ? stripComments(v as Record<string, unknown>) : v;
  }
  return out;
}

export type { FinetuneConfigInput };
