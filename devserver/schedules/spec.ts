// Schedule specs as pure functions: parse cron strings and calendar strings into structured calendars, validate
// and canonicalise a ScheduleSpec, and compute fire times. Semantics follow the real server
// (temporalio/temporal service/worker/scheduler/calendar.go and spec.go) so that a spec means the same thing here
// as in production: calendar fields are ANDed (day-of-month AND day-of-week, unlike Vixie cron), Sunday is 0 or 7,
// omitted second/minute/hour default to 0, times have one-second resolution, intervals count from the Unix epoch.
// Time zones: UTC only (the spec is rejected, not silently reinterpreted, when it names another zone).

export class SpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SpecError';
  }
}

/** Inclusive range with step; canonical form has end >= start and step >= 1. */
export interface Range {
  start: number;
  end: number;
  step: number;
}

export interface Calendar {
  second: Range[];
  minute: Range[];
  hour: Range[];
  dayOfMonth: Range[];
  month: Range[];
  /** Empty = every year. */
  year: Range[];
  /** 0 = Sunday … 6 = Saturday. */
  dayOfWeek: Range[];
  comment: string;
}

/** Fires at epoch + n*every + phase (whole seconds). */
export interface Interval {
  everySec: number;
  phaseSec: number;
}

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

/** The string form of a calendar (temporal.api.schedule.v1.CalendarSpec); empty fields take defaults. */
export interface CalendarStrings {
  second?: string | null;
  minute?: string | null;
  hour?: string | null;
  dayOfMonth?: string | null;
  month?: string | null;
  year?: string | null;
  dayOfWeek?: string | null;
  comment?: string | null;
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

export const MIN_YEAR = 2000;
export const MAX_YEAR = 2100; // the real server stops looking for calendar times after 2100
const MAX_COMMENT = 200;
/** Bound on consecutive excluded times before giving up (an exclude that covers everything would spin to 2100). */
const MAX_EXCLUDED_IN_A_ROW = 100_000;

/** Timestamp/Duration {seconds: Long, nanos} → ms; null when unset. */
export function timeMs(t: TimeLike): number | null {
  if (!t) return null;
  return Number(String(t.seconds ?? 0)) * 1000 + Math.floor((t.nanos ?? 0) / 1e6);
}

// ─── parsing strings ──────────────────────────────────────────────────────────────────────────────────────

const MONTHS = ['january', 'february', 'march', 'april', 'may', 'june', 'july', 'august', 'september', 'october', 'november', 'december'];
const DAYS = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday'];
type Mode = 'int' | 'year' | 'month' | 'dow';

/** One value: a decimal integer, or a month (>= 3 letters) / weekday (>= 2 letters) name prefix. */
function parseValue(s: string, min: number, max: number, mode: Mode): number | null {
  const lower = s.toLowerCase();
  if (mode === 'month' && s.length >= 3) {
    const i = MONTHS.findIndex((m) => m.startsWith(lower));
    if (i >= 0) return i + 1 >= min && i + 1 <= max ? i + 1 : null;
  } else if (mode === 'dow' && s.length >= 2) {
    const i = DAYS.findIndex((d) => d.startsWith(lower));
    if (i >= 0) return i >= min && i <= max ? i : null;
  }
  if (!/^\d+$/.test(s)) return null;
  const v = Number(s);
  return v >= min && v <= max ? v : null;
}

/**
 * One calendar field string → ranges. Accepts `*`, `x`, `x-z`, `x-z/y`, `x/y` (x to max by y), `*∕y` and
 * comma lists of those. Day-of-week 7 becomes Sunday (0), as the real server does.
 */
export function parseField(input: string, field: string, def: string, min: number, max: number, mode: Mode): Range[] {
  const s = input.trim() === '' ? def : input.trim();
  if (s === '*' && mode === 'year') return []; // every year is the empty list
  const out: Range[] = [];
  for (let part of s.split(',')) {
    let step = 1;
    let hasStep = false;
    const slashes = part.split('/').length - 1;
    if (slashes > 1) throw new SpecError(`${field} has too many slashes in "${part}"`);
    if (slashes === 1) {
      const [p, stepStr = ''] = part.split('/') as [string, string];
      if (!/^\d+$/.test(stepStr) || Number(stepStr) < 1) throw new SpecError(`${field} has invalid step "${stepStr}" in "${part}"`);
      part = p;
      step = Number(stepStr);
      hasStep = true;
    }
    let start = min;
    let end = max;
    if (part !== '*') {
      if (part.includes('-')) {
        const pieces = part.split('-');
        if (pieces.length !== 2) throw new SpecError(`${field} has too many dashes in "${part}"`);
        const a = parseValue(pieces[0]!, min, max, mode);
        if (a === null) throw new SpecError(`${field} Start "${pieces[0]}" is not in range [${min}-${max}]`);
        const b = parseValue(pieces[1]!, a, max, mode);
        if (b === null) throw new SpecError(`${field} End "${pieces[1]}" is before Start or not in range [${min}-${max}]`);
        start = a;
        end = b;
      } else {
        const a = parseValue(part, min, max, mode);
        if (a === null) throw new SpecError(`${field} "${part}" is not in range [${min}-${max}]`);
        start = a;
        // "x/y" means x to the maximum by y; a bare "x" is just x.
        end = hasStep ? max : a;
      }
    }
    if (mode === 'dow' && end === 7) {
      // Sunday may be written 7: add a 0 where 7 would have matched, then clip the range to 6.
      if ((7 - start) % step === 0 && (step > 1 || start > 1)) {
        out.push({ start: 0, end: 0, step: 1 });
        if (start === 7) continue;
      }
      end = 6;
    }
    out.push({ start, end, step });
  }
  return out;
}

function collect<T>(errors: string[], f: () => T, fallback: T): T {
  try {
    return f();
  } catch (e) {
    if (!(e instanceof SpecError)) throw e;
    errors.push(e.message);
    return fallback;
  }
}

/** CalendarSpec strings → structured calendar; defaults: second/minute/hour 0, the rest `*`. */
export function parseCalendar(cal: CalendarStrings): Calendar {
  const errors: string[] = [];
  const f = (s: string | null | undefined, field: string, def: string, min: number, max: number, mode: Mode) =>
    collect(errors, () => parseField(s ?? '', field, def, min, max, mode), []);
  const out: Calendar = {
    second: f(cal.second, 'Second', '0', 0, 59, 'int'),
    minute: f(cal.minute, 'Minute', '0', 0, 59, 'int'),
    hour: f(cal.hour, 'Hour', '0', 0, 23, 'int'),
    dayOfMonth: f(cal.dayOfMonth, 'DayOfMonth', '*', 1, 31, 'int'),
    month: f(cal.month, 'Month', '*', 1, 12, 'month'),
    year: f(cal.year, 'Year', '*', MIN_YEAR, MAX_YEAR, 'year'),
    dayOfWeek: f(cal.dayOfWeek, 'DayOfWeek', '*', 0, 7, 'dow'),
    comment: cal.comment ?? '',
  };
  if (out.comment.length > MAX_COMMENT) errors.push(`comment is longer than ${MAX_COMMENT} characters`);
  if (errors.length) throw new SpecError(errors.join(', '));
  return out;
}

const UNITS_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Go duration syntax plus days, as the server's timestamp.ParseDuration: `90s`, `1h30m`, `1.5h`, `2d`. → ms */
export function parseDuration(s: string): number {
  const re = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)/gy;
  if (!s) throw new SpecError('empty duration');
  let total = 0;
  let pos = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * UNITS_MS[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos !== s.length) throw new SpecError(`invalid duration "${s}" (use e.g. 30s, 15m, 1h30m, 2d)`);
  return total;
}

