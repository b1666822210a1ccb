// Durable state of the schedules module, in the server's SQLite database (tables prefixed `schedule_`).
// One row per schedule holds its definition and its progress; a side table maps the runs a schedule started
// back to the schedule, so that a closing run can be matched without scanning every schedule.
import type Database from 'better-sqlite3';
import type { Spec } from './spec.js';

/** A start waiting to be taken (overlap policies BUFFER_*, CANCEL_OTHER, TERMINATE_OTHER). */
export interface BufferedStart {
  nominalMs: number;
  actualMs: number;
  /** 0 = use the schedule's policy at the time the start is taken. */
  overlapPolicy: number;
  /** Trigger or backfill: ignores pause and remaining actions. */
  manual: boolean;
}

export interface RecentAction {
  scheduleTimeMs: number;
  actualTimeMs: number;
  workflowId: string;
  runId: string;
  /** temporal.api.enums.v1.WorkflowExecutionStatus */
  status: number;
}

export interface RunRef {
  workflowId: string;
  runId: string;
}

export interface ScheduleRow {
  namespace: string;
  scheduleId: string;
  spec: Spec;
  /** Encoded temporal.api.schedule.v1.ScheduleAction, kept byte for byte (payloads, header, metadata). */
  action: Uint8Array;
  overlapPolicy: number;
  catchupWindowMs: number;
  pauseOnFailure: boolean;
  keepOriginalWorkflowId: boolean;
  paused: boolean;
  notes: string;
  limitedActions: boolean;
  remainingActions: number;
  /** Encoded temporal.api.common.v1.Memo / SearchAttributes of the schedule itself. */
  memo: Uint8Array | null;
  searchAttributes: Uint8Array | null;
  createTimeMs: number;
  updateTimeMs: number | null;
  /** Every spec time up to here has been handled (started, buffered, skipped or counted as missed). */
  lastProcessedMs: number;
  actionCount: number;
  missedCatchupWindow: number;
  overlapSkipped: number;
  bufferDropped: number;
  conflictToken: number;
  createRequestId: string;
  buffer: BufferedStart[];
  /** Runs started by non-overlapping starts that are still open (what overlap policies look at). */
  running: RunRef[];
  /** The last RECENT_ACTIONS actions, oldest first. */
  recent: RecentAction[];
  /** Encoded Payloads / Failure of the last tracked run, handed to the next start (workflowInfo().lastResult). */
  lastCompletionResult: Uint8Array | null;
  continuedFailure: Uint8Array | null;
}

export const SCHEMA = `
CREATE TABLE IF NOT EXISTS schedule_schedules (
  namespace TEXT NOT NULL,
  schedule_id TEXT NOT NULL,
  spec TEXT NOT NULL,
  action BLOB NOT NULL,
  overlap_policy INTEGER NOT NULL,
  catchup_window_ms INTEGER NOT NULL,
  pause_on_failure INTEGER NOT NULL,
  keep_original_workflow_id INTEGER NOT NULL,
  paused INTEGER NOT NULL,
  notes TEXT NOT NULL,
  limited_actions INTEGER NOT NULL,
  remaining_actions INTEGER NOT NULL,
  memo BLOB,
  search_attributes BLOB,
  create_time_ms INTEGER NOT NULL,
  update_time_ms INTEGER,
  last_processed_ms INTEGER NOT NULL,
  action_count INTEGER NOT NULL,
  missed_catchup_window INTEGER NOT NULL,
  overlap_skipped INTEGER NOT NULL,
  buffer_dropped INTEGER NOT NULL,
  conflict_token INTEGER NOT NULL,
  create_request_id TEXT NOT NULL,
  buffer TEXT NOT NULL,
  running TEXT NOT NULL,
  recent TEXT NOT NULL,
  last_completion_result BLOB,
  continued_failure BLOB,
  PRIMARY KEY (namespace, schedule_id)
);
CREATE TABLE IF NOT EXISTS schedule_runs (
  namespace TEXT NOT NULL,
  workflow_id TEXT NOT NULL,
  run_id TEXT NOT NULL,
  schedule_id TEXT NOT NULL,
  PRIMARY KEY (namespace, workflow_id, run_id)
);
CREATE INDEX IF NOT EXISTS schedule_runs_by_schedule ON schedule_runs (namespace, schedule_id);
`;

