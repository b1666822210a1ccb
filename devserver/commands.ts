// Applies the commands of a workflow-task completion in order, appending one command event each (core matches
// them one-to-one with the commands it sent). A refused command throws CommandError; the caller then rolls the
// whole completion back and records WorkflowTaskFailed instead.
import type { temporal as T } from '@temporalio/proto';
import { randomUUID } from 'node:crypto';
import type { EngineHost as Engine } from './host.js';
import type { RunTx } from './run.js';
import * as activities from './activities.js';
import * as children from './children.js';
import { closeWithRetry } from './workflow-retry.js';
import { CommandError } from './host.js';
import { applyProtocolCommand, applyLeftoverMessages } from './updates.js';
import { api, CT, ET, WS, WftFailedCause as C, dur, ms, num, b64, unb64, checkBlob, checkMemo, HistoryEvent } from './proto.js';

type Command = T.api.command.v1.ICommand;
const Memo = api.common.v1.Memo;

export const CLOSING = new Set<number>([
  CT.COMMAND_TYPE_COMPLETE_WORKFLOW_EXECUTION,
  CT.COMMAND_TYPE_FAIL_WORKFLOW_EXECUTION,
  CT.COMMAND_TYPE_CANCEL_WORKFLOW_EXECUTION,
  CT.COMMAND_TYPE_CONTINUE_AS_NEW_WORKFLOW_EXECUTION,
]);

function blob(engine: Engine, cause: number, what: string, payloads: any): void {
  try {
    checkBlob(what, payloads?.payloads, engine.log);
  } catch (e) {
    throw new CommandError(cause, (e as Error).message);
  }
}

function memoLimit(engine: Engine, cause: number, what: string, memo: T.api.common.v1.IMemo | null | undefined): void {
  try {
    checkMemo(what, memo, engine.log);
  } catch (e) {
    throw new CommandError(cause, (e as Error).message);
  }
}

export function applyCommands(engine: Engine, r: RunTx, commands: Command[], completedId: number, identity: string, messages: T.api.protocol.v1.IMessage[] = []): void {
  const byId = new Map(messages.map((m) => [m.id ?? '', m]));
  commands.forEach((c, i) => {
    if (!r.open) throw new CommandError(C.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND, `command ${i + 1} follows a workflow-closing command`);
    r.commandMetadata = c.userMetadata ?? null; // activity/timer summaries, shown by UIs
    if (c.commandType === CT.COMMAND_TYPE_PROTOCOL_MESSAGE) applyProtocolCommand(r, c.protocolMessageCommandAttributes?.messageId ?? '', byId, completedId);
    else apply(engine, r, c, completedId, identity);
    r.commandMetadata = null;
  });
  applyLeftoverMessages(r, byId);
}

