// Workflow updates. An admitted update is written to history as WorkflowExecutionUpdateAdmitted (a "durable"
// update request, which sdk-core turns into the protocol message itself), so it is buffered, persisted and
// redelivered exactly like a signal. The worker answers with protocol messages in its completion: Acceptance and
// Response, each referenced by a PROTOCOL_MESSAGE command (→ UpdateAccepted / UpdateCompleted events), or a
// Rejection (no event; the caller gets the failure).
import type { temporal as T } from '@temporalio/proto';
import type { RunTx, UpdateState } from './run.js';
import type { CallContext } from './grpc.js';
import { CommandError, type EngineHost as Engine } from './host.js';
import { api, ET, WftFailedCause, b64, unb64, notFound, invalid } from './proto.js';

const U = api.update.v1;
const Stage = api.enums.v1.UpdateWorkflowExecutionLifecycleStage;
const WAIT_MS = 20_000;

type Msg = T.api.protocol.v1.IMessage;

function decodeBody(m: Msg): { kind: 'acceptance' | 'rejection' | 'response'; body: any } {
  const url = m.body?.type_url ?? '';
  const value = m.body?.value ?? new Uint8Array();
  if (url.endsWith('temporal.api.update.v1.Acceptance')) return { kind: 'acceptance', body: U.Acceptance.decode(value) };
  if (url.endsWith('temporal.api.update.v1.Rejection')) return { kind: 'rejection', body: U.Rejection.decode(value) };
  if (url.endsWith('temporal.api.update.v1.Response')) return { kind: 'response', body: U.Response.decode(value) };
  throw new CommandError(WftFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_UPDATE_WORKFLOW_EXECUTION_MESSAGE, `unsupported protocol message body ${url}`);
}

/** PROTOCOL_MESSAGE command: the referenced Acceptance or Response becomes its event. */
export function applyProtocolCommand(r: RunTx, messageId: string, messages: Map<string, Msg>, _completedId: number): void {
  const m = messages.get(messageId);
  if (!m) throw new CommandError(WftFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_UPDATE_WORKFLOW_EXECUTION_MESSAGE, `no message with ID ${messageId} in the completion`);
  messages.delete(messageId);
  const updates = (r.s.updates ??= {});
  const id = m.protocolInstanceId ?? '';
  const u = updates[id];
  const { kind, body } = decodeBody(m);
  if (!u) throw new CommandError(WftFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_UPDATE_WORKFLOW_EXECUTION_MESSAGE, `unknown update ${id}`);
  if (kind === 'acceptance') {
    u.acceptedEventId = r.append({
      eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
      workflowExecutionUpdateAcceptedEventAttributes: {
        protocolInstanceId: id, acceptedRequestMessageId: body.acceptedRequestMessageId,
        acceptedRequestSequencingEventId: body.acceptedRequestSequencingEventId, acceptedRequest: body.acceptedRequest,
      },
    });
    u.stage = Math.max(u.stage, Stage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ACCEPTED);
  } else if (kind === 'response') {
    if (!u.acceptedEventId) throw new CommandError(WftFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_UPDATE_WORKFLOW_EXECUTION_MESSAGE, `update ${id} completed before it was accepted`);
    r.append({
      eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
      workflowExecutionUpdateCompletedEventAttributes: { meta: body.meta, acceptedEventId: u.acceptedEventId, outcome: body.outcome },
    });
    u.stage = Stage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED;
    u.outcome = b64(U.Outcome, body.outcome ?? {});
  } else {
    throw new CommandError(WftFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_UPDATE_WORKFLOW_EXECUTION_MESSAGE, 'a rejection is not referenced by a command');
  }
}

/** Messages no command referenced: rejections complete their update with the failure and write nothing. */
export function applyLeftoverMessages(r: RunTx, messages: Map<string, Msg>): void {
  for (const m of messages.values()) {
    const { kind, body } = decodeBody(m);
    const u = r.s.updates?.[m.protocolInstanceId ?? ''];
    if (kind !== 'rejection' || !u) {
      throw new CommandError(WftFailedCause.WORKFLOW_TASK_FAILED_CAUSE_BAD_UPDATE_WORKFLOW_EXECUTION_MESSAGE, `${kind} message ${m.id} has no PROTOCOL_MESSAGE command`);
    }
    u.stage = Stage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED;
    u.outcome = b64(U.Outcome, { failure: body.failure });
  }
}

/** Waits until the update reaches `stage`, its run closes, or the wait runs out; returns the state then. */
async function waitFor(engine: Engine, runId: string, updateId: string, stage: number, ctx: CallContext) {
  const until = Math.min(Date.now() + WAIT_MS, ctx.deadline - 1000);
  for (;;) {
    const s = engine.loadState(runId)!;
    const u = s.updates?.[updateId];
    if (!u) throw notFound(`update ${updateId} not found`);
    const done = u.stage >= stage || u.stage === Stage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED;
    if (done) return { s, u };
    if (s.closeEventId) throw notFound('workflow execution already completed');
    const left = until - Date.now();
    if (left <= 0 || ctx.cancelled || engine.shuttingDown) return { s, u };
    await engine.waitHistory(runId, left, (fn) => ctx.onCancel(fn));
  }
}

function response(s: { workflowId: string; runId: string }, updateId: string, u: UpdateState) {
  return {
    updateRef: { workflowExecution: { workflowId: s.workflowId, runId: s.runId }, updateId },
    outcome: unb64(U.Outcome, u.outcome) ?? null,
    stage: u.stage,
  };
}

export async function updateWorkflowExecution(engine: Engine, ns: string, req: T.api.workflowservice.v1.IUpdateWorkflowExecutionRequest, ctx: CallContext) {
  const updateId = req.request?.meta?.updateId ?? '';
  if (!updateId) throw invalid('Update ID is not set on request.');
  if (!req.request?.input?.name) throw invalid('Update name is not set on request.');
  const runId = engine.resolveRun(ns, req.workflowExecution?.workflowId ?? '', req.workflowExecution?.runId);
  engine.checkChain(runId, req.firstExecutionRunId);
  engine.withRun(runId, (r) => {
    const updates = (r.s.updates ??= {});
    if (updates[updateId]) return; // the same update again: report on the existing one
    if (!r.open) throw notFound('workflow execution already completed');
    updates[updateId] = { stage: Stage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED };
    r.addWaking({
      eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED,
      workflowExecutionUpdateAdmittedEventAttributes: { request: req.request, origin: 0 },
    });
  });
  const want = Math.max(req.waitPolicy?.lifecycleStage ?? 0, Stage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ACCEPTED);
  const { s, u } = await waitFor(engine, runId, updateId, want, ctx);
  return response(s, updateId, u);
}

export async function pollWorkflowExecutionUpdate(engine: Engine, ns: string, req: T.api.workflowservice.v1.IPollWorkflowExecutionUpdateRequest, ctx: CallContext) {
  const ref = req.updateRef;
  const runId = engine.resolveRun(ns, ref?.workflowExecution?.workflowId ?? '', ref?.workflowExecution?.runId);
  const want = req.waitPolicy?.lifecycleStage || Stage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_COMPLETED;
  const { s, u } = await waitFor(engine, runId, ref?.updateId ?? '', want, ctx);
  return response(s, ref?.updateId ?? '', u);
}