const COLUMNS: Array<[keyof ScheduleRow, string]> = [
  ['namespace', 'namespace'],
  ['scheduleId', 'schedule_id'],
  ['spec', 'spec'],
  ['action', 'action'],
  ['overlapPolicy', 'overlap_policy'],
  ['catchupWindowMs', 'catchup_window_ms'],
  ['pauseOnFailure', 'pause_on_failure'],
  ['keepOriginalWorkflowId', 'keep_original_workflow_id'],
  ['paused', 'paused'],
  ['notes', 'notes'],
  ['limitedActions', 'limited_actions'],
  ['remainingActions', 'remaining_actions'],
  ['memo', 'memo'],
  ['searchAttributes', 'search_attributes'],
  ['createTimeMs', 'create_time_ms'],
  ['updateTimeMs', 'update_time_ms'],
  ['lastProcessedMs', 'last_processed_ms'],
  ['actionCount', 'action_count'],
  ['missedCatchupWindow', 'missed_catchup_window'],
  ['overlapSkipped', 'overlap_skipped'],
  ['bufferDropped', 'buffer_dropped'],
  ['conflictToken', 'conflict_token'],
  ['createRequestId', 'create_request_id'],
  ['buffer', 'buffer'],
  ['running', 'running'],
  ['recent', 'recent'],
  ['lastCompletionResult', 'last_completion_result'],
  ['continuedFailure', 'continued_failure'],
];
/** Columns added after the first version, created on databases that predate them. */
const ADDED_COLUMNS: Array<[string, string]> = [
  ['last_completion_result', 'BLOB'],
  ['continued_failure', 'BLOB'],
];
const JSON_FIELDS = new Set<keyof ScheduleRow>(['spec', 'buffer', 'running', 'recent']);
const BOOL_FIELDS = new Set<keyof ScheduleRow>(['pauseOnFailure', 'keepOriginalWorkflowId', 'paused', 'limitedActions']);
const BLOB_FIELDS = new Set<keyof ScheduleRow>(['action', 'memo', 'searchAttributes', 'lastCompletionResult', 'continuedFailure']);

function toDb(row: ScheduleRow): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, col] of COLUMNS) {
    const v = row[key];
    if (JSON_FIELDS.has(key)) out[col] = JSON.stringify(v);
    else if (BOOL_FIELDS.has(key)) out[col] = v ? 1 : 0;
    else if (BLOB_FIELDS.has(key)) out[col] = v == null ? null : Buffer.from(v as Uint8Array);
    else out[col] = v;
  }
  return out;
}

function fromDb(r: Record<string, unknown>): ScheduleRow {
  const out: Record<string, unknown> = {};
  for (const [key, col] of COLUMNS) {
    const v = r[col];
    if (JSON_FIELDS.has(key)) out[key] = JSON.parse(v as string);
    else if (BOOL_FIELDS.has(key)) out[key] = v === 1;
    else out[key] = v;
  }
  return out as unknown as ScheduleRow;
}

/** Prepared statements over the schedule tables. Every caller wraps its reads and writes in one transaction. */
export class ScheduleStore {
  private readonly insertStmt: Database.Statement;
  private readonly updateStmt: Database.Statement;
  private readonly getStmt: Database.Statement;
  private readonly deleteStmt: Database.Statement;
  private readonly deleteRunsStmt: Database.Statement;
  private readonly listStmt: Database.Statement;
  private readonly allKeysStmt: Database.Statement;
  private readonly addRunStmt: Database.Statement;
  private readonly findRunStmt: Database.Statement;
  private readonly dropRunStmt: Database.Statement;