function apply(engine: Engine, r: RunTx, c: Command, completedId: number, identity: string): void {
  const s = r.s;
  switch (c.commandType) {
    case CT.COMMAND_TYPE_SCHEDULE_ACTIVITY_TASK:
      blob(engine, C.WORKFLOW_TASK_FAILED_CAUSE_BAD_SCHEDULE_ACTIVITY_ATTRIBUTES, 'activity input', c.scheduleActivityTaskCommandAttributes?.input);
      return activities.schedule(r, c.scheduleActivityTaskCommandAttributes ?? {}, completedId);

    case CT.COMMAND_TYPE_REQUEST_CANCEL_ACTIVITY_TASK:
      return activities.requestCancel(engine, r, num(c.requestCancelActivityTaskCommandAttributes?.scheduledEventId), completedId);

    case CT.COMMAND_TYPE_START_TIMER: {
      const a = c.startTimerCommandAttributes ?? {};
      const timerId = a.timerId ?? '';
      const after = ms(a.startToFireTimeout);
      if (!timerId) throw new CommandError(C.WORKFLOW_TASK_FAILED_CAUSE_BAD_START_TIMER_ATTRIBUTES, 'TimerId is not set on StartTimerCommand.');
      // A zero (or unset) duration is a timer that fires at once, as on Temporal; only a negative one is refused.
      if (after < 0) {
        throw new CommandError(C.WORKFLOW_TASK_FAILED_CAUSE_BAD_START_TIMER_ATTRIBUTES, `An invalid StartToFireTimeout is set on StartTimerCommand: negative duration. TimerId=${timerId}`);
      }
      if (s.timers[timerId]) throw new CommandError(C.WORKFLOW_TASK_FAILED_CAUSE_START_TIMER_DUPLICATE_ID, `Timer ID ${timerId} is already in use.`);
      const id = r.append({
        eventType: ET.EVENT_TYPE_TIMER_STARTED,
        timerStartedEventAttributes: { timerId, startToFireTimeout: a.startToFireTimeout, workflowTaskCompletedEventId: completedId },
      });
      s.timers[timerId] = { startedEventId: id, fireMs: r.now + after };
      r.addTimer(r.now + after, 'user', timerId, id);
      return;
    }

    case CT.COMMAND_TYPE_CANCEL_TIMER: {
      const timerId = c.cancelTimerCommandAttributes?.timerId ?? '';
      let startedEventId = s.timers[timerId]?.startedEventId;
      if (startedEventId) delete s.timers[timerId];
      else {
        // The timer fired while this task ran: its TimerFired is buffered. Drop it and record the cancel.
        const i = s.buffered.findIndex((b) => b.type === ET.EVENT_TYPE_TIMER_FIRED && b.ref === timerId);
        if (i < 0) throw new CommandError(C.WORKFLOW_TASK_FAILED_CAUSE_BAD_CANCEL_TIMER_ATTRIBUTES, `invalid TimerId ${timerId}: no pending timer`);
        startedEventId = num(HistoryEvent.decode(Buffer.from(s.buffered[i]!.data, 'base64')).timerFiredEventAttributes?.startedEventId);
        s.buffered.splice(i, 1);
      }
      r.append({
        eventType: ET.EVENT_TYPE_TIMER_CANCELED,
        timerCanceledEventAttributes: { timerId, startedEventId, workflowTaskCompletedEventId: completedId, identity },
      });
      return;
    }

    case CT.COMMAND_TYPE_RECORD_MARKER: {
      const a = c.recordMarkerCommandAttributes ?? {};
      r.append({
        eventType: ET.EVENT_TYPE_MARKER_RECORDED,
        markerRecordedEventAttributes: { markerName: a.markerName, details: a.details, header: a.header, failure: a.failure, workflowTaskCompletedEventId: completedId },
      });
      return;
    }

    case CT.COMMAND_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES: {
      const fields = c.upsertWorkflowSearchAttributesCommandAttributes?.searchAttributes?.indexedFields ?? {};
      let merged;
      try {
        merged = engine.sa.merge(s.namespace, s.searchAttributes, fields);
      } catch (e) {
        throw new CommandError(C.WORKFLOW_TASK_FAILED_CAUSE_BAD_SEARCH_ATTRIBUTES, (e as Error).message);
      }
      s.searchAttributes = merged.encoded;
      s.searchJson = merged.json;
      r.append({
        eventType: ET.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
        upsertWorkflowSearchAttributesEventAttributes: { searchAttributes: { indexedFields: fields }, workflowTaskCompletedEventId: completedId },
      });
      return;
    }

    case CT.COMMAND_TYPE_MODIFY_WORKFLOW_PROPERTIES: {
      const upserted = c.modifyWorkflowPropertiesCommandAttributes?.upsertedMemo ?? { fields: {} };
      const fields = { ...(unb64(Memo, s.memo)?.fields ?? {}) };
      for (const [k, v] of Object.entries(upserted.fields ?? {})) {
        if (!v?.data?.length || Buffer.from(v.metadata?.encoding ?? []).toString() === 'binary/null') delete fields[k];
        else fields[k] = v;
      }
      memoLimit(engine, C.WORKFLOW_TASK_FAILED_CAUSE_BAD_MODIFY_WORKFLOW_PROPERTIES_ATTRIBUTES, 'memo', { fields });
      s.memo = Object.keys(fields).length ? b64(Memo, { fields }) : null;
      r.append({
        eventType: ET.EVENT_TYPE_WORKFLOW_PROPERTIES_MODIFIED,
        workflowPropertiesModifiedEventAttributes: { upsertedMemo: upserted, workflowTaskCompletedEventId: completedId },
      });
      return;
    }

    case CT.COMMAND_TYPE_COMPLETE_WORKFLOW_EXECUTION: {
      const result = c.completeWorkflowExecutionCommandAttributes?.result;
      blob(engine, C.WORKFLOW_TASK_FAILED_CAUSE_BAD_COMPLETE_WORKFLOW_EXECUTION_ATTRIBUTES, 'workflow result', result);
      r.close(WS.WORKFLOW_EXECUTION_STATUS_COMPLETED, {
        eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
        workflowExecutionCompletedEventAttributes: { result, workflowTaskCompletedEventId: completedId },
      });
      return;
    }

    case CT.COMMAND_TYPE_FAIL_WORKFLOW_EXECUTION:
      return closeWithRetry(engine, r, { failure: c.failWorkflowExecutionCommandAttributes?.failure, completedId });

    case CT.COMMAND_TYPE_CANCEL_WORKFLOW_EXECUTION:
      r.close(WS.WORKFLOW_EXECUTION_STATUS_CANCELED, {
        eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED,
        workflowExecutionCanceledEventAttributes: { details: c.cancelWorkflowExecutionCommandAttributes?.details, workflowTaskCompletedEventId: completedId },
      });
      return;

    case CT.COMMAND_TYPE_CONTINUE_AS_NEW_WORKFLOW_EXECUTION:
      return continueAsNew(engine, r, c.continueAsNewWorkflowExecutionCommandAttributes ?? {}, completedId, identity);

    case CT.COMMAND_TYPE_START_CHILD_WORKFLOW_EXECUTION:
      return children.startChild(engine, r, c.startChildWorkflowExecutionCommandAttributes ?? {}, completedId);
    case CT.COMMAND_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION:
      return children.signalExternal(engine, r, c.signalExternalWorkflowExecutionCommandAttributes ?? {}, completedId);
    case CT.COMMAND_TYPE_REQUEST_CANCEL_EXTERNAL_WORKFLOW_EXECUTION:
      return children.cancelExternal(r, c.requestCancelExternalWorkflowExecutionCommandAttributes ?? {}, completedId);

    default:
      throw new CommandError(
        C.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,
        `command type ${c.commandType} (${(CT as Record<string, unknown>)[c.commandType as any] ?? 'unknown'}) is not supported by the finetune dev server; see devserver/README.md`,
      );
  }
}

