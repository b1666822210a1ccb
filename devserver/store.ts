// SQLite storage (better-sqlite3, synchronous): every state change of the server runs inside one transaction
// (Store.tx) and side effects on memory — waking pollers, arming timers, waking history long polls — are queued
// with afterCommit() and run only once the transaction has committed. Effects are hints that re-read the
// database, so an effect left over from a rolled-back transaction does nothing harmful.
import Database from 'better-sqlite3';

/** Bumped on incompatible schema changes; a database from a newer server is refused, not misread. */
const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS namespaces (
  name TEXT PRIMARY KEY, id TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', retention_days INTEGER NOT NULL,
  created_ms INTEGER NOT NULL);
-- One row per run: the mutable state as JSON plus the columns visibility queries filter on.
CREATE TABLE IF NOT EXISTS executions (
  run_id TEXT PRIMARY KEY, namespace TEXT NOT NULL, workflow_id TEXT NOT NULL, workflow_type TEXT NOT NULL,
  task_queue TEXT NOT NULL, status INTEGER NOT NULL, start_ms INTEGER NOT NULL, execution_ms INTEGER NOT NULL,
  close_ms INTEGER, history_length INTEGER NOT NULL, search_json TEXT NOT NULL DEFAULT '{}', state TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS executions_by_wf ON executions(namespace, workflow_id, start_ms);
CREATE INDEX IF NOT EXISTS executions_by_start ON executions(namespace, start_ms);
CREATE TABLE IF NOT EXISTS current_runs (
  namespace TEXT NOT NULL, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, PRIMARY KEY (namespace, workflow_id));
-- Encoded temporal.api.history.v1.HistoryEvent messages.
CREATE TABLE IF NOT EXISTS history (
  run_id TEXT NOT NULL, event_id INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (run_id, event_id)) WITHOUT ROWID;
-- Dispatchable tasks: kind 'wf' (workflow task) or 'act' (activity attempt); ref = scheduled event id.
CREATE TABLE IF NOT EXISTS tasks (
  id INTEGER PRIMARY KEY AUTOINCREMENT, namespace TEXT NOT NULL, kind TEXT NOT NULL, queue TEXT NOT NULL,
  run_id TEXT NOT NULL, ref INTEGER NOT NULL, attempt INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_by_queue ON tasks(namespace, kind, queue, id);
-- Every deadline: user timers, task and activity timeouts, retry backoffs, run timeouts. Re-armed on start.
CREATE TABLE IF NOT EXISTS timers (
  id INTEGER PRIMARY KEY AUTOINCREMENT, due_ms INTEGER NOT NULL, run_id TEXT NOT NULL, kind TEXT NOT NULL,
  ref TEXT NOT NULL, attempt INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS timers_by_run ON timers(run_id);
CREATE TABLE IF NOT EXISTS search_attribute_types (
  namespace TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, PRIMARY KEY (namespace, name));
`;

export interface TaskRow {
  id: number;
  namespace: string;
  kind: 'wf' | 'act';
  queue: string;
  run_id: string;
  ref: number;
  attempt: number;
}
export interface TimerRow {
  id: number;
  due_ms: number;
  run_id: string;
  kind: string;
  ref: string;
  attempt: number;
}
export interface ExecutionRow {
  run_id: string;
  namespace: string;
  workflow_id: string;
  workflow_type: string;
  task_queue: string;
  status: number;
  start_ms: number;
  execution_ms: number;
  close_ms: number | null;
  history_length: number;
  search_json: string;
  state: string;
}

export class Store {
  readonly db: Database.Database;
  private effects: Array<() => void> = [];
  /** Called after every committed transaction and its effects (the time-skipping clock checks for idleness). */
  onCommit?: () => void;
  private depth = 0;
  private readonly s;

  constructor(file: string) {
    this.db = new Database(file);
    // One server per database: two would hand out the same tasks. Take SQLite's lock for good at once.
    this.db.pragma('locking_mode = EXCLUSIVE');
    try {
      // WAL + synchronous=NORMAL: a committed transaction survives the process being killed (not a power cut).
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      const version = this.db.pragma('user_version', { simple: true }) as number;
      if (version > SCHEMA_VERSION) {
        throw new Error(`it was written by a newer dev server (schema ${version}, this one reads ${SCHEMA_VERSION}); upgrade, or use another --db`);
      }
      this.db.exec(SCHEMA);
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    } catch (e) {
      this.db.close();
      if ((e as { code?: string }).code?.startsWith('SQLITE_BUSY')) {
        throw new Error(`${file} is in use by another dev server (its SQLite lock is held); stop that server or pass another --db`, { cause: e });
      }
      throw new Error(`cannot open the dev server database ${file}: ${(e as Error).message}`, { cause: e });
    }
    const p = (sql: string) => this.db.prepare(sql);
    this.s = {
      insertRun: p(`INSERT INTO executions (run_id, namespace, workflow_id, workflow_type, task_queue, status, start_ms,
        execution_ms, close_ms, history_length, search_json, state) VALUES (@run_id, @namespace, @workflow_id,
        @workflow_type, @task_queue, @status, @start_ms, @execution_ms, @close_ms, @history_length, @search_json, @state)`),
      updateRun: p(`UPDATE executions SET workflow_type=@workflow_type, task_queue=@task_queue, status=@status,
        close_ms=@close_ms, history_length=@history_length, search_json=@search_json, state=@state WHERE run_id=@run_id`),
      getRun: p('SELECT * FROM executions WHERE run_id = ?'),
      getCurrent: p('SELECT run_id FROM current_runs WHERE namespace = ? AND workflow_id = ?'),
      setCurrent: p('INSERT OR REPLACE INTO current_runs (namespace, workflow_id, run_id) VALUES (?, ?, ?)'),
      appendEvent: p('INSERT INTO history (run_id, event_id, data) VALUES (?, ?, ?)'),
      readEvents: p('SELECT data FROM history WHERE run_id = ? AND event_id >= ? AND event_id < ? ORDER BY event_id'),
      readEvent: p('SELECT data FROM history WHERE run_id = ? AND event_id = ?'),
      insertTask: p('INSERT INTO tasks (namespace, kind, queue, run_id, ref, attempt) VALUES (?, ?, ?, ?, ?, ?)'),
      peekTasks: p('SELECT * FROM tasks WHERE namespace = ? AND kind = ? AND queue = ? ORDER BY id LIMIT 16'),
      deleteTask: p('DELETE FROM tasks WHERE id = ?'),
      deleteTasksOf: p('DELETE FROM tasks WHERE run_id = ? AND kind = ? AND ref = ?'),
      deleteRunTasks: p('DELETE FROM tasks WHERE run_id = ?'),
      allTaskQueues: p('SELECT DISTINCT namespace, kind, queue FROM tasks'),
      insertTimer: p('INSERT INTO timers (due_ms, run_id, kind, ref, attempt) VALUES (?, ?, ?, ?, ?)'),
      getTimer: p('SELECT * FROM timers WHERE id = ?'),
      deleteTimer: p('DELETE FROM timers WHERE id = ?'),
      deleteRunTimers: p('DELETE FROM timers WHERE run_id = ?'),
      allTimers: p('SELECT * FROM timers ORDER BY due_ms'),
    };
  }

  /**
   * Runs `fn` in one transaction (a savepoint when the caller already holds one, e.g. the schedules module) and
   * then the effects it queued. Effects of a transaction nested in a foreign one run on the next turn, after
   * the outer transaction has had its chance to commit.
   */
  tx<T>(fn: () => T): T {
    if (this.depth > 0) return fn();
    const foreign = this.db.inTransaction;
    this.depth++;
    let result: T;
    try {
      result = this.db.transaction(fn)();
    } catch (e) {
      this.effects = [];
      throw e;
    } finally {
      this.depth--;
    }
    const effects = this.effects;
    this.effects = [];
    const runAll = () => {
      for (const f of effects) f();
      this.onCommit?.();
    };
    if (foreign) setImmediate(runAll);
    else runAll();
    return result;
  }

  /** A savepoint inside the current transaction: on a throw its writes and its queued effects are undone. */
  savepoint<T>(fn: () => T): T {
    const mark = this.effects.length;
    try {
      return this.db.transaction(fn)();
    } catch (e) {
      this.effects.length = mark;
      throw e;
    }
  }

  afterCommit(fn: () => void): void {
    if (this.depth === 0) throw new Error('afterCommit outside a transaction');
    this.effects.push(fn);
  }

  // ─── executions ──────────────────────────────────────────────────────────────────────────────────────
  getRun(runId: string): ExecutionRow | undefined {
    return this.s.getRun.get(runId) as ExecutionRow | undefined;
  }
  insertRun(row: ExecutionRow): void {
    this.s.insertRun.run(row);
  }
  updateRun(row: Omit<ExecutionRow, 'namespace' | 'workflow_id' | 'start_ms' | 'execution_ms'>): void {
    this.s.updateRun.run(row);
  }
  currentRunId(namespace: string, workflowId: string): string | undefined {
    return (this.s.getCurrent.get(namespace, workflowId) as { run_id: string } | undefined)?.run_id;
  }
  setCurrent(namespace: string, workflowId: string, runId: string): void {
    this.s.setCurrent.run(namespace, workflowId, runId);
  }

  // ─── history ─────────────────────────────────────────────────────────────────────────────────────────
  appendEvent(runId: string, eventId: number, data: Uint8Array): void {
    this.s.appendEvent.run(runId, eventId, Buffer.from(data));
  }
  /** Encoded events with fromId <= id < toId. */
  readEvents(runId: string, fromId: number, toId: number): Buffer[] {
    return (this.s.readEvents.all(runId, fromId, toId) as { data: Buffer }[]).map((r) => r.data);
  }
  readEvent(runId: string, eventId: number): Buffer | undefined {
    return (this.s.readEvent.get(runId, eventId) as { data: Buffer } | undefined)?.data;
  }

  // ─── tasks ───────────────────────────────────────────────────────────────────────────────────────────
  insertTask(namespace: string, kind: 'wf' | 'act', queue: string, runId: string, ref: number, attempt: number): void {
    this.s.insertTask.run(namespace, kind, queue, runId, ref, attempt);
  }
  peekTasks(namespace: string, kind: 'wf' | 'act', queue: string): TaskRow[] {
    return this.s.peekTasks.all(namespace, kind, queue) as TaskRow[];
  }
  deleteTask(id: number): void {
    this.s.deleteTask.run(id);
  }
  deleteTasksOf(runId: string, kind: 'wf' | 'act', ref: number): void {
    this.s.deleteTasksOf.run(runId, kind, ref);
  }
  deleteRunTasks(runId: string): void {
    this.s.deleteRunTasks.run(runId);
  }
  taskQueues(): { namespace: string; kind: 'wf' | 'act'; queue: string }[] {
    return this.s.allTaskQueues.all() as { namespace: string; kind: 'wf' | 'act'; queue: string }[];
  }

  // ─── timers ──────────────────────────────────────────────────────────────────────────────────────────
  insertTimer(dueMs: number, runId: string, kind: string, ref: string, attempt: number): number {
    return Number(this.s.insertTimer.run(dueMs, runId, kind, ref, attempt).lastInsertRowid);
  }
  getTimer(id: number): TimerRow | undefined {
    return this.s.getTimer.get(id) as TimerRow | undefined;
  }
  deleteTimer(id: number): void {
    this.s.deleteTimer.run(id);
  }
  deleteRunTimers(runId: string): void {
    this.s.deleteRunTimers.run(runId);
  }
  allTimers(): TimerRow[] {
    return this.s.allTimers.all() as TimerRow[];
  }

  close(): void {
    this.db.close();
  }
}
