// The workflow bundle's entry: every workflow type the workers register.
export { finetune } from './finetune.js';
