// Unit tests of the schedule spec math (devserver/schedules/spec.ts): parsing, canonicalisation, fire times.
// Expected values are worked out by hand from the calendar and cross-checked against the real server's rules.
import { describe, expect, it } from 'vitest';
import {
  canonicalizeSpec,
  compileSpec,
  getNextTime,
  nextTimes,
  parseCalendar,
  parseCronString,
  parseDuration,
  parseField,
  SpecError,
  specToProto,
  type Spec,
} from '../../devserver/schedules/spec.js';

const T = (iso: string) => Date.parse(iso);
const iso = (ms: number[]) => ms.map((m) => new Date(m).toISOString().replace('.000Z', 'Z'));
const cron = (...c: string[]) => canonicalizeSpec({ cronString: c });
const times = (spec: Spec, after: string, n: number) => iso(nextTimes(spec, T(after), n));

describe('parseField', () => {
  it('parses values, ranges, steps and lists like the real server', () => {
    expect(parseField('*', 'Minute', '0', 0, 59, 'int')).toEqual([{ start: 0, end: 59, step: 1 }]);
    expect(parseField('5', 'Minute', '0', 0, 59, 'int')).toEqual([{ start: 5, end: 5, step: 1 }]);
    expect(parseField('1-5/2,8', 'Minute', '0', 0, 59, 'int')).toEqual([
      { start: 1, end: 5, step: 2 },
      { start: 8, end: 8, step: 1 },
    ]);
    // x/y runs from x to the maximum
    expect(parseField('3/5', 'Day', '*', 1, 31, 'int')).toEqual([{ start: 3, end: 31, step: 5 }]);
    expect(parseField('*/15', 'Minute', '0', 0, 59, 'int')).toEqual([{ start: 0, end: 59, step: 15 }]);
    expect(parseField('', 'Hour', '0', 0, 23, 'int')).toEqual([{ start: 0, end: 0, step: 1 }]);
    expect(parseField('*', 'Year', '*', 2000, 2100, 'year')).toEqual([]);
  });

  it('accepts month and weekday names and turns Sunday=7 into 0', () => {
    expect(parseField('jan-Mar', 'Month', '*', 1, 12, 'month')).toEqual([{ start: 1, end: 3, step: 1 }]);
    expect(parseField('mo-fr', 'DayOfWeek', '*', 0, 7, 'dow')).toEqual([{ start: 1, end: 5, step: 1 }]);
    expect(parseField('7', 'DayOfWeek', '*', 0, 7, 'dow')).toEqual([{ start: 0, end: 0, step: 1 }]);
    expect(parseField('3-7', 'DayOfWeek', '*', 0, 7, 'dow')).toEqual([
      { start: 0, end: 0, step: 1 },
      { start: 3, end: 6, step: 1 },
    ]);
    expect(parseField('1-7', 'DayOfWeek', '*', 0, 7, 'dow')).toEqual([{ start: 1, end: 6, step: 1 }]);
    expect(parseField('3-7/3', 'DayOfWeek', '*', 0, 7, 'dow')).toEqual([{ start: 3, end: 6, step: 3 }]);
  });

  it('rejects malformed fields with the field name', () => {
    expect(() => parseField('60', 'Minute', '0', 0, 59, 'int')).toThrow(/Minute "60" is not in range \[0-59\]/);
    expect(() => parseField('5-2', 'Minute', '0', 0, 59, 'int')).toThrow(/Minute End "2" is before Start/);
    expect(() => parseField('1-2-3', 'Minute', '0', 0, 59, 'int')).toThrow(/too many dashes/);
    expect(() => parseField('1/2/3', 'Minute', '0', 0, 59, 'int')).toThrow(/too many slashes/);
    expect(() => parseField('*/0', 'Minute', '0', 0, 59, 'int')).toThrow(/invalid step/);
    expect(() => parseField('5/', 'Minute', '0', 0, 59, 'int')).toThrow(/invalid step/);
    expect(() => parseField('x', 'Minute', '0', 0, 59, 'int')).toThrow(SpecError);
    expect(() => parseField('ju', 'Month', '*', 1, 12, 'month')).toThrow(/Month "ju"/); // needs 3 letters
  });
});

