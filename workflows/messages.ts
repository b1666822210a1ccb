// The `finetune` workflow's messages: the progress query and the signals, for the workflow and its clients (CLI,
// tests). The shapes they carry live in common/ with every other type the workflow and its activities share, and
// are re-exported here for the clients.
import { defineQuery, defineSignal } from '@temporalio/workflow';
import type { Progress, TrainProgress } from '../common/index.js';

export * from '../common/index.js';

export const progressQuery = defineQuery<Progress>('progress');
/** Commit a checkpoint now (the training segment stops at the next step boundary, saves, and training goes on). */
export const checkpointNowSignal = defineSignal('checkpointNow');
/** Stop training gracefully: checkpoint, then export, evaluate and generate with what exists. */
export const stopSignal = defineSignal<[{ reason?: string }?]>('stop');
/** Internal: live progress from the train activity (the only way a workflow sees mid-activity progress). */
export const trainProgressSignal = defineSignal<[TrainProgress]>('trainProgress');