const PREDEFINED: Record<string, string> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};

export interface ParsedCron {
  calendar?: Calendar;
  interval?: Interval;
  /** From a `TZ=`/`CRON_TZ=` prefix; '' when none. */
  timezone: string;
}

/**
 * A cron string: `[CRON_TZ=zone ]fields[ # comment]` where fields are 5 (minute hour dom month dow),
 * 6 (… year) or 7 (second minute hour dom month dow year) wide, or `@hourly` etc., or `@every 1h[/15m]`.
 */
export function parseCronString(input: string): ParsedCron {
  let c = input.trim();
  let timezone = '';
  if (c.startsWith('TZ=') || c.startsWith('CRON_TZ=')) {
    const sp = c.indexOf(' ');
    if (sp < 0) throw new SpecError(`cron string "${input}" has a time zone but no fields`);
    timezone = c.slice(c.indexOf('=') + 1, sp);
    c = c.slice(sp + 1);
  }
  const hash = c.indexOf('#');
  const comment = hash >= 0 ? c.slice(hash + 1).trim() : '';
  if (hash >= 0) c = c.slice(0, hash);
  c = c.trim();
  if (c.startsWith('@every')) {
    const rest = c.slice('@every'.length).trim();
    if (!rest) throw new SpecError(`cron string "${input}" has no interval after @every`);
    const [every, phase] = rest.split('/') as [string, string | undefined];
    return { interval: intervalFromMs(parseDuration(every), phase ? parseDuration(phase) : 0, `@every ${rest}`), timezone };
  }
  c = PREDEFINED[c] ?? c;
  const fields = c.split(/\s+/).filter(Boolean);
  const cal: CalendarStrings = { comment };
  if (fields.length === 5) [cal.minute, cal.hour, cal.dayOfMonth, cal.month, cal.dayOfWeek] = fields;
  else if (fields.length === 6) [cal.minute, cal.hour, cal.dayOfMonth, cal.month, cal.dayOfWeek, cal.year] = fields;
  else if (fields.length === 7) [cal.second, cal.minute, cal.hour, cal.dayOfMonth, cal.month, cal.dayOfWeek, cal.year] = fields;
  else throw new SpecError(`cron string "${input}" does not have 5-7 fields (minute hour day-of-month month day-of-week)`);
  try {
    return { calendar: parseCalendar(cal), timezone };
  } catch (e) {
    if (e instanceof SpecError) throw new SpecError(`cron string "${input}": ${e.message}`);
    throw e;
  }
}

