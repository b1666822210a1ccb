// startDevServer(): opens the SQLite store, re-arms persisted timers, registers the WorkflowService,
// OperatorService and health handlers on a grpc-js server and binds it (127.0.0.1 unless told otherwise).
// Also the ScheduleHost side of the seam to devserver/schedules/ (contract.ts).
import type { temporal as T } from '@temporalio/proto';
import * as grpc from '@grpc/grpc-js';
import { randomUUID } from 'node:crypto';
import { ServiceError, type ScheduleHost, type ScheduleService, type CreateScheduleService } from './contract.js';
import { createScheduleService } from './schedules/index.js';
import { Store } from './store.js';
import { RealClock, SkippingClock } from './clock.js';
import { Engine } from './engine.js';
import { Matching } from './matching.js';
import { addService, SERVICES, type Handler } from './grpc.js';
import { clientHandlers } from './rpc-client.js';
import { workerHandlers } from './rpc-worker.js';
import { dropQueries } from './workflow-tasks.js';
import { SA_TYPES, PREDEFINED, SYSTEM } from './attributes.js';
import { api, WS, dur, ms, notFound } from './proto.js';
import { googleStatus } from './proto.js';

const createSchedules: CreateScheduleService = createScheduleService;

export interface DevServerOptions {
  port?: number; // 0 = a free port
  ip?: string;
  dbFile?: string; // ':memory:' or a path
  namespace?: string;
  log?: (line: string) => void;
  /**
   * Virtual time for tests (TestService, as @temporalio/testing's createTimeSkipping expects): when no client
   * holds the time-skipping lock and no workflow/activity task is queued or running, time jumps to the next timer.
   * Use with ':memory:' databases only.
   */
  timeSkipping?: boolean;
  /** Override Temporal's history limits (10,240/51,200 events, 10/50 MB), e.g. to test continue-as-new logic. */
  historyLimits?: Partial<{ warnEvents: number; errorEvents: number; warnBytes: number; errorBytes: number }>;
  /** Custom search attributes to register up front, name → type (Keyword, Text, Int, Double, Bool, Datetime, KeywordList). */
  searchAttributes?: Record<string, string>;
}

export interface DevServer {
  address: string; // host:port
  port: number;
  close(): Promise<void>;
}

const RETENTION_DAYS = 1;
/**
 * The Temporal server release whose behaviour this server follows, reported by GetSystemInfo and GetClusterInfo
 * as a plain semver (clients and the Web UI parse it to gate features); the capabilities say what is implemented.
 */
export const SERVER_VERSION = '1.24.0';
/** Temporal's default gRPC message limit; larger requests get RESOURCE_EXHAUSTED as from a real frontend. */
const MAX_RECEIVE_BYTES = 4 * 1024 * 1024;

