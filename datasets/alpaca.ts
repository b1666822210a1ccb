// The Alpaca prompt template (Stanford Alpaca's train.py PROMPT_DICT), in its two forms. The response follows
// the prompt directly; only response tokens (and the EOS after them) carry loss.
export const ALPACA_PROMPT_INPUT =
  'Below is an instruction that describes a task, paired with an input that provides further context. ' +
  'Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:';

export const ALPACA_PROMPT_NO_INPUT =
  'Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n' +
  '### Instruction:\n{instruction}\n\n### Response:';

/** The prompt for one record; the form without input when `input` is empty or whitespace. */
export function alpacaPrompt(instruction: string, input: string): string {
  // split/join instead of replace: '$&' and friends in the data must stay literal.
  const fill = (tpl: string, key: string, v: string) => tpl.split(`{${key}}`).join(v);
  return input.trim() === ''
    ? fill(ALPACA_PROMPT_NO_INPUT, 'instruction', instruction)
    : fill(fill(ALPACA_PROMPT_INPUT, 'instruction', instruction), 'input', input);
}
