// Canonical JSON and content fingerprints (huggingface/datasets-style hash chains): sorted keys, no
// whitespace, and a failure, never a random value, when something cannot be hashed.
import { createHash } from 'node:crypto';

/** JSON with object keys sorted at every depth; rejects values JSON cannot represent exactly. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError(`cannot fingerprint non-finite number ${value}`);
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return '[' + value.map(canonicalJson).join(',') + ']';
  if (typeof value === 'object') {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null)
      throw new TypeError(`cannot fingerprint a ${proto?.constructor?.name ?? 'non-plain'} object`);
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return '{' + entries.map(([k, v]) => JSON.stringify(k) + ':' + canonicalJson(v)).join(',') + '}';
  }
  throw new TypeError(`cannot fingerprint a value of type ${typeof value}`);
}

/** sha256 over a chain of parts: parent fingerprints, transform names and versions, canonical arguments. */
export function fingerprintOf(...parts: unknown[]): string {
  const h = createHash('sha256');
  for (const p of parts) {
    const s = typeof p === 'string' ? p : canonicalJson(p);
    h.update(String(s.length)).update(':').update(s).update(';');
  }
  return h.digest('hex');
}