export async function startDevServer(opts: DevServerOptions = {}): Promise<DevServer> {
  const log = opts.log ?? (() => {});
  const ip = opts.ip ?? '127.0.0.1';
  const store = new Store(opts.dbFile ?? ':memory:');
  const skipping = opts.timeSkipping ? new SkippingClock() : undefined;
  const clock = skipping ?? new RealClock();
  const engine = new Engine(store, clock, log);
  Object.assign(engine.historyLimits, opts.historyLimits ?? {});
  // Poll deadlines are the callers' real time, never virtual time.
  const pollClock = new RealClock();
  engine.matching = new Matching(pollClock, log);
  if (skipping) {
    const busy = store.db.prepare(`SELECT EXISTS (SELECT 1 FROM tasks) OR EXISTS (SELECT 1 FROM executions WHERE status = 1 AND (
      json_extract(state, '$.wft.state') = 'started' OR EXISTS (SELECT 1 FROM json_each(state, '$.activities') WHERE json_extract(value, '$.state') = 'started'))) AS busy`);
    skipping.busy = () => (busy.get() as { busy: number }).busy === 1;
    store.onCommit = () => skipping.maybeSkip();
  }

  // ─── namespaces ──────────────────────────────────────────────────────────────────────────────────────
  const insertNs = store.db.prepare('INSERT OR IGNORE INTO namespaces (name, id, description, retention_days, created_ms) VALUES (?, ?, ?, ?, ?)');
  const getNs = store.db.prepare('SELECT * FROM namespaces WHERE name = ?');
  for (const name of new Set(['default', opts.namespace ?? 'default'])) insertNs.run(name, randomUUID(), '', RETENTION_DAYS, clock.now());
  for (const [name, type] of Object.entries(opts.searchAttributes ?? {})) engine.sa.register(opts.namespace ?? 'default', name, type);
  const assertNs = (ns: string) => {
    if (!ns) throw new ServiceError(grpc.status.INVALID_ARGUMENT, 'Namespace is empty.');
    if (!getNs.get(ns)) {
      const detail = api.errordetails.v1.NamespaceNotFoundFailure.encode({ namespace: ns }).finish();
      const msg = `Namespace ${ns} is not found.`;
      throw new ServiceError(grpc.status.NOT_FOUND, msg, googleStatus(grpc.status.NOT_FOUND, msg, 'temporal.api.errordetails.v1.NamespaceNotFoundFailure', detail));
    }
  };
  const describeNs = (row: any) => ({
    // Of the namespace capabilities, only updates (sync and async) are implemented.
    namespaceInfo: { name: row.name, state: 1, description: row.description, id: row.id, capabilities: { syncUpdate: true, asyncUpdate: true } },
    config: { workflowExecutionRetentionTtl: dur(row.retention_days * 86_400_000) },
    isGlobalNamespace: false,
  });

  // ─── schedules (devserver/schedules/, through the ScheduleHost seam of contract.ts) ─────────────────
  const host: ScheduleHost = {
    db: store.db,
    clock,
    assertNamespace: assertNs,
    startWorkflow: (ns, request) => ({ runId: engine.start(ns, request).runId }),
    isRunning: (ns, workflowId, runId) => {
      const s = engine.loadState(runId);
      return !!s && s.namespace === ns && s.workflowId === workflowId && s.status === WS.WORKFLOW_EXECUTION_STATUS_RUNNING;
    },
    terminate: (ns, workflowId, runId, reason) => {
      if (host.isRunning(ns, workflowId, runId)) engine.withRun(runId, (r) => engine.terminateTx(r, reason, 'schedules'));
    },
    requestCancel: (ns, workflowId, runId, reason) => {
      if (host.isRunning(ns, workflowId, runId)) engine.withRun(runId, (r) => engine.requestCancelTx(r, reason, 'schedules'));
    },
    onWorkflowClosed: (l) => engine.onWorkflowClosed(l as any),
  };
  const schedules: ScheduleService = createSchedules(host);
  log('schedules: enabled');

  // ─── handlers ────────────────────────────────────────────────────────────────────────────────────────
  const typeEnum = (t: string) => SA_TYPES.indexOf(t as (typeof SA_TYPES)[number]) + 1;
  const info: Record<string, Handler> = {
    GetSystemInfo: () => ({
      serverVersion: SERVER_VERSION,
      // Only what this server implements: no eager workflow start, worker versioning, Nexus or deployments.
      capabilities: {
        signalAndQueryHeader: true, internalErrorDifferentiation: true, activityFailureIncludeHeartbeat: true,
        supportsSchedules: true, encodedFailureAttributes: true, upsertMemo: true, sdkMetadata: true,
        countGroupByExecutionStatus: true, eagerWorkflowStart: false, buildIdBasedVersioning: false,
        nexus: false, serverScaledDeployments: false,
      },
    }),
    DescribeNamespace: (req: T.api.workflowservice.v1.IDescribeNamespaceRequest) => {
      const name = req.namespace || '';
      if (!name && req.id) {
        const row = store.db.prepare('SELECT * FROM namespaces WHERE id = ?').get(req.id);
        if (!row) throw notFound(`Namespace ${req.id} is not found.`);
        return describeNs(row);
      }
      assertNs(name);
      return describeNs(getNs.get(name));
    },
    ListNamespaces: () => ({ namespaces: store.db.prepare('SELECT * FROM namespaces ORDER BY name').all().map(describeNs) }),
    RegisterNamespace: (req: T.api.workflowservice.v1.IRegisterNamespaceRequest) => {
      if (!req.namespace) throw new ServiceError(grpc.status.INVALID_ARGUMENT, 'Namespace is not set on request.');
      if (getNs.get(req.namespace)) throw new ServiceError(grpc.status.ALREADY_EXISTS, `Namespace "${req.namespace}" already exists`);
      const days = Math.max(1, Math.round(((req.workflowExecutionRetentionPeriod?.seconds as any)?.toNumber?.() ?? 86_400) / 86_400));
      insertNs.run(req.namespace, randomUUID(), req.description ?? '', days, clock.now());
      return {};
    },
    GetClusterInfo: () => ({ serverVersion: SERVER_VERSION, clusterName: 'finetune-devserver', clusterId: 'finetune-devserver', historyShardCount: 1, persistenceStore: 'sqlite', visibilityStore: 'sqlite', supportedClients: {} }),
    GetSearchAttributes: () => {
      const keys: Record<string, number> = {};
      for (const [n, t] of Object.entries(PREDEFINED)) keys[n] = typeEnum(t);
      for (const row of store.db.prepare('SELECT DISTINCT name, type FROM search_attribute_types').all() as { name: string; type: string }[]) keys[row.name] = typeEnum(row.type);
      return { keys };
    },
  };
  const operator: Record<string, Handler> = {
    AddSearchAttributes: (req: T.api.operatorservice.v1.IAddSearchAttributesRequest) => {
      const ns = req.namespace || 'default';
      assertNs(ns);
      store.tx(() => {
        for (const [name, t] of Object.entries(req.searchAttributes ?? {})) {
          const type = SA_TYPES[(t as number) - 1];
          if (!type) throw new ServiceError(grpc.status.INVALID_ARGUMENT, `Unknown search attribute type ${t} for ${name}.`);
          if (PREDEFINED[name]) throw new ServiceError(grpc.status.INVALID_ARGUMENT, `Search attribute ${name} is reserved by system.`);
          // As on Temporal, a name that is already registered is left as it is, whatever type is asked for.
          if (engine.sa.typeOf(ns, name)) continue;
          engine.sa.register(ns, name, type);
        }
      });
      return {};
    },
    ListSearchAttributes: (req: T.api.operatorservice.v1.IListSearchAttributesRequest) => {
      const ns = req.namespace || 'default';
      assertNs(ns);
      const customAttributes: Record<string, number> = {};
      for (const [n, t] of Object.entries(engine.sa.custom(ns))) customAttributes[n] = typeEnum(t);
      const systemAttributes: Record<string, number> = {};
      for (const [n, t] of Object.entries(PREDEFINED)) systemAttributes[n] = typeEnum(t);
      return { customAttributes, systemAttributes, storageSchema: {} };
    },
    RemoveSearchAttributes: (req: T.api.operatorservice.v1.IRemoveSearchAttributesRequest) => {
      const ns = req.namespace || 'default';
      const del = store.db.prepare('DELETE FROM search_attribute_types WHERE namespace = ? AND name = ?');
      for (const name of req.searchAttributes ?? []) {
        if (SYSTEM.has(name) || PREDEFINED[name]) throw new ServiceError(grpc.status.INVALID_ARGUMENT, `Search attribute ${name} is a system attribute.`);
        del.run(ns, name);
      }
      return {};
    },
  };

  const server = new grpc.Server({ 'grpc.max_receive_message_length': MAX_RECEIVE_BYTES, 'grpc.max_send_message_length': 128 * 1024 * 1024 });
  addService(server, SERVICES.workflow, { ...info, ...clientHandlers(engine, assertNs), ...workerHandlers(engine, assertNs), ...schedules.handlers }, log);
  addService(server, SERVICES.operator, operator, log);
  addService(server, SERVICES.health, { Check: () => ({ status: 1 }) }, log);
  if (skipping) addService(server, SERVICES.test, testService(skipping), log);

  const hostPort = ip.includes(':') ? `[${ip}]:${opts.port ?? 7233}` : `${ip}:${opts.port ?? 7233}`;
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(hostPort, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(new Error(`cannot listen on ${hostPort}: ${err.message}`)) : resolve(p))),
    );
  } catch (e) {
    schedules.stop();
    engine.stop();
    server.forceShutdown();
    store.close();
    throw e;
  }
  // Recovery after a restart: every deadline fires again (overdue ones at once); queued tasks are rows and are
  // picked up by the first polls; tasks that were started before the crash time out as on a real server.
  engine.rearmAll();
  schedules.start();
  const address = ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;

  let closed: Promise<void> | undefined;
  return {
    address,
    port,
    close: () =>
      (closed ??= (async () => {
        // Answer every waiting call first (polls empty, long polls with what they have), then stop serving.
        schedules.stop();
        engine.stop();
        engine.matching.close();
        dropQueries(engine);
        await new Promise<void>((resolve) => {
          const force = setTimeout(() => {
            server.forceShutdown();
            resolve();
          }, 1000);
          server.tryShutdown(() => {
            clearTimeout(force);
            resolve();
          });
        });
        clock.stopAll();
        pollClock.stopAll();
        store.close();
      })()),
  };
}

/** temporal.api.testservice.v1.TestService over the skipping clock. */
function testService(clock: SkippingClock): Record<string, Handler> {
  const sleepUntil = (atMs: number) => new Promise<void>((resolve) => clock.at(atMs, resolve));
  return {
    LockTimeSkipping: () => {
      clock.lock();
      return {};
    },
    UnlockTimeSkipping: () => {
      try {
        clock.unlock();
      } catch (e) {
        throw new ServiceError(grpc.status.FAILED_PRECONDITION, (e as Error).message);
      }
      return {};
    },
    Sleep: async (req: { duration?: any }) => {
      await sleepUntil(clock.now() + ms(req.duration));
      return {};
    },
    SleepUntil: async (req: { timestamp?: any }) => {
      await sleepUntil(ms(req.timestamp));
      return {};
    },
    UnlockTimeSkippingWithSleep: async (req: { duration?: any }) => {
      const until = clock.now() + ms(req.duration);
      clock.unlock();
      try {
        await sleepUntil(until);
      } finally {
        clock.lock();
      }
      return {};
    },
    GetCurrentTime: () => ({ time: dur(clock.now()) }),
  };
}