describe('parseCronString', () => {
  it('maps 5, 6 and 7 fields', () => {
    const five = parseCronString('30 2 * * 1-5').calendar!;
    expect(five.second).toEqual([{ start: 0, end: 0, step: 1 }]);
    expect(five.minute).toEqual([{ start: 30, end: 30, step: 1 }]);
    expect(five.hour).toEqual([{ start: 2, end: 2, step: 1 }]);
    expect(five.year).toEqual([]);
    expect(parseCronString('0 0 1 1 * 2030').calendar!.year).toEqual([{ start: 2030, end: 2030, step: 1 }]);
    const seven = parseCronString('15 0 0 1 1 * 2030-2040/5').calendar!;
    expect(seven.second).toEqual([{ start: 15, end: 15, step: 1 }]);
    expect(seven.year).toEqual([{ start: 2030, end: 2040, step: 5 }]);
  });

  it('handles predefined names, @every, comments and the UTC zone prefix', () => {
    expect(parseCronString('@daily')).toEqual(parseCronString('0 0 * * *'));
    expect(parseCronString('@weekly').calendar!.dayOfWeek).toEqual([{ start: 0, end: 0, step: 1 }]);
    expect(parseCronString('@every 24h')).toEqual({ interval: { everySec: 86400, phaseSec: 0 }, timezone: '' });
    expect(parseCronString('@every 14h/3h').interval).toEqual({ everySec: 50400, phaseSec: 10800 });
    expect(parseCronString('0 3 * * * # nightly retrain').calendar!.comment).toBe('nightly retrain');
    expect(parseCronString('CRON_TZ=UTC 0 3 * * *').timezone).toBe('UTC');
  });

  it('rejects wrong field counts and bad intervals', () => {
    expect(() => parseCronString('* * * *')).toThrow(/does not have 5-7 fields/);
    expect(() => parseCronString('* * * * * * * *')).toThrow(/does not have 5-7 fields/);
    expect(() => parseCronString('@every')).toThrow(/no interval/);
    expect(() => parseCronString('@every 500ms')).toThrow(/too small/);
    expect(() => parseCronString('@every 1h/2h')).toThrow(/offset/);
    expect(() => parseCronString('@every 1.5s')).toThrow(/whole seconds/);
    expect(() => parseCronString('@every 1x')).toThrow(/invalid duration/);
    expect(() => parseCronString('61 * * * *')).toThrow(/cron string "61 \* \* \* \*": Minute "61"/);
  });
});

describe('parseDuration', () => {
  it('reads Go durations with days', () => {
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('1h30m')).toBe(5_400_000);
    expect(parseDuration('1.5h')).toBe(5_400_000);
    expect(parseDuration('2d')).toBe(172_800_000);
    expect(() => parseDuration('1 h')).toThrow(SpecError);
    expect(() => parseDuration('')).toThrow(SpecError);
  });
});

