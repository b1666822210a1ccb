// What each persistent timer row does when it fires (inside the run's transaction). Every row is checked against
// the current state first — a timer armed for an earlier attempt or a finished task does nothing.
import type { EngineHost as Engine } from './host.js';
import type { RunTx } from './run.js';
import type { TimerRow } from './store.js';
import * as activities from './activities.js';
import * as children from './children.js';
import { closeWithRetry } from './workflow-retry.js';
import { ET, WS, RetryState } from './proto.js';

export function onTimer(engine: Engine, r: RunTx, t: TimerRow): void {
  const s = r.s;
  switch (t.kind) {
    case 'user': {
      const timer = s.timers[t.ref];
      if (!timer || timer.startedEventId !== t.attempt) return;
      delete s.timers[t.ref];
      r.addWaking({ eventType: ET.EVENT_TYPE_TIMER_FIRED, timerFiredEventAttributes: { timerId: t.ref, startedEventId: timer.startedEventId } }, t.ref);
      return;
    }
    case 'wft':
      if (s.wft?.state === 'started' && s.wft.scheduledEventId === Number(t.ref) && s.wft.attempt === t.attempt) {
        engine.log(`workflow task timed out: ${s.workflowId}/${s.runId} attempt ${t.attempt}`);
        engine.failWorkflowTask(r, { timeout: true });
      }
      return;
    case 'start':
      if (!s.wft && s.lastCompletedStartedEventId === 0) r.scheduleWorkflowTask(1);
      return;
    case 'run':
      // The run timeout may be retried by a workflow retry policy; the execution timeout ends the chain.
      if (t.ref === 'exec') {
        engine.forceClose(r, WS.WORKFLOW_EXECUTION_STATUS_TIMED_OUT, {
          eventType: ET.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
          workflowExecutionTimedOutEventAttributes: { retryState: RetryState.RETRY_STATE_TIMEOUT },
        });
      } else closeWithRetry(engine, r, { timeout: true });
      return;
    default:
      if (t.kind.startsWith('x_')) children.onTransfer(engine, r, t);
      else activities.onTimer(engine, r, t);
  }
}
