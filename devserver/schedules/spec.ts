// Schedule specs as pure functions: validate and canonicalise a ScheduleSpec (cron and calendar strings compiled
// into structured calendars by cron.ts) and compute fire times (zones in zone.ts). Semantics follow the real server
// (temporalio/temporal service/worker/scheduler/calendar.go and spec.go) so that a spec means the same thing here
// as in production: calendar fields are ANDed (day-of-month AND day-of-week, unlike Vixie cron), Sunday is 0 or 7,
// omitted second/minute/hour default to 0, times have one-second resolution, intervals count from the Unix epoch.
// Calendars are read in the spec's time zone (IANA names through Intl; DST gaps and repeated hours are handled
// the way the server's Go code handles them); intervals count from the epoch and ignore the zone.
import { intervalFromMs, MAX_COMMENT, MAX_YEAR, MIN_YEAR, parseCalendar, parseCronString, SpecError, type Calendar, type CalendarStrings, type Interval, type Range } from './cron.js';
import { wallAt, wallToMs, zoneOf, type Zone } from './zone.js';

export * from './cron.js';
export { zoneOf, type Zone } from './zone.js';

/** The canonical, validated spec that is stored and returned by DescribeSchedule. */
export interface Spec {
  calendars: Calendar[];
  intervals: Interval[];
  excludes: Calendar[];
  startMs: number | null;
  endMs: number | null;
  jitterMs: number;
  timezone: string;
}

type LongLike = number | string | { toString(): string } | null | undefined;
type TimeLike = { seconds?: LongLike; nanos?: number | null } | null | undefined;
type RangeInput = { start?: number | null; end?: number | null; step?: number | null };
type StructuredInput = { [K in Exclude<keyof Calendar, 'comment'>]?: RangeInput[] | null } & { comment?: string | null };

/** A decoded temporal.api.schedule.v1.ScheduleSpec (or a plain object of the same shape). */
export interface SpecInput {
  structuredCalendar?: StructuredInput[] | null;
  cronString?: string[] | null;
  calendar?: CalendarStrings[] | null;
  interval?: Array<{ interval?: TimeLike; phase?: TimeLike }> | null;
  excludeCalendar?: CalendarStrings[] | null;
  excludeStructuredCalendar?: StructuredInput[] | null;
  startTime?: TimeLike;
  endTime?: TimeLike;
  jitter?: TimeLike;
  timezoneName?: string | null;
  timezoneData?: Uint8Array | null;
}

/** Bound on consecutive excluded times before giving up (an exclude that covers everything would spin to 2100). */
const MAX_EXCLUDED_IN_A_ROW = 100_000;


/** Timestamp/Duration {seconds: Long, nanos} → ms; null when unset. */
export function timeMs(t: TimeLike): number | null {
  if (!t) return null;
  return Number(String(t.seconds ?? 0)) * 1000 + Math.floor((t.nanos ?? 0) / 1e6);
}

// ─── canonicalisation ─────────────────────────────────────────────────────────────────────────────────────

const FIELD_LIMITS: Array<[Exclude<keyof Calendar, 'comment'>, string, number, number]> = [
  ['second', 'Second', 0, 59],
  ['minute', 'Minute', 0, 59],
  ['hour', 'Hour', 0, 23],
  ['dayOfMonth', 'DayOfMonth', 1, 31],
  ['month', 'Month', 1, 12],
  ['year', 'Year', MIN_YEAR, MAX_YEAR],
  ['dayOfWeek', 'DayOfWeek', 0, 6],
];

/** Validate a structured calendar and normalise its ranges (end < start means the single value start). */
export function normalizeStructured(cal: StructuredInput, what: string): Calendar {
  const errors: string[] = [];
  const out = { comment: cal.comment ?? '' } as Calendar;
  for (const [key, name, min, max] of FIELD_LIMITS) {
    const ranges: Range[] = [];
    for (const r of cal[key] ?? []) {
      const start = r.start ?? 0;
      const end = Math.max(r.end ?? 0, start);
      const step = r.step ?? 0;
      if (start < min || start > max) errors.push(`${name} Start ${start} is not in range [${min}-${max}]`);
      else if (end > max) errors.push(`${name} End ${end} is not in range [${min}-${max}]`);
      else if (step < 0) errors.push(`${name} has negative Step ${step}`);
      else ranges.push({ start, end, step: Math.max(step, 1) });
    }
    // The real server accepts an empty list and then never fires; a schedule that silently never runs is
    // always a mistake, so say so (only year uses the empty list, meaning "every year").
    if (key !== 'year' && (cal[key] ?? []).length === 0) errors.push(`${name} is empty, so the calendar would never match (use * for every ${name})`);
    out[key] = ranges;
  }
  if (out.comment.length > MAX_COMMENT) errors.push(`comment is longer than ${MAX_COMMENT} characters`);
  if (errors.length) throw new SpecError(`${what}: ${errors.join(', ')}`);
  return out;
}