describe('canonicalizeSpec', () => {
  it('compiles cron and calendar strings into structured calendars and @every into intervals', () => {
    const spec = canonicalizeSpec({
      cronString: ['0 12 * * MON', '@every 1h/5m'],
      calendar: [{ hour: '3', dayOfMonth: '1' }],
      interval: [{ interval: { seconds: 30 } }],
    });
    expect(spec.calendars).toHaveLength(2);
    expect(spec.intervals).toEqual([
      { everySec: 3600, phaseSec: 300 },
      { everySec: 30, phaseSec: 0 },
    ]);
    const proto = specToProto(spec) as { structuredCalendar: unknown[]; interval: unknown[]; timezoneName: string };
    expect(proto.structuredCalendar).toHaveLength(2);
    expect(proto.interval).toEqual([{ interval: { seconds: 3600 }, phase: { seconds: 300 } }, { interval: { seconds: 30 } }]);
  });

  it('normalises structured ranges: end < start is the single value, step 0 is 1', () => {
    const spec = canonicalizeSpec({
      structuredCalendar: [
        {
          second: [{ start: 0 }],
          minute: [{ start: 5, end: 1 }],
          hour: [{ start: 0, end: 23, step: 6 }],
          dayOfMonth: [{ start: 1, end: 31 }],
          month: [{ start: 1, end: 12 }],
          year: [],
          dayOfWeek: [{ start: 0, end: 6 }],
        },
      ],
    });
    expect(spec.calendars[0]!.minute).toEqual([{ start: 5, end: 5, step: 1 }]);
    expect(times(spec, '2026-01-01T00:00:00Z', 3)).toEqual(['2026-01-01T00:05:00Z', '2026-01-01T06:05:00Z', '2026-01-01T12:05:00Z']);
  });

  it('collects every problem into one message', () => {
    let message = '';
    try {
      canonicalizeSpec({
        cronString: ['bad'],
        interval: [{ interval: { seconds: 0 } }],
        structuredCalendar: [{ second: [{ start: 70 }], minute: [], hour: [{ start: 1 }], dayOfMonth: [{ start: 1 }], month: [{ start: 1 }], dayOfWeek: [{ start: 0 }] }],
      });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/structured calendar 0: Second Start 70 is not in range \[0-59\]/);
    expect(message).toMatch(/Minute is empty/);
    expect(message).toMatch(/cron string "bad"/);
    expect(message).toMatch(/too small/);
  });

  it('accepts IANA zones and rejects unknown ones, zone data, conflicting zones, end before start and negative jitter', () => {
    expect(canonicalizeSpec({ cronString: ['CRON_TZ=UTC 0 0 * * *'] }).timezone).toBe('UTC');
    expect(canonicalizeSpec({ cronString: ['CRON_TZ=Europe/Berlin 0 0 * * *'] }).timezone).toBe('Europe/Berlin');
    expect(canonicalizeSpec({ timezoneName: 'America/New_York' }).timezone).toBe('America/New_York');
    expect(() => canonicalizeSpec({ timezoneName: 'Mars/Olympus_Mons' })).toThrow(/unknown time zone "Mars\/Olympus_Mons"/);
    expect(() => canonicalizeSpec({ cronString: ['TZ=UTC 0 0 * * *', '0 1 * * *'] })).toThrow(/conflicting time zones/);
    expect(() => canonicalizeSpec({ cronString: ['TZ=Asia/Tokyo 0 0 * * *'], timezoneName: 'UTC' })).toThrow(/conflicts with time zone "UTC"/);
    expect(() => canonicalizeSpec({ timezoneData: new Uint8Array([1]) })).toThrow(/timezone_data/);
    expect(() => canonicalizeSpec({ startTime: { seconds: 100 }, endTime: { seconds: 50 } })).toThrow(/end time is before start/);
    expect(() => canonicalizeSpec({ jitter: { seconds: -1 } })).toThrow(/jitter is negative/);
  });

  it('takes Long-like seconds from decoded protobuf messages', () => {
    const longish = { toString: () => '86400' };
    expect(canonicalizeSpec({ interval: [{ interval: { seconds: longish, nanos: 0 } }] }).intervals).toEqual([{ everySec: 86400, phaseSec: 0 }]);
  });
});

