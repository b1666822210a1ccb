// The seam between the dev server's core (gRPC service, history, tasks, SQLite store) and its schedules
// module (devserver/schedules/). The core owns the database and the clock and implements ScheduleHost; the
// schedules module implements ScheduleService and never touches the core's tables.
import type Database from 'better-sqlite3';
import type { status as GrpcStatus } from '@grpc/grpc-js';
import type { temporal } from '@temporalio/proto';

/** An RPC failure with the gRPC status a real Temporal server would return. */
export class ServiceError extends Error {
  constructor(
    readonly code: GrpcStatus,
    message: string,
    /** Encoded google.rpc.Status details (e.g. WorkflowExecutionAlreadyStartedFailure), when the SDK reads them. */
    readonly details?: Uint8Array,
  ) {
    super(message);
    this.name = 'ServiceError';
  }
}

/** Every "now" and every timer of the server goes through one clock (real, or virtual for time skipping). */
export interface Clock {
  now(): number; // ms since the epoch
  /** Call `fn` at `atMs` (at once if that has passed); returns a cancel function. */
  at(atMs: number, fn: () => void): () => void;
}

export type StartWorkflowRequest = temporal.api.workflowservice.v1.IStartWorkflowExecutionRequest;

/** What the core offers the schedules module. */
export interface ScheduleHost {
  /** The server's database (WAL mode). The schedules module creates and owns tables prefixed `schedule_`. */
  readonly db: Database.Database;
  readonly clock: Clock;
  /** Throws ServiceError(NOT_FOUND, NamespaceNotFound) for an unknown namespace. */
  assertNamespace(namespace: string): void;
  /**
   * Start a workflow exactly as StartWorkflowExecution would (ID policies, request-ID dedupe), inside the caller's
   * SQLite transaction when one is open. Returns the new run's id; throws ServiceError(ALREADY_EXISTS) on conflict.
   */
  startWorkflow(namespace: string, request: StartWorkflowRequest): { runId: string };
  /** Whether that run is still open (for overlap policies). */
  isRunning(namespace: string, workflowId: string, runId: string): boolean;
  /** Terminate / request cancellation of a run (overlap policies TERMINATE_OTHER / CANCEL_OTHER). */
  terminate(namespace: string, workflowId: string, runId: string, reason: string): void;
  requestCancel(namespace: string, workflowId: string, runId: string, reason: string): void;
  /** Called after the transaction that closed a run commits. */
  onWorkflowClosed(
    listener: (e: { namespace: string; workflowId: string; runId: string; status: temporal.api.enums.v1.WorkflowExecutionStatus }) => void,
  ): void;
}

/** An RPC handler: decoded protobufjs request in, plain object (for ResponseType.fromObject) out. */
export type RpcHandler = (request: any) => Promise<object> | object;

/** What the schedules module offers the core. */
export interface ScheduleService {
  /** Handlers for CreateSchedule, DescribeSchedule, UpdateSchedule, PatchSchedule, DeleteSchedule, ListSchedules,
   *  ListScheduleMatchingTimes. The core registers them under temporal.api.workflowservice.v1.WorkflowService. */
  readonly handlers: Record<string, RpcHandler>;
  /** Re-arm every schedule's next fire time from the database (after a restart) and start firing. */
  start(): void;
  stop(): void;
}

/** Implemented in devserver/schedules/index.ts. */
export type CreateScheduleService = (host: ScheduleHost) => ScheduleService;