  constructor(readonly db: Database.Database) {
    db.exec(SCHEMA);
    const have = new Set((db.prepare('PRAGMA table_info(schedule_schedules)').all() as Array<{ name: string }>).map((c) => c.name));
    for (const [col, type] of ADDED_COLUMNS) if (!have.has(col)) db.exec(`ALTER TABLE schedule_schedules ADD COLUMN ${col} ${type}`);
    const cols = COLUMNS.map(([, c]) => c);
    this.insertStmt = db.prepare(`INSERT INTO schedule_schedules (${cols.join(', ')}) VALUES (${cols.map((c) => '@' + c).join(', ')})`);
    this.updateStmt = db.prepare(
      `UPDATE schedule_schedules SET ${cols.filter((c) => c !== 'namespace' && c !== 'schedule_id').map((c) => `${c} = @${c}`).join(', ')}
       WHERE namespace = @namespace AND schedule_id = @schedule_id`,
    );
    this.getStmt = db.prepare('SELECT * FROM schedule_schedules WHERE namespace = ? AND schedule_id = ?');
    this.deleteStmt = db.prepare('DELETE FROM schedule_schedules WHERE namespace = ? AND schedule_id = ?');
    this.deleteRunsStmt = db.prepare('DELETE FROM schedule_runs WHERE namespace = ? AND schedule_id = ?');
    this.listStmt = db.prepare('SELECT * FROM schedule_schedules WHERE namespace = ? AND schedule_id > ? ORDER BY schedule_id LIMIT ?');
    this.allKeysStmt = db.prepare('SELECT namespace, schedule_id FROM schedule_schedules');
    this.addRunStmt = db.prepare('INSERT OR REPLACE INTO schedule_runs (namespace, workflow_id, run_id, schedule_id) VALUES (?, ?, ?, ?)');
    this.findRunStmt = db.prepare('SELECT schedule_id FROM schedule_runs WHERE namespace = ? AND workflow_id = ? AND run_id = ?');
    this.dropRunStmt = db.prepare('DELETE FROM schedule_runs WHERE namespace = ? AND workflow_id = ? AND run_id = ?');
  }

  get(namespace: string, scheduleId: string): ScheduleRow | undefined {
    const r = this.getStmt.get(namespace, scheduleId) as Record<string, unknown> | undefined;
    return r && fromDb(r);
  }

  insert(row: ScheduleRow): void {
    this.insertStmt.run(toDb(row));
  }

  save(row: ScheduleRow): void {
    this.updateStmt.run(toDb(row));
  }

  delete(namespace: string, scheduleId: string): boolean {
    this.deleteRunsStmt.run(namespace, scheduleId);
    return this.deleteStmt.run(namespace, scheduleId).changes > 0;
  }

  /** Schedules of a namespace in id order, starting after `afterId`. */
  list(namespace: string, afterId: string, limit: number): ScheduleRow[] {
    return (this.listStmt.all(namespace, afterId, limit) as Record<string, unknown>[]).map(fromDb);
  }

  allKeys(): Array<{ namespace: string; scheduleId: string }> {
    return (this.allKeysStmt.all() as Array<{ namespace: string; schedule_id: string }>).map((r) => ({
      namespace: r.namespace,
      scheduleId: r.schedule_id,
    }));
  }

  addRun(namespace: string, run: RunRef, scheduleId: string): void {
    this.addRunStmt.run(namespace, run.workflowId, run.runId, scheduleId);
  }

  /** The schedule that started this run, if any. */
  findRun(namespace: string, run: RunRef): string | undefined {
    return (this.findRunStmt.get(namespace, run.workflowId, run.runId) as { schedule_id: string } | undefined)?.schedule_id;
  }

  dropRun(namespace: string, run: RunRef): void {
    this.dropRunStmt.run(namespace, run.workflowId, run.runId);
  }
}