describe('fire times', () => {
  it('intervals count from the epoch plus the offset', () => {
    const spec = canonicalizeSpec({ interval: [{ interval: { seconds: 3600 }, phase: { seconds: 900 } }] });
    expect(times(spec, '2026-03-01T10:20:00Z', 3)).toEqual(['2026-03-01T11:15:00Z', '2026-03-01T12:15:00Z', '2026-03-01T13:15:00Z']);
    // strictly after: a time exactly on the grid is not returned again
    expect(times(spec, '2026-03-01T11:15:00Z', 1)).toEqual(['2026-03-01T12:15:00Z']);
    // sub-second "after" still finds the same second grid
    expect(times(canonicalizeSpec({ interval: [{ interval: { seconds: 1 } }] }), '2026-03-01T00:00:00.500Z', 2)).toEqual([
      '2026-03-01T00:00:01Z',
      '2026-03-01T00:00:02Z',
    ]);
  });

  it('every 24h fires at midnight UTC (epoch-aligned)', () => {
    expect(times(cron('@every 24h'), '2026-05-05T13:00:00Z', 2)).toEqual(['2026-05-06T00:00:00Z', '2026-05-07T00:00:00Z']);
  });

  it('handles month ends and leap years', () => {
    // day 31 only in months that have one
    expect(times(cron('0 0 31 * *'), '2026-01-31T00:00:00Z', 4)).toEqual([
      '2026-03-31T00:00:00Z',
      '2026-05-31T00:00:00Z',
      '2026-07-31T00:00:00Z',
      '2026-08-31T00:00:00Z',
    ]);
    // Feb 29 only in leap years; 2100 is not a leap year and is the last year searched
    expect(times(cron('0 0 29 2 *'), '2026-01-01T00:00:00Z', 3)).toEqual(['2028-02-29T00:00:00Z', '2032-02-29T00:00:00Z', '2036-02-29T00:00:00Z']);
    expect(times(cron('0 0 29 2 *'), '2096-03-01T00:00:00Z', 3)).toEqual([]);
    expect(times(cron('0 0 30 2 *'), '2026-01-01T00:00:00Z', 1)).toEqual([]);
    // the last day of the year rolls into the next
    expect(times(cron('59 23 31 12 *'), '2026-12-31T23:59:00Z', 1)).toEqual(['2027-12-31T23:59:00Z']);
  });

  it('ANDs day-of-month with day-of-week (unlike Vixie cron)', () => {
    // Friday the 13th
    expect(times(cron('0 0 13 * 5'), '2026-01-01T00:00:00Z', 3)).toEqual(['2026-02-13T00:00:00Z', '2026-03-13T00:00:00Z', '2026-11-13T00:00:00Z']);
  });

  it('day-of-week ranges, names and Sunday as 7', () => {
    // 2026-06-05 is a Friday
    expect(times(cron('0 9 * * mon-fri'), '2026-06-05T09:00:00Z', 3)).toEqual(['2026-06-08T09:00:00Z', '2026-06-09T09:00:00Z', '2026-06-10T09:00:00Z']);
    expect(times(cron('0 9 * * 7'), '2026-06-05T00:00:00Z', 2)).toEqual(['2026-06-07T09:00:00Z', '2026-06-14T09:00:00Z']);
    expect(times(cron('0 9 * * 5-7'), '2026-06-05T10:00:00Z', 3)).toEqual(['2026-06-06T09:00:00Z', '2026-06-07T09:00:00Z', '2026-06-12T09:00:00Z']);
  });

  it('steps in minutes, hours and seconds', () => {
    expect(times(cron('*/20 */6 * * *'), '2026-01-01T05:00:00Z', 4)).toEqual([
      '2026-01-01T06:00:00Z',
      '2026-01-01T06:20:00Z',
      '2026-01-01T06:40:00Z',
      '2026-01-01T12:00:00Z',
    ]);
    expect(times(cron('*/10 * * * * * *'), '2026-01-01T00:00:55Z', 2)).toEqual(['2026-01-01T00:01:00Z', '2026-01-01T00:01:10Z']);
    expect(times(cron('5-59/20 * * * *'), '2026-01-01T00:00:00Z', 3)).toEqual(['2026-01-01T00:05:00Z', '2026-01-01T00:25:00Z', '2026-01-01T00:45:00Z']);
  });

  it('years restrict and end the schedule', () => {
    expect(times(cron('0 0 1 1 * 2030,2032'), '2026-01-01T00:00:00Z', 3)).toEqual(['2030-01-01T00:00:00Z', '2032-01-01T00:00:00Z']);
  });

  it('merges several calendars and intervals in time order without duplicates', () => {
    const spec = cron('0 * * * *', '30 * * * *');
    expect(times(spec, '2026-01-01T00:00:00Z', 3)).toEqual(['2026-01-01T00:30:00Z', '2026-01-01T01:00:00Z', '2026-01-01T01:30:00Z']);
    const both = canonicalizeSpec({ cronString: ['0 * * * *'], interval: [{ interval: { seconds: 3600 } }] });
    expect(times(both, '2026-01-01T00:00:00Z', 2)).toEqual(['2026-01-01T01:00:00Z', '2026-01-01T02:00:00Z']);
  });

  it('honours start and end time (start inclusive)', () => {
    const spec = canonicalizeSpec({
      interval: [{ interval: { seconds: 3600 } }],
      startTime: { seconds: T('2026-01-01T05:00:00Z') / 1000 },
      endTime: { seconds: T('2026-01-01T07:00:00Z') / 1000 },
    });
    expect(times(spec, '2026-01-01T00:00:00Z', 10)).toEqual(['2026-01-01T05:00:00Z', '2026-01-01T06:00:00Z', '2026-01-01T07:00:00Z']);
  });

  it('skips excluded times', () => {
    const spec = canonicalizeSpec({ cronString: ['0 9 * * *'], excludeCalendar: [{ hour: '9', dayOfWeek: 'sat,sun' }] });
    // 2026-06-05 Friday → next are Mon, Tue
    expect(times(spec, '2026-06-05T10:00:00Z', 2)).toEqual(['2026-06-08T09:00:00Z', '2026-06-09T09:00:00Z']);
    const all = canonicalizeSpec({ interval: [{ interval: { seconds: 3600 } }], excludeCalendar: [{ second: '*', minute: '*', hour: '*' }] });
    expect(times(all, '2026-01-01T00:00:00Z', 1)).toEqual([]);
  });

  it('adds deterministic jitter that never passes the next nominal time', () => {
    const spec = canonicalizeSpec({ interval: [{ interval: { seconds: 60 } }], jitter: { seconds: 3600 } });
    const cs = compileSpec(spec);
    const after = T('2026-01-01T00:00:30Z');
    const a = getNextTime(cs, after, 'sched-a')!;
    expect(a.nominalMs).toBe(T('2026-01-01T00:01:00Z'));
    expect(a.actualMs - a.nominalMs).toBeGreaterThanOrEqual(0);
    expect(a.actualMs - a.nominalMs).toBeLessThan(60_000);
    expect(getNextTime(cs, after, 'sched-a')).toEqual(a);
    const spread = new Set(Array.from({ length: 20 }, (_, i) => getNextTime(cs, after, `s${i}`)!.actualMs));
    expect(spread.size).toBeGreaterThan(10);
  });

  it('finds sparse calendars (Feb 29 on a Monday) and stops at 2100', () => {
    expect(times(cron('0 0 29 2 1'), '2026-01-01T00:00:00Z', 3)).toEqual(['2044-02-29T00:00:00Z', '2072-02-29T00:00:00Z']);
  });
});

