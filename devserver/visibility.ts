// Temporal's SQL-like visibility query language as its SQL visibility store (the one `temporal server start-dev`
// uses) accepts it, compiled to a parameterised SQLite WHERE clause over the executions table: comparisons, IN,
// BETWEEN, STARTS_WITH, IS [NOT] NULL, AND/OR/NOT, parentheses and (for counts) GROUP BY ExecutionStatus; ORDER BY
// is refused, as there. System attributes map to columns or to the run's state; custom search attributes are read
// from the run's JSON (KeywordList matches any element). Error messages follow the real server's.
import { invalid } from './proto.js';
import { SYSTEM, type SaType } from './attributes.js';

// Syntax errors read "invalid query: malformed SQL query: <what>", as on Temporal (which names a position in its
// own rewritten SQL instead of what was expected).

export const STATUS_NAMES: Record<string, number> = {
  Running: 1, Completed: 2, Failed: 3, Canceled: 4, Terminated: 5, ContinuedAsNew: 6, TimedOut: 7,
};
const COLUMNS: Record<string, string> = {
  WorkflowId: 'workflow_id', RunId: 'run_id', WorkflowType: 'workflow_type', ExecutionStatus: 'status',
  StartTime: 'start_ms', CloseTime: 'close_ms', ExecutionTime: 'execution_ms', TaskQueue: 'task_queue',
  // Recorded only when the run closes (NULL while it runs), as in Temporal's SQL visibility.
  HistoryLength: 'CASE WHEN close_ms IS NOT NULL THEN history_length END',
  ParentWorkflowId: "json_extract(state, '$.parent.workflowId')",
  ParentRunId: "json_extract(state, '$.parent.runId')",
  RootWorkflowId: "COALESCE(json_extract(state, '$.root.workflowId'), workflow_id)",
  RootRunId: "COALESCE(json_extract(state, '$.root.runId'), run_id)",
  // Nanoseconds from execution time to close, as Temporal stores it; NULL while the run is open.
  ExecutionDuration: '(close_ms - execution_ms) * 1000000',
  StateTransitionCount: "CASE WHEN close_ms IS NOT NULL THEN json_extract(state, '$.stateTransitions') END",
  HistorySizeBytes: "CASE WHEN close_ms IS NOT NULL THEN json_extract(state, '$.historySize') END",
};
const TIME_COLUMNS = new Set(['StartTime', 'CloseTime', 'ExecutionTime']);
const DURATION_UNITS_NS: Record<string, number> = { ns: 1, us: 1e3, µs: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 };

/** ExecutionDuration values: Go duration strings (`90s`, `1h30m`, `1.5h`) or `hh:mm:ss`, as nanoseconds. */
function parseDurationNs(v: string): number | undefined {
  const clock = /^(\d+):([0-5]?\d):([0-5]?\d(?:\.\d+)?)$/.exec(v);
  if (clock) return ((Number(clock[1]) * 60 + Number(clock[2])) * 60 + Number(clock[3])) * 1e9;
  if (!/^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$/.test(v)) return undefined;
  let total = 0;
  for (const m of v.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)) total += Number(m[1]) * DURATION_UNITS_NS[m[2]!]!;
  return Math.round(total);
}

type Tok = { k: 'id' | 'str' | 'num' | 'op' | 'punct'; v: string };