export function canonicalizeSpec(input: SpecInput): Spec {
  const calendars: Calendar[] = [];
  const intervals: Interval[] = [];
  const excludes: Calendar[] = [];
  const errors: string[] = [];
  const add = <T>(list: T[], f: () => T) => {
    try {
      list.push(f());
    } catch (e) {
      if (!(e instanceof SpecError)) throw e;
      errors.push(e.message);
    }
  };

  (input.structuredCalendar ?? []).forEach((c, i) => add(calendars, () => normalizeStructured(c, `structured calendar ${i}`)));
  (input.calendar ?? []).forEach((c, i) => add(calendars, () => prefixed(`calendar ${i}`, () => parseCalendar(c))));
  let cronZone: string | undefined;
  for (const cs of input.cronString ?? []) {
    try {
      const parsed = parseCronString(cs);
      if (cronZone !== undefined && cronZone !== parsed.timezone) throw new SpecError('cron strings have conflicting time zones');
      cronZone = parsed.timezone;
      if (parsed.calendar) calendars.push(parsed.calendar);
      if (parsed.interval) intervals.push(parsed.interval);
    } catch (e) {
      if (!(e instanceof SpecError)) throw e;
      errors.push(e.message);
    }
  }
  (input.interval ?? []).forEach((iv, i) => {
    const every = timeMs(iv.interval) ?? 0;
    const phase = timeMs(iv.phase) ?? 0;
    add(intervals, () => intervalFromMs(every, phase, `${i} (every ${every / 1000}s, offset ${phase / 1000}s)`));
  });
  (input.excludeStructuredCalendar ?? []).forEach((c, i) => add(excludes, () => normalizeStructured(c, `exclude calendar ${i}`)));
  (input.excludeCalendar ?? []).forEach((c, i) => add(excludes, () => prefixed(`exclude calendar ${i}`, () => parseCalendar(c))));

  let timezone = input.timezoneName ?? '';
  if (cronZone) {
    if (timezone && timezone !== cronZone) errors.push(`cron time zone "${cronZone}" conflicts with time zone "${timezone}"`);
    timezone ||= cronZone;
  }
  try {
    zoneOf(timezone);
    if (input.timezoneData && input.timezoneData.length > 0) {
      throw new SpecError('timezone_data is not supported: name the zone in timezone_name (IANA name) instead');
    }
  } catch (e) {
    if (!(e instanceof SpecError)) throw e;
    errors.push(e.message);
  }

  const startMs = timeMs(input.startTime);
  const endMs = timeMs(input.endTime);
  if (startMs !== null && endMs !== null && endMs < startMs) errors.push('end time is before start time');
  const jitterMs = timeMs(input.jitter) ?? 0;
  if (jitterMs < 0) errors.push('jitter is negative');
  if (errors.length) throw new SpecError(errors.join('; '));
  return { calendars, intervals, excludes, startMs, endMs, jitterMs, timezone };
}

function prefixed<T>(what: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof SpecError) throw new SpecError(`${what}: ${e.message}`);
    throw e;
  }
}

/** Canonical spec → a plain object for temporal.api.schedule.v1.ScheduleSpec.fromObject. */
export function specToProto(spec: Spec): Record<string, unknown> {
  const ts = (ms: number) => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 });
  const cal = (c: Calendar) => ({ ...c });
  return {
    structuredCalendar: spec.calendars.map(cal),
    interval: spec.intervals.map((iv) => ({
      interval: { seconds: iv.everySec },
      ...(iv.phaseSec ? { phase: { seconds: iv.phaseSec } } : {}),
    })),
    excludeStructuredCalendar: spec.excludes.map(cal),
    ...(spec.startMs !== null ? { startTime: ts(spec.startMs) } : {}),
    ...(spec.endMs !== null ? { endTime: ts(spec.endMs) } : {}),
    ...(spec.jitterMs ? { jitter: ts(spec.jitterMs) } : {}),
    timezoneName: spec.timezone,
  };
}

