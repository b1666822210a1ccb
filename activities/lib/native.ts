// The engine is loaded on first use, so CPU-only workers (validate, prepare, bookkeeping) never load the addon.
export type Native = typeof import('../../native/index.js');
let mod: Promise<Native> | null = null;
export function native(): Promise<Native> {
  return (mod ??= import('../../native/index.js'));
}
