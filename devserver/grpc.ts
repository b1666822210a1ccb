// The gRPC layer: builds grpc-js service definitions by reflection over the protobufjs root in @temporalio/proto
// (no .proto compilation, exactly the SDK's message types) and adapts async handlers to grpc-js callbacks.
// Errors become the status a real Temporal server returns; anything unexpected is INTERNAL, never a crash.
import * as grpc from '@grpc/grpc-js';
import type { Method, Type } from 'protobufjs';
import { ServiceError } from './contract.js';
import { protoRoot } from './proto.js';

/** What a handler learns about its call: the deadline, and whether the caller went away. */
export interface CallContext {
  readonly deadline: number; // ms since epoch; Infinity if none
  readonly cancelled: boolean;
  onCancel(fn: () => void): void;
}

export type Handler = (request: any, ctx: CallContext) => Promise<object> | object;

export const SERVICES = {
  workflow: 'temporal.api.workflowservice.v1.WorkflowService',
  operator: 'temporal.api.operatorservice.v1.OperatorService',
  health: 'grpc.health.v1.Health',
  test: 'temporal.api.testservice.v1.TestService',
} as const;

function definitionFor(serviceName: string): { def: grpc.ServiceDefinition; methods: Map<string, Method> } {
  const service = protoRoot.lookupService(serviceName);
  service.resolveAll();
  const def: Record<string, grpc.MethodDefinition<any, any>> = {};
  const methods = new Map<string, Method>();
  for (const m of service.methodsArray) {
    const req = m.resolvedRequestType as Type;
    const res = m.resolvedResponseType as Type;
    methods.set(m.name, m);
    def[m.name] = {
      path: `/${serviceName}/${m.name}`,
      requestStream: false,
      responseStream: false,
      requestDeserialize: (buf: Buffer) => req.decode(buf),
      requestSerialize: (obj: object) => Buffer.from(req.encode(req.fromObject(obj)).finish()),
      responseSerialize: (obj: object) => Buffer.from(res.encode(res.fromObject(obj)).finish()),
      responseDeserialize: (buf: Buffer) => res.decode(buf),
    };
  }
  return { def, methods };
}

function toStatus(err: unknown, method: string, log: (l: string) => void): Partial<grpc.StatusObject> {
  if (err instanceof ServiceError) {
    const metadata = new grpc.Metadata();
    if (err.details) metadata.set('grpc-status-details-bin', Buffer.from(err.details));
    return { code: err.code, details: err.message, metadata };
  }
  log(`error: ${method} failed unexpectedly: ${(err as Error)?.stack ?? String(err)}`);
  return { code: grpc.status.INTERNAL, details: `internal error in ${method}: ${(err as Error)?.message ?? err}` };
}

/**
 * Registers `handlers` on `server` for every method of `serviceName`; methods without a handler answer
 * UNIMPLEMENTED with a message the SDK recognises ("unknown method").
 */
export function addService(
  server: grpc.Server,
  serviceName: string,
  handlers: Record<string, Handler>,
  log: (l: string) => void,
): void {
  const { def, methods } = definitionFor(serviceName);
  const impl: grpc.UntypedServiceImplementation = {};
  for (const name of methods.keys()) {
    const handler = handlers[name];
    impl[name] = (call: grpc.ServerUnaryCall<any, any>, callback: grpc.sendUnaryData<any>) => {
      if (!handler) {
        callback({ code: grpc.status.UNIMPLEMENTED, details: `unknown method ${name}: not implemented by the finetune dev server` });
        return;
      }
      const d = call.getDeadline();
      const deadline = d instanceof Date ? d.getTime() : Number(d);
      // One 'cancelled' listener per call, however often a long poll re-registers while it waits (one listener
      // per wake-up made Node warn about a leak during long `result()` polls).
      let cancelFns: (() => void)[] | null = null;
      const ctx: CallContext = {
        deadline: Number.isFinite(deadline) ? deadline : Infinity,
        get cancelled() {
          return call.cancelled;
        },
        onCancel: (fn) => {
          if (!cancelFns) {
            const fns: (() => void)[] = (cancelFns = []);
            call.once('cancelled', () => fns.splice(0).forEach((f) => f()));
          }
          cancelFns.push(fn);
        },
      };
      let settled = false;
      const done = (err: Partial<grpc.StatusObject> | null, value?: object) => {
        if (settled) return;
        settled = true;
        if (err) callback(err);
        else callback(null, value);
      };
      try {
        Promise.resolve(handler(call.request, ctx)).then(
          (v) => done(null, v),
          (e) => done(toStatus(e, name, log)),
        );
      } catch (e) {
        done(toStatus(e, name, log));
      }
    };
  }
  server.addService(def, impl);
}