// ─── fire times ───────────────────────────────────────────────────────────────────────────────────────────

interface Matcher {
  second: boolean[];
  minute: boolean[];
  hour: boolean[];
  dayOfMonth: boolean[];
  month: boolean[];
  dayOfWeek: boolean[];
  year: Set<number> | null; // null = every year
}

function bits(ranges: Range[], size: number): boolean[] {
  const out = new Array<boolean>(size).fill(false);
  for (const r of ranges) for (let v = r.start; v <= r.end && v < size; v += r.step) out[v] = true;
  return out;
}

function compileCalendar(c: Calendar): Matcher {
  let year: Set<number> | null = null;
  if (c.year.length) {
    year = new Set();
    for (const r of c.year) for (let v = r.start; v <= r.end; v += r.step) year.add(v);
  }
  return {
    second: bits(c.second, 60),
    minute: bits(c.minute, 60),
    hour: bits(c.hour, 24),
    dayOfMonth: bits(c.dayOfMonth, 32),
    month: bits(c.month, 13),
    dayOfWeek: bits(c.dayOfWeek, 7),
    year,
  };
}

const isLeap = (y: number) => y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0);
export const daysInMonth = (m: number, y: number) => (m === 2 ? (isLeap(y) ? 29 : 28) : [4, 6, 9, 11].includes(m) ? 30 : 31);
const weekday = (y: number, m: number, d: number) => new Date(Date.UTC(y, m - 1, d)).getUTCDay();

function matches(cc: Matcher, ms: number, z: Zone): boolean {
  const w = wallAt(z, ms);
  return (
    (cc.year === null || cc.year.has(w.y)) &&
    cc.month[w.mo]! &&
    cc.dayOfMonth[w.d]! &&
    cc.dayOfWeek[weekday(w.y, w.mo, w.d)]! &&
    cc.hour[w.h]! &&
    cc.minute[w.m]! &&
    cc.second[w.s]!
  );
}

const HOUR = 3_600_000;

/**
 * The first whole second strictly after `afterMs` that the calendar matches in zone `z`, or null (none until 2100).
 * A port of the server's compiledCalendar.next: wall-clock fields are matched from the outside in; a wall time
 * that does not exist (DST gap) is skipped, and a repeated hour (DST end) is walked twice, the first time shifted
 * by `dst` = one hour.
 */
function calendarNext(cc: Matcher, afterMs: number, z: Zone): number | null {
  const base = Math.floor(afterMs / 1000) * 1000;
  let { y, mo, d, h, m, s } = wallAt(z, base);
  let dst = z.fmt && wallAt(z, base - HOUR).h === h ? HOUR : 0; // already in the second copy of a repeated hour
  s += 1;
  outer: for (;;) {
    if (s >= 60) { m += 1; s = 0; }
    if (m >= 60) {
      const prev = wallToMs(z, y, mo, d, h, 0, 0);
      h += 1; m = 0;
      // Two real hours between consecutive wall hours: the hour just done repeats; walk it again, an hour later.
      if (dst === 0 && wallToMs(z, y, mo, d, h, 0, 0) - prev > HOUR) { h -= 1; dst = HOUR; }
      else dst = 0;
    }
    if (h >= 24) { d += 1; h = 0; }
    if (d > daysInMonth(mo, y)) { mo += 1; d = 1; }
    if (mo > 12) { y += 1; mo = 1; }
    if (y > MAX_YEAR) return null;
    if (cc.year !== null && !cc.year.has(y)) {
      y += 1; mo = 1; d = 1; h = 0; m = 0; s = 0; dst = 0;
      continue;
    }
    while (!cc.month[mo]) {
      mo += 1; d = 1; h = 0; m = 0; s = 0; dst = 0;
      if (mo > 12) continue outer;
    }
    while (!cc.dayOfMonth[d] || !cc.dayOfWeek[weekday(y, mo, d)]) {
      d += 1; h = 0; m = 0; s = 0; dst = 0;
      if (d > daysInMonth(mo, y)) continue outer;
    }
    while (!cc.hour[h]) {
      h += 1; m = 0; s = 0; dst = 0;
      if (h >= 24) continue outer;
    }
    while (!cc.minute[m]) {
      m += 1; s = 0;
      if (m >= 60) continue outer;
    }
    while (!cc.second[s]) {
      s += 1;
      if (s >= 60) continue outer;
    }
    const t = wallToMs(z, y, mo, d, h, m, s);
    if (z.fmt && wallAt(z, t).h !== h) {
      // This wall time does not exist (skipped by a DST change): move on to the next hour.
      h += 1; m = 0; s = 0;
      continue;
    }
    return t + dst;
  }
}