function intervalFromMs(everyMs: number, phaseMs: number, what: string): Interval {
  if (everyMs < 1000) throw new SpecError(`interval ${what} is too small (minimum 1s)`);
  if (everyMs % 1000 !== 0 || phaseMs % 1000 !== 0) {
    throw new SpecError(`interval ${what} must be whole seconds (schedules have one-second resolution)`);
  }
  if (phaseMs < 0) throw new SpecError(`interval ${what} has a negative offset`);
  if (phaseMs >= everyMs) throw new SpecError(`interval ${what} has an offset that is not smaller than the interval`);
  return { everySec: everyMs / 1000, phaseSec: phaseMs / 1000 };
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

const UTC_NAMES = new Set(['', 'UTC', 'Etc/UTC', 'GMT', 'Etc/GMT', 'Z']);

function checkZone(name: string, where: string): void {
  if (!UTC_NAMES.has(name)) {
    throw new SpecError(
      `time zone "${name}" (${where}) is not supported: this dev server interprets schedules in UTC only; ` +
        'write the times in UTC and leave the time zone unset',
    );
  }
}

/**
 * Validate a ScheduleSpec and compile it into the canonical form: cron strings and calendar strings become
 * structured calendars, `@every` becomes an interval, a cron time zone becomes the spec's time zone.
 * Throws SpecError with every problem found.
 */
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
    checkZone(timezone, 'timezone_name');
    if (input.timezoneData && input.timezoneData.length > 0) {
      throw new SpecError('timezone_data is not supported: this dev server interprets schedules in UTC only');
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

function matches(cc: Matcher, ms: number): boolean {
  const t = new Date(ms);
  const y = t.getUTCFullYear();
  return (
    (cc.year === null || cc.year.has(y)) &&
    cc.month[t.getUTCMonth() + 1]! &&
    cc.dayOfMonth[t.getUTCDate()]! &&
    cc.dayOfWeek[t.getUTCDay()]! &&
    cc.hour[t.getUTCHours()]! &&
    cc.minute[t.getUTCMinutes()]! &&
    cc.second[t.getUTCSeconds()]!
  );
}

/** The first whole second strictly after `afterMs` that the calendar matches, or null (none until 2100). */
function calendarNext(cc: Matcher, afterMs: number): number | null {
  const t = new Date(Math.floor(afterMs / 1000) * 1000 + 1000);
  let y = t.getUTCFullYear(), mo = t.getUTCMonth() + 1, d = t.getUTCDate();
  let h = t.getUTCHours(), m = t.getUTCMinutes(), s = t.getUTCSeconds();
  // Match fields from the outside in; a field that cannot match resets the finer ones and carries up.
  outer: for (;;) {
    if (s >= 60) (m += 1), (s = 0);
    if (m >= 60) (h += 1), (m = 0);
    if (h >= 24) (d += 1), (h = 0);
    if (d > daysInMonth(mo, y)) (mo += 1), (d = 1);
    if (mo > 12) (y += 1), (mo = 1);
    if (y > MAX_YEAR) return null;
    if (cc.year !== null && !cc.year.has(y)) {
      (y += 1), (mo = 1), (d = 1), (h = 0), (m = 0), (s = 0);
      continue;
    }
    while (!cc.month[mo]) {
      (mo += 1), (d = 1), (h = 0), (m = 0), (s = 0);
      if (mo > 12) continue outer;
    }
    while (!cc.dayOfMonth[d] || !cc.dayOfWeek[weekday(y, mo, d)]) {
      (d += 1), (h = 0), (m = 0), (s = 0);
      if (d > daysInMonth(mo, y)) continue outer;
    }
    while (!cc.hour[h]) {
      (h += 1), (m = 0), (s = 0);
      if (h >= 24) continue outer;
    }
    while (!cc.minute[m]) {
      (m += 1), (s = 0);
      if (m >= 60) continue outer;
    }
    while (!cc.second[s]) {
      s += 1;
      if (s >= 60) continue outer;
    }
    return Date.UTC(y, mo - 1, d, h, m, s);
  }
}

export interface CompiledSpec {
  spec: Spec;
  calendars: Matcher[];
  excludes: Matcher[];
}

export function compileSpec(spec: Spec): CompiledSpec {
  return { spec, calendars: spec.calendars.map(compileCalendar), excludes: spec.excludes.map(compileCalendar) };
}

/** Earliest calendar or interval time strictly after `afterMs`, ignoring start/end/excludes/jitter. */
function rawNext(cs: CompiledSpec, afterMs: number): number | null {
  let best = Infinity;
  for (const cal of cs.calendars) {
    const t = calendarNext(cal, afterMs);
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
    if (!cs.excludes.some((ex) => matches(ex, nominal!))) break;
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