/** Closes this run with WorkflowExecutionContinuedAsNew and starts the next run of the chain. */
function continueAsNew(engine: Engine, r: RunTx, a: T.api.command.v1.IContinueAsNewWorkflowExecutionCommandAttributes, completedId: number, identity: string): void {
  const s = r.s;
  blob(engine, C.WORKFLOW_TASK_FAILED_CAUSE_BAD_CONTINUE_AS_NEW_ATTRIBUTES, 'continue-as-new input', a.input);
  memoLimit(engine, C.WORKFLOW_TASK_FAILED_CAUSE_BAD_CONTINUE_AS_NEW_ATTRIBUTES, 'continue-as-new memo', a.memo);
  const type = a.workflowType?.name || s.type;
  const taskQueue = a.taskQueue?.name || s.taskQueue;
  let runTimeoutMs = ms(a.workflowRunTimeout) || s.runTimeoutMs;
  if (s.execExpirationMs > 0) runTimeoutMs = Math.max(1, Math.min(runTimeoutMs || Infinity, s.execExpirationMs - r.now));
  const wftTimeoutMs = ms(a.workflowTaskTimeout) || s.wftTimeoutMs;
  const newRunId = engine.createRun({
    namespace: s.namespace, workflowId: s.workflowId, type, taskQueue, input: a.input, header: a.header, memo: a.memo,
    searchAttributes: a.searchAttributes, wftTimeoutMs, runTimeoutMs, execTimeoutMs: s.execTimeoutMs,
    execExpirationMs: s.execExpirationMs, requestId: randomUUID(), identity, firstRunId: s.firstRunId,
    continuedRunId: s.runId, initiator: a.initiator || 1, lastCompletionResult: a.lastCompletionResult,
    continuedFailure: a.failure, backoffMs: ms(a.backoffStartInterval), retryPolicy: a.retryPolicy, parent: s.parent,
  });
  s.newRunId = newRunId;
  r.close(WS.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW, {
    eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    workflowExecutionContinuedAsNewEventAttributes: {
      newExecutionRunId: newRunId, workflowType: { name: type }, taskQueue: { name: taskQueue, kind: 1 }, input: a.input,
      workflowRunTimeout: dur(runTimeoutMs), workflowTaskTimeout: dur(wftTimeoutMs), backoffStartInterval: a.backoffStartInterval,
      initiator: a.initiator || 1, failure: a.failure, lastCompletionResult: a.lastCompletionResult, header: a.header,
      memo: a.memo, searchAttributes: a.searchAttributes, workflowTaskCompletedEventId: completedId,
    },
  });
}
