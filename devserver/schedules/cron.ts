// Cron strings and calendar strings → structured calendars, as the real server parses them
// (temporalio/temporal service/worker/scheduler/calendar.go parseCronString / makeRange), with errors that name
// the field. Pure functions; used by spec.ts.

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

export const MIN_YEAR = 2000;
export const MAX_YEAR = 2100; // the real server stops looking for calendar times after 2100
export const MAX_COMMENT = 200;

const MONTHS = ['january', 'february', 'march', 'april', 'may', 'june', 'july', 'august', 'september', 'october', 'november', 'december'];
const DAYS = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday'];
export type Mode = 'int' | 'year' | 'month' | 'dow';

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

export function collect<T>(errors: string[], f: () => T, fallback: T): T {
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

export function intervalFromMs(everyMs: number, phaseMs: number, what: string): Interval {
  if (everyMs < 1000) throw new SpecError(`interval ${what} is too small (minimum 1s)`);
  if (everyMs % 1000 !== 0 || phaseMs % 1000 !== 0) {
    throw new SpecError(`interval ${what} must be whole seconds (schedules have one-second resolution)`);
  }
  if (phaseMs < 0) throw new SpecError(`interval ${what} has a negative offset`);
  if (phaseMs >= everyMs) throw new SpecError(`interval ${what} has an offset that is not smaller than the interval`);
  return { everySec: everyMs / 1000, phaseSec: phaseMs / 1000 };
}