function tokenize(q: string): Tok[] {
  const out: Tok[] = [];
  const re = /\s*(?:(`[^`]*`)|('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(-?\d+(?:\.\d+)?)(?![\w-])|(>=|<=|!=|<>|=|<|>)|([(),])|([A-Za-z_][\w.]*))/y;
  let pos = 0;
  while (pos < q.length) {
    if (/^\s*$/.test(q.slice(pos))) break;
    re.lastIndex = pos;
    const m = re.exec(q);
    if (!m) throw invalid(`invalid query: malformed SQL query: unexpected text at position ${pos}: '${q.slice(pos, pos + 20)}'`);
    pos = re.lastIndex;
    if (m[1]) out.push({ k: 'id', v: m[1].slice(1, -1) });
    else if (m[2]) out.push({ k: 'str', v: m[2].slice(1, -1).replace(/\\(.)/g, '$1') });
    else if (m[3]) out.push({ k: 'num', v: m[3] });
    else if (m[4]) out.push({ k: 'op', v: m[4] });
    else if (m[5]) out.push({ k: 'punct', v: m[5] });
    else out.push({ k: 'id', v: m[6]! });
  }
  return out;
}

export interface CompiledQuery {
  where: string;
  params: unknown[];
  orderBy: string;
  groupByStatus: boolean;
}

/** Compiles `query`; `typeOf` gives custom attribute types (unknown names are an INVALID_ARGUMENT). */
export function compileQuery(query: string, typeOf: (name: string) => SaType | undefined): CompiledQuery {
  const toks = tokenize(query ?? '');
  let i = 0;
  const params: unknown[] = [];
  const peek = () => toks[i];
  const isKw = (kw: string) => peek()?.k === 'id' && peek()!.v.toUpperCase() === kw;
  const expectKw = (kw: string) => {
    if (!isKw(kw)) throw invalid(`invalid query: malformed SQL query: expected ${kw} near '${peek()?.v ?? 'end of query'}'`);
    i++;
  };
  const punct = (p: string) => peek()?.k === 'punct' && peek()!.v === p;

  const field = (): { sql: string; name: string; list: boolean } => {
    const t = toks[i++];
    if (!t || t.k !== 'id') throw invalid(`invalid query: malformed SQL query: expected a search attribute name near '${t?.v ?? 'end of query'}'`);
    const col = COLUMNS[t.v];
    if (col) return { sql: col, name: t.v, list: false };
    const type = typeOf(t.v);
    if (!type || SYSTEM.has(t.v)) throw invalid(`invalid query: invalid search attribute: ${t.v}`);
    return { sql: `json_extract(search_json, '$."${t.v.replace(/"/g, '')}"')`, name: t.v, list: type === 'KeywordList' };
  };
  const value = (name: string): unknown => {
    const t = toks[i++];
    if (!t) throw invalid('invalid query: malformed SQL query: expected a value at end of query');
    let v: unknown;
    if (t.k === 'str') v = t.v;
    else if (t.k === 'num') v = Number(t.v);
    else if (t.k === 'id' && /^(true|false)$/i.test(t.v)) v = t.v.toLowerCase() === 'true' ? 1 : 0;
    else throw invalid(`invalid query: malformed SQL query: expected a value near '${t.v}'`);
    if (name === 'ExecutionStatus' && typeof v === 'string') {
      const code = STATUS_NAMES[v];
      if (code === undefined) throw invalid(`invalid query: invalid expression: invalid ExecutionStatus value '${v}' (one of ${Object.keys(STATUS_NAMES).join(', ')})`);
      return code;
    }
    if (name === 'ExecutionDuration' && typeof v === 'string') {
      const ns = parseDurationNs(v);
      if (ns === undefined) throw invalid(`invalid query: invalid expression: invalid ExecutionDuration value '${v}' (a duration such as '90s', '1h30m' or '01:30:00')`);
      return ns;
    }
    if (TIME_COLUMNS.has(name) && typeof v === 'string') {
      const t2 = Date.parse(v);
      if (Number.isNaN(t2)) throw invalid(`invalid query: ${name} value '${v}' is not an RFC 3339 time`);
      return t2;
    }
    return v;
  };
  const param = (v: unknown) => {
    params.push(v);
    return '?';
  };

  const predicate = (): string => {
    const f = field();
    const anyOf = (cond: string) => (f.list ? `EXISTS (SELECT 1 FROM json_each(search_json, '$."${f.name}"') WHERE ${cond.replace(/\$V/g, 'value')})` : cond.replace(/\$V/g, f.sql));
    if (isKw('IS')) {
      i++;
      const not = isKw('NOT') ? (i++, true) : false;
      expectKw('NULL');
      return `${f.sql} IS ${not ? 'NOT ' : ''}NULL`;
    }
    const not = isKw('NOT') ? (i++, true) : false;
    if (isKw('IN')) {
      i++;
      if (!punct('(')) throw invalid('invalid query: malformed SQL query: expected ( after IN');
      i++;
      const vals: string[] = [];
      do vals.push(param(value(f.name)));
      while (punct(',') && ++i);
      if (!punct(')')) throw invalid('invalid query: malformed SQL query: expected ) closing IN (...)');
      i++;
      return `${not ? 'NOT ' : ''}${anyOf(`$V IN (${vals.join(', ')})`)}`;
    }
    if (isKw('BETWEEN')) {
      i++;
      const lo = param(value(f.name));
      expectKw('AND');
      const hi = param(value(f.name));
      return `${not ? 'NOT ' : ''}(${f.sql} BETWEEN ${lo} AND ${hi})`;
    }
    if (isKw('STARTS_WITH')) {
      i++;
      const v = value(f.name);
      if (typeof v !== 'string') throw invalid('invalid query: STARTS_WITH needs a string');
      return `${not ? 'NOT ' : ''}${anyOf(`substr($V, 1, ${v.length}) = ${param(v)}`)}`;
    }
    if (not) throw invalid('invalid query: malformed SQL query: NOT must be followed by IN, BETWEEN or STARTS_WITH here');
    const op = toks[i++];
    if (op?.k === 'id') {
      const type = f.name in COLUMNS ? (TIME_COLUMNS.has(f.name) ? 'Datetime' : /Length|Count|Bytes|Duration/.test(f.name) ? 'Int' : 'Keyword') : typeOf(f.name);
      throw invalid(`invalid query: operation is not supported: operator '${op.v.toUpperCase()}' not supported for ${type} type search attribute '${f.name}'`);
    }
    if (!op || op.k !== 'op') throw invalid(`invalid query: malformed SQL query: expected an operator after ${f.name}`);
    const sqlOp = op.v === '<>' ? '!=' : op.v;
    const v = param(value(f.name));
    if (sqlOp === '!=') return f.list ? `NOT ${anyOf(`$V = ${v}`)}` : `(${f.sql} IS NULL OR ${f.sql} != ${v})`;
    return anyOf(`$V ${sqlOp} ${v}`);
  };
  const factor = (): string => {
    if (punct('(')) {
      i++;
      const e = expr();
      if (!punct(')')) throw invalid('invalid query: malformed SQL query: missing )');
      i++;
      return `(${e})`;
    }
    if (isKw('NOT')) {
      i++;
      return `NOT (${factor()})`;
    }
    return predicate();
  };
  const term = (): string => {
    let e = factor();
    while (isKw('AND')) {
      i++;
      e = `${e} AND ${factor()}`;
    }
    return e;
  };
  const expr = (): string => {
    let e = term();
    while (isKw('OR')) {
      i++;
      e = `(${e}) OR (${term()})`;
    }
    return e;
  };

  let where = '1';
  if (i < toks.length && !isKw('ORDER') && !isKw('GROUP')) where = expr();
  const orderBy = 'COALESCE(close_ms, 9e15) DESC, start_ms DESC, run_id';
  let groupByStatus = false;
  if (isKw('GROUP')) {
    i++;
    expectKw('BY');
    const t = toks[i++];
    if (t?.v !== 'ExecutionStatus') throw invalid(`invalid query: operation is not supported: 'GROUP BY' clause is not supported for search attribute ${t?.v ?? ''}`);
    groupByStatus = true;
  }
  // Temporal's SQL visibility lists newest first (open runs, then by close time) and cannot sort otherwise.
  if (isKw('ORDER')) throw invalid("invalid query: operation is not supported: 'ORDER BY' clause");
  if (i < toks.length) throw invalid(`invalid query: malformed SQL query: unexpected '${toks[i]!.v}'`);
  return { where, params, orderBy, groupByStatus };
}
