// The subset of Temporal's visibility query language that ListSchedules understands here:
//   ScheduleId = 'nightly'            ScheduleId STARTS_WITH 'retrain-'      ScheduleId IN ('a', 'b')
//   TemporalSchedulePaused = true     <custom search attribute> = 'value' | 42 | true
// joined with AND. Anything else is rejected with INVALID_ARGUMENT rather than ignored.
import { status } from '@grpc/grpc-js';
import { ServiceError } from '../contract.js';

export interface QueryFacts {
  scheduleId: string;
  paused: boolean;
  /** The schedule's own search attributes, decoded from JSON payloads. */
  attributes: Record<string, unknown>;
}

type Literal = string | number | boolean;

const TOKEN = /\s*(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|(\(|\)|,|=|!=)|([A-Za-z_][A-Za-z0-9_]*)|(-?\d+(?:\.\d+)?))/y;

function tokenize(q: string): Array<{ kind: 'str' | 'sym' | 'word' | 'num'; text: string }> {
  const out: Array<{ kind: 'str' | 'sym' | 'word' | 'num'; text: string }> = [];
  TOKEN.lastIndex = 0;
  let pos = 0;
  while (pos < q.length) {
    if (/^\s*$/.test(q.slice(pos))) break;
    TOKEN.lastIndex = pos;
    const m = TOKEN.exec(q);
    if (!m) throw bad(q, `unexpected text at "${q.slice(pos).trim()}"`);
    pos = TOKEN.lastIndex;
    if (m[1] !== undefined || m[2] !== undefined) out.push({ kind: 'str', text: (m[1] ?? m[2])!.replace(/\\(.)/g, '$1') });
    else if (m[3] !== undefined) out.push({ kind: 'sym', text: m[3] });
    else if (m[4] !== undefined) out.push({ kind: 'word', text: m[4] });
    else out.push({ kind: 'num', text: m[5]! });
  }
  return out;
}

function bad(q: string, why: string): ServiceError {
  return new ServiceError(
    status.INVALID_ARGUMENT,
    `invalid schedule list query "${q}": ${why}. Supported: ScheduleId = '…', ScheduleId STARTS_WITH '…', ` +
      `ScheduleId IN ('…'), TemporalSchedulePaused = true|false, <search attribute> = <value>, joined with AND`,
  );
}

/** Compile a list query into a predicate; an empty query matches everything. */
export function compileListQuery(query: string): (facts: QueryFacts) => boolean {
  const tokens = tokenize(query);
  const preds: Array<(f: QueryFacts) => boolean> = [];
  let i = 0;
  const literal = (): Literal => {
    const t = tokens[i++];
    if (!t) throw bad(query, 'missing value');
    if (t.kind === 'str') return t.text;
    if (t.kind === 'num') return Number(t.text);
    if (t.kind === 'word' && /^(true|false)$/i.test(t.text)) return t.text.toLowerCase() === 'true';
    throw bad(query, `expected a value, got "${t.text}"`);
  };
  while (i < tokens.length) {
    if (preds.length) {
      const and = tokens[i++];
      if (!and || and.kind !== 'word' || and.text.toUpperCase() !== 'AND') throw bad(query, `expected AND, got "${and?.text}"`);
    }
    const field = tokens[i++];
    const op = tokens[i++];
    if (!field || field.kind !== 'word' || !op) throw bad(query, 'expected <field> <operator> <value>');
    const get = (f: QueryFacts): unknown =>
      field.text === 'ScheduleId' ? f.scheduleId : field.text === 'TemporalSchedulePaused' ? f.paused : f.attributes[field.text];
    const opText = op.text.toUpperCase();
    if (opText === '=' || opText === '!=') {
      const v = literal();
      const eq = (x: unknown) => (Array.isArray(x) ? x.includes(v) : x === v);
      preds.push(opText === '=' ? (f) => eq(get(f)) : (f) => !eq(get(f)));
    } else if (opText === 'STARTS_WITH') {
      const v = literal();
      if (typeof v !== 'string') throw bad(query, 'STARTS_WITH needs a string');
      preds.push((f) => typeof get(f) === 'string' && (get(f) as string).startsWith(v));
    } else if (opText === 'IN') {
      if (tokens[i++]?.text !== '(') throw bad(query, 'IN needs a list in parentheses');
      const values: Literal[] = [literal()];
      while (tokens[i]?.text === ',') {
        i += 1;
        values.push(literal());
      }
      if (tokens[i++]?.text !== ')') throw bad(query, 'unclosed IN list');
      preds.push((f) => values.includes(get(f) as Literal));
    } else {
      throw bad(query, `unsupported operator "${op.text}"`);
    }
  }
  return (f) => preds.every((p) => p(f));
}
