// What the data half and the export read from a local Hugging Face model folder besides the weights: the model's
// vocabulary size and context length (config.json), and the tokenizer's side files (tokenizer_config.json with
// its special tokens and chat template, special_tokens_map.json, chat_template.jinja) that an export carries over
// so that AutoTokenizer on the exported folder has the same bos/eos and apply_chat_template works.
import { copyFileSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { badInput } from './errors.js';

/** The shape fields that the data must fit: token ids below vocabSize, sequences no longer than nPositions. */
export interface ModelShape {
  modelType: string;
  vocabSize: number;
  nPositions: number;
}

/** Reads `dir/config.json` (GPT-2 / GPT-J `n_positions`, Llama / NeoX `max_position_embeddings`). */
export function readModelShape(dir: string): ModelShape {
  const file = join(dir, 'config.json');
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw badInput(file, `cannot read the model's config.json: ${(e as Error).message}`);
  }
  const vocab = c.vocab_size;
  const ctx = c.n_positions ?? c.max_position_embeddings ?? c.n_ctx;
  if (typeof vocab !== 'number' || typeof ctx !== 'number')
    throw badInput(file, `expected numeric vocab_size and n_positions/max_position_embeddings, got ${JSON.stringify(vocab)} and ${JSON.stringify(ctx)}`);
  return { modelType: String(c.model_type ?? 'unknown'), vocabSize: vocab, nPositions: ctx };
}

/** Problems of a tokenizer + blockSize against a pretrained model's config.json, one readable line each. */
export function shapeMismatches(shape: ModelShape, dir: string, tokenizerVocab: number, tokenizerName: string, blockSize: number): string[] {
  const out: string[] = [];
  if (tokenizerVocab > shape.vocabSize)
    out.push(
      `tokenizer: ${tokenizerName} has ${tokenizerVocab} tokens but the model at ${dir} has vocab_size ${shape.vocabSize}: ids ${shape.vocabSize}..${tokenizerVocab - 1} have no embedding; use the model's own tokenizer (leave tokenizer unset)`,
    );
  if (blockSize > shape.nPositions)
    out.push(`preprocess.blockSize: ${blockSize} exceeds the model's context of ${shape.nPositions} positions (${dir}/config.json); use at most ${shape.nPositions}`);
  return out;
}

/** Tokenizer files besides tokenizer.json that belong with it in a model folder (copied by an export). */
export const TOKENIZER_SIDE_FILES = ['tokenizer_config.json', 'special_tokens_map.json', 'chat_template.jinja', 'chat_template.json'] as const;

/** The folder a tokenizer.json path (or a folder holding one) belongs to. */
export function tokenizerFolder(tokenizerJsonPath: string): string {
  try {
    if (statSync(tokenizerJsonPath).isDirectory()) return tokenizerJsonPath;
  } catch {
    // a missing path is reported by whoever reads it
  }
  return dirname(tokenizerJsonPath);
}

/** tokenizer_config.json of a folder, or undefined when it has none. */
export function readTokenizerConfig(folder: string): Record<string, unknown> | undefined {
  const file = join(folder, 'tokenizer_config.json');
  if (!existsSync(file)) return undefined;
  try {
    const j = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    if (j === null || typeof j !== 'object' || Array.isArray(j)) throw new Error('not a JSON object');
    return j as Record<string, unknown>;
  } catch (e) {
    throw badInput(file, `cannot read tokenizer_config.json: ${(e as Error).message}`);
  }
}

/**
 * The folder's chat template, as transformers finds it: chat_template.jinja, else chat_template.json's or
 * tokenizer_config.json's `chat_template` (a string, or a list of named templates: the one named 'default').
 */
export function readChatTemplate(folder: string): { template: string; file: string } | undefined {
  const jinja = join(folder, 'chat_template.jinja');
  if (existsSync(jinja)) return { template: readFileSync(jinja, 'utf8'), file: jinja };
  for (const name of ['chat_template.json', 'tokenizer_config.json']) {
    const file = join(folder, name);
    if (!existsSync(file)) continue;
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw badInput(file, `not valid JSON: ${(e as Error).message}`);
    }
    const t = j?.chat_template;
    if (typeof t === 'string') return { template: t, file };
    if (Array.isArray(t)) {
      const d = t.find((x) => x && typeof x === 'object' && (x as { name?: unknown }).name === 'default') as { template?: unknown } | undefined;
      if (d && typeof d.template === 'string') return { template: d.template, file };
      throw badInput(file, `chat_template lists named templates (${t.map((x) => JSON.stringify((x as { name?: unknown })?.name)).join(', ')}) but none named 'default'`);
    }
  }
  return undefined;
}

/** A special token's text from tokenizer_config.json (a string, or an AddedToken object with `content`). */
export function tokenText(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

/**
 * Completes an exported model folder `out` (config.json, weights and tokenizer.json already written) with what
 * AutoTokenizer and generation need from the model it was trained from:
 *   - the tokenizer's side files (tokenizer_config.json with bos/eos/pad and chat template, special_tokens_map.json,
 *     chat_template.jinja) from the tokenizer's folder; a tokenizer without a tokenizer_config.json (GPT-2's
 *     built-in, a bare tokenizer.json) gets one naming its special tokens and the model's context length;
 *   - `chatTemplate` (the built-in template chat mode trained with) when the tokenizer has none of its own;
 *   - the source model's generation_config.json (sampling defaults, every end-of-turn id) in place of the minimal
 *     one the engine writes.
 */
export function carryModelFiles(
  out: string,
  o: { tokenizerFolder?: string; specialTokens: { bos?: string; eos: string; pad?: string }; chatTemplate?: string; sourceModel?: string },
): void {
  let hasConfig = false;
  if (o.tokenizerFolder)
    for (const f of TOKENIZER_SIDE_FILES) {
      const src = join(o.tokenizerFolder, f);
      if (!existsSync(src)) continue;
      copyFileSync(src, join(out, f));
      hasConfig ||= f === 'tokenizer_config.json';
    }
  const file = join(out, 'tokenizer_config.json');
  let tc: Record<string, unknown>;
  if (hasConfig) tc = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  else {
    const s = o.specialTokens;
    let maxLen: number | undefined;
    try {
      maxLen = readModelShape(out).nPositions;
    } catch {
      maxLen = undefined;
    }
    tc = {
      tokenizer_class: 'PreTrainedTokenizerFast',
      bos_token: s.bos ?? s.eos,
      eos_token: s.eos,
      ...(s.pad !== undefined && s.pad !== s.eos ? { pad_token: s.pad } : {}),
      ...(maxLen ? { model_max_length: maxLen } : {}),
      clean_up_tokenization_spaces: false,
    };
  }
  const hasTemplate = existsSync(join(out, 'chat_template.jinja')) || existsSync(join(out, 'chat_template.json')) || tc.chat_template !== undefined;
  const changed = !hasConfig || (o.chatTemplate !== undefined && !hasTemplate);
  if (o.chatTemplate !== undefined && !hasTemplate) tc.chat_template = o.chatTemplate;
  if (changed) writeFileSync(file, JSON.stringify(tc, null, 2) + '\n');
  const gen = o.sourceModel && join(o.sourceModel, 'generation_config.json');
  if (gen && existsSync(gen)) copyFileSync(gen, join(out, 'generation_config.json'));
}