describe('fire times in time zones', () => {
  // Expected values were produced by the real server's calendar algorithm (the Go loop of
  // temporalio/temporal service/worker/scheduler/calendar.go compiled with Go 1.19 and its zoneinfo), including
  // its handling of DST: a wall time in a spring-forward gap is skipped, a repeated hour is walked twice only when
  // reached by rolling over from the hour before. The port also matched that oracle on 7,800 random calendars.
  const cases: Array<[string, string, string, string[]]> = [
    ['Europe/Berlin', '*/30 * * * *', '2026-10-24T22:45:00Z', ['2026-10-24T23:00:00Z', '2026-10-24T23:30:00Z', '2026-10-25T00:00:00Z', '2026-10-25T01:30:00Z', '2026-10-25T02:00:00Z', '2026-10-25T02:30:00Z', '2026-10-25T03:00:00Z', '2026-10-25T03:30:00Z']],
    ['Europe/Berlin', '30 2 * * *', '2026-03-27T12:00:00Z', ['2026-03-28T01:30:00Z', '2026-03-30T00:30:00Z', '2026-03-31T00:30:00Z']],
    ['Europe/Berlin', '30 2 * * *', '2026-10-24T12:00:00Z', ['2026-10-25T01:30:00Z', '2026-10-26T01:30:00Z', '2026-10-27T01:30:00Z']],
    ['America/New_York', '30 1 * * *', '2026-10-31T12:00:00Z', ['2026-11-01T05:30:00Z', '2026-11-01T06:30:00Z', '2026-11-02T06:30:00Z']],
    ['America/New_York', '30 2 * * *', '2026-03-07T12:00:00Z', ['2026-03-09T06:30:00Z', '2026-03-10T06:30:00Z', '2026-03-11T06:30:00Z']],
    ['America/New_York', '*/20 * * * *', '2026-11-01T04:50:00Z', ['2026-11-01T05:00:00Z', '2026-11-01T05:20:00Z', '2026-11-01T05:40:00Z', '2026-11-01T06:00:00Z', '2026-11-01T06:20:00Z', '2026-11-01T06:40:00Z', '2026-11-01T07:00:00Z', '2026-11-01T07:20:00Z']],
    ['Australia/Lord_Howe', '0,15,30,45 2 * * *', '2026-10-02T12:00:00Z', ['2026-10-02T15:30:00Z', '2026-10-02T15:45:00Z', '2026-10-02T16:00:00Z', '2026-10-02T16:15:00Z', '2026-10-03T15:30:00Z', '2026-10-03T15:45:00Z', '2026-10-04T15:00:00Z', '2026-10-04T15:15:00Z']],
    ['Asia/Kolkata', '0 9 * * 1-5', '2026-06-05T00:00:00Z', ['2026-06-05T03:30:00Z', '2026-06-08T03:30:00Z', '2026-06-09T03:30:00Z']],
    ['Europe/London', '0 1 * * *', '2026-03-28T00:00:00Z', ['2026-03-28T01:00:00Z', '2026-03-30T00:00:00Z', '2026-03-31T00:00:00Z']],
  ];
  it.each(cases)('%s %s after %s', (zone, cronString, after, want) => {
    expect(times(cron(`CRON_TZ=${zone} ${cronString}`), after, want.length)).toEqual(want);
  });

  it('reads daily times in the zone across a DST change (Berlin, 03:00 local)', () => {
    expect(times(canonicalizeSpec({ cronString: ['0 3 * * *'], timezoneName: 'Europe/Berlin' }), '2026-03-27T12:00:00Z', 4)).toEqual([
      '2026-03-28T02:00:00Z',
      '2026-03-29T01:00:00Z',
      '2026-03-30T01:00:00Z',
      '2026-03-31T01:00:00Z',
    ]);
  });

  it('leaves intervals on the epoch grid whatever the zone, and applies excludes in the zone', () => {
    expect(times(canonicalizeSpec({ interval: [{ interval: { seconds: 86400 } }], timezoneName: 'Asia/Kolkata' }), '2026-06-05T12:00:00Z', 1)).toEqual(['2026-06-06T00:00:00Z']);
    // every hour at :30 Kolkata time (+05:30, so :00 UTC), except during 09:xx Kolkata time
    const spec = canonicalizeSpec({ cronString: ['30 * * * *'], excludeCalendar: [{ hour: '9', minute: '*' }], timezoneName: 'Asia/Kolkata' });
    expect(times(spec, '2026-06-05T02:00:00Z', 2)).toEqual(['2026-06-05T03:00:00Z', '2026-06-05T05:00:00Z']);
  });
});

describe('parseCalendar', () => {
  it('defaults second, minute and hour to 0 and the rest to every value', () => {
    const cal = parseCalendar({ dayOfWeek: 'wed' });
    expect(cal.second).toEqual([{ start: 0, end: 0, step: 1 }]);
    expect(cal.hour).toEqual([{ start: 0, end: 0, step: 1 }]);
    expect(cal.month).toEqual([{ start: 1, end: 12, step: 1 }]);
    expect(cal.dayOfWeek).toEqual([{ start: 3, end: 3, step: 1 }]);
  });
});
