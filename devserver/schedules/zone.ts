// Time zones for schedule calendars: UTC without Intl, IANA zones through Intl.DateTimeFormat, and Go's
// time.Date rules for wall-clock → instant (the real server's calendar code depends on exactly those).
import { SpecError } from './cron.js';

export const UTC_NAMES = new Set(['', 'UTC', 'Etc/UTC', 'GMT', 'Etc/GMT']);

/** A time zone: UTC (fast path, no Intl) or an IANA zone read through Intl.DateTimeFormat. */
export interface Zone {
  name: string;
  fmt: Intl.DateTimeFormat | null;
}
export interface Wall {
  y: number;
  mo: number;
  d: number;
  h: number;
  m: number;
  s: number;
}

const zones = new Map<string, Zone>();
export function zoneOf(name: string): Zone {
  let z = zones.get(name);
  if (z) return z;
  if (UTC_NAMES.has(name)) z = { name, fmt: null };
  else {
    try {
      const fmt = new Intl.DateTimeFormat('en-US', {
        timeZone: name, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric',
      });
      z = { name, fmt };
    } catch {
      throw new SpecError(`unknown time zone "${name}" (use an IANA name such as Europe/Berlin or America/New_York, or UTC)`);
    }
  }
  zones.set(name, z);
  return z;
}

/** Wall-clock fields of an instant in a zone. */
export function wallAt(z: Zone, ms: number): Wall {
  if (!z.fmt) {
    const t = new Date(ms);
    return { y: t.getUTCFullYear(), mo: t.getUTCMonth() + 1, d: t.getUTCDate(), h: t.getUTCHours(), m: t.getUTCMinutes(), s: t.getUTCSeconds() };
  }
  const w = { y: 0, mo: 0, d: 0, h: 0, m: 0, s: 0 };
  for (const p of z.fmt.formatToParts(new Date(ms))) {
    const v = Number(p.value);
    if (p.type === 'year') w.y = v;
    else if (p.type === 'month') w.mo = v;
    else if (p.type === 'day') w.d = v;
    else if (p.type === 'hour') w.h = v;
    else if (p.type === 'minute') w.m = v;
    else if (p.type === 'second') w.s = v;
  }
  return w;
}

/** Local minus UTC at an instant, in ms. */
function offsetAt(z: Zone, ms: number): number {
  const t = Math.floor(ms / 1000) * 1000;
  const w = wallAt(z, t);
  return Date.UTC(w.y, w.mo - 1, w.d, w.h, w.m, w.s) - t;
}

/**
 * Wall clock → instant with Go's time.Date rules (which the real server's calendar code relies on): take the offset
 * in force at the wall time read as UTC; if the result falls outside that offset's period, use the offset at the
 * result instead. Out-of-range fields (hour 24) roll over. A wall time inside a DST gap comes out on the other side.
 */
export function wallToMs(z: Zone, y: number, mo: number, d: number, h: number, m: number, s: number): number {
  const local = Date.UTC(y, mo - 1, d, h, m, s);
  if (!z.fmt) return local;
  const off1 = offsetAt(z, local);
  const off2 = offsetAt(z, local - off1);
  return off2 === off1 ? local - off1 : local - off2;
}

/**
 * Validate a ScheduleSpec and compile it into the canonical form: cron strings and calendar strings become
 * structured calendars, `@every` becomes an interval, a cron time zone becomes the spec's time zone.
 * Throws SpecError with every problem found.
 */