export interface CompiledSpec {
  spec: Spec;
  zone: Zone;
  calendars: Matcher[];
  excludes: Matcher[];
}

export function compileSpec(spec: Spec): CompiledSpec {
  return { spec, zone: zoneOf(spec.timezone), calendars: spec.calendars.map(compileCalendar), excludes: spec.excludes.map(compileCalendar) };
}

/** Earliest calendar or interval time strictly after `afterMs`, ignoring start/end/excludes/jitter. */
function rawNext(cs: CompiledSpec, afterMs: number): number | null {
  let best = Infinity;
  for (const cal of cs.calendars) {
    const t = calendarNext(cal, afterMs, cs.zone);
    if (t !== null && t < best) best = t;
  }
  const sec = Math.floor(afterMs / 1000);
  for (const iv of cs.spec.intervals) {
    const t = (Math.floor((sec - iv.phaseSec) / iv.everySec) + 1) * iv.everySec + iv.phaseSec;
    if (t * 1000 < best) best = t * 1000;
  }
  return best === Infinity ? null : best;
}

/** FNV-1a: a stable 32-bit hash so that a schedule's jitter for a given time is the same after a restart. */
function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export interface NextTime {
  /** The time the spec names. */
  nominalMs: number;
  /** The nominal time plus jitter: when the action is taken. */
  actualMs: number;
}

/**
 * The next action time strictly after `afterMs`, honouring start/end time, excludes and jitter, or null when the
 * schedule has no more times. `seed` makes jitter differ between schedules (use the schedule's identity).
 */
export function getNextTime(cs: CompiledSpec, afterMs: number, seed = ''): NextTime | null {
  const { startMs, endMs, jitterMs } = cs.spec;
  // Jump to just before the start so that the start itself can match.
  let after = startMs !== null ? Math.max(afterMs, startMs - 1000) : afterMs;
  let nominal: number | null = null;
  for (let n = 0; ; n++) {
    nominal = rawNext(cs, after);
    if (nominal === null || (endMs !== null && nominal > endMs) || new Date(nominal).getUTCFullYear() > MAX_YEAR) return null;
    if (!cs.excludes.some((ex) => matches(ex, nominal!, cs.zone))) break;
    if (n >= MAX_EXCLUDED_IN_A_ROW) return null;
    after = nominal;
  }
  let maxJitter = jitterMs;
  if (maxJitter > 0) {
    // Jitter never pushes an action past the next nominal time.
    const following = rawNext(cs, nominal);
    if (following !== null) maxJitter = Math.min(maxJitter, following - nominal);
  }
  const jitter = maxJitter > 0 ? Math.floor((hash32(`${nominal}/${seed}`) / 2 ** 32) * maxJitter) : 0;
  return { nominalMs: nominal, actualMs: nominal + jitter };
}

/** The next `n` action times (after jitter) strictly after `afterMs`. */
export function nextTimes(spec: Spec | CompiledSpec, afterMs: number, n: number, seed = ''): number[] {
  const cs = 'calendars' in spec && 'excludes' in spec && 'spec' in spec ? (spec as CompiledSpec) : compileSpec(spec as Spec);
  const out: number[] = [];
  let t = afterMs;
  while (out.length < n) {
    const next = getNextTime(cs, t, seed);
    if (!next) break;
    out.push(next.actualMs);
    t = next.nominalMs;
  }
  return out;
}
