// chat mode: conversations → text rendered with the model's chat template → token ids + a loss mask on the
// assistant turns.
//
// Records come in three shapes: OpenAI `messages` ([{role, content}], content a string or a list of text parts),
// ShareGPT `conversations` ([{from, value}], from human/gpt/system/...), and reference-based QA (context +
// question → answer, one user turn and one assistant turn). Every one becomes a list of {role, content} messages.
//
// Rendering uses Hugging Face's own Jinja for JavaScript (@huggingface/jinja) with the settings transformers'
// apply_chat_template uses (trim_blocks, lstrip_blocks, raise_exception, the tokenizer's special tokens as
// variables), so the text is the one Python would train on. Assistant turn i is located the way the template
// itself defines it: render messages[0..i) with add_generation_prompt = true (the prompt up to where the model
// starts answering) and messages[0..i] without it; the turn is the text between the two, up to its last
// non-whitespace character, so the end-of-turn token (</s>, <|im_end|>, <|eot_id|>...) is inside the loss and the
// newline a template writes after it is not. A template that does not render conversations as growing prefixes of
// each other is refused (the turn could not be located). Tokens whose first character lies in an assistant turn
// carry loss; the whole text is tokenized once, without added special tokens (the template writes BOS itself), as
// apply_chat_template(tokenize=True) does.
import { Template } from '@huggingface/jinja';
import type { FinetuneConfig, TokenizerConfig } from '../configs/index.js';
import { badInput } from './errors.js';
import { readChatTemplate, readTokenizerConfig, tokenizerFolder, tokenText } from './model-folder.js';
import { addedTokenText, type LoadedTokenizer } from './tokenizer.js';

export type ChatSettings = FinetuneConfig['preprocess']['chat'];

export interface ChatMessage {
  role: string;
  content: string;
}

/**
 * Built-in templates for models without one of their own. chatml: OpenAI's ChatML (<|im_start|>role ... <|im_end|>),
 * the template of Qwen, SmolLM and many fine-tunes (and transformers' former default). zephyr: the template of
 * HuggingFaceH4/zephyr-7b-beta and TinyLlama-1.1B-Chat (<|user|> ... </s>), which needs only the tokenizer's EOS.
 */
export const BUILTIN_CHAT_TEMPLATES: Record<'chatml' | 'zephyr', string> = {
  chatml:
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
  zephyr:
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n" +
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n" +
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n" +
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}",
};

/** A compiled chat template with the tokenizer's special tokens bound, as apply_chat_template renders it. */
export class ChatTemplate {
  private readonly compiled: Template;

  constructor(
    readonly source: string,
    /** Where the template came from: a file, or `builtin:<name>`. */
    readonly origin: string,
    /** bos_token, eos_token, ... as transformers passes them to the template. */
    readonly specialTokens: Record<string, string>,
  ) {
    try {
      this.compiled = new Template(source);
    } catch (e) {
      throw badInput(origin, `the chat template does not parse: ${(e as Error).message}`);
    }
  }

  render(messages: ChatMessage[], addGenerationPrompt: boolean): string {
    return this.compiled.render({ ...this.specialTokens, messages, add_generation_prompt: addGenerationPrompt });
  }
}

/**
 * The template chat mode renders with: the tokenizer folder's own (`template: 'model'`), or a built-in one. Special
 * tokens come from tokenizer_config.json, else from the tokenizer's EOS/BOS ids.
 */
export function loadChatTemplate(settings: ChatSettings, tokCfg: TokenizerConfig, tok: LoadedTokenizer): ChatTemplate {
  const folder = tokCfg.type === 'huggingface' ? tokenizerFolder(tokCfg.path) : undefined;
  const tc = folder ? readTokenizerConfig(folder) : undefined;
  const specials: Record<string, string> = {};
  const contentOf = (id: number | undefined) => addedTokenText(tok, id);
  for (const k of ['bos_token', 'eos_token', 'unk_token', 'pad_token', 'sep_token', 'cls_token', 'mask_token']) {
    const v = tokenText(tc?.[k]);
    if (v !== undefined) specials[k] = v;
  }
  specials.eos_token ??= contentOf(tok.eosId) ?? '';
  const bos = contentOf(tok.bosId);
  if (specials.bos_token === undefined && bos !== undefined) specials.bos_token = bos;
  if (settings.template !== 'model') return new ChatTemplate(BUILTIN_CHAT_TEMPLATES[settings.template], `builtin:${settings.template}`, specials);
  const found = folder ? readChatTemplate(folder) : undefined;
  if (!found)
    throw badInput(
      folder ?? 'tokenizer',
      "preprocess.chat.template 'model': the tokenizer's folder has no chat template (no chat_template.jinja, no 'chat_template' in tokenizer_config.json); " +
        "set preprocess.chat.template to 'chatml' or 'zephyr' to use a built-in one",
    );
  return new ChatTemplate(found.template, found.file, specials);
}

const SHAREGPT_ROLES: Record<string, string> = {
  human: 'user', user: 'user', gpt: 'assistant', assistant: 'assistant', chatgpt: 'assistant', model: 'assistant',
  bard: 'assistant', bing: 'assistant', system: 'system', tool: 'tool', function: 'tool', observation: 'tool',
};

/** One record's conversation; errors name the record (`at`) and the field. */
export function messagesOf(record: Record<string, unknown>, s: ChatSettings, at: string): ChatMessage[] {
  let format = s.format;
  if (format === 'auto') {
    if (Array.isArray(record[s.messagesField])) format = 'openai';
    else if (Array.isArray(record[s.conversationsField])) format = 'sharegpt';
    else
      throw badInput(
        at,
        `no '${s.messagesField}' (OpenAI) or '${s.conversationsField}' (ShareGPT) list (fields: ${Object.keys(record).join(', ') || 'none'}); ` +
          `set preprocess.chat.format ('qa' for context/question/answer records) or the field names`,
      );
  }
  const str = (v: unknown, field: string): string => {
    if (typeof v === 'string') return v;
    throw badInput(at, `${field} is ${v === null ? 'null' : Array.isArray(v) ? 'a list' : typeof v}, expected a string`);
  };
  if (format === 'qa') {
    const f = s.qaFields;
    for (const k of [f.question, f.answer])
      if (record[k] === undefined) throw badInput(at, `no field '${k}' (fields: ${Object.keys(record).join(', ')}); set preprocess.chat.qaFields`);
    const context = record[f.context] === undefined || record[f.context] === null ? '' : str(record[f.context], `field '${f.context}'`);
    const question = str(record[f.question], `field '${f.question}'`);
    return [
      { role: 'user', content: context.trim() === '' ? question : `${context}\n\n${question}` },
      { role: 'assistant', content: str(record[f.answer], `field '${f.answer}'`) },
    ];
  }
  const field = format === 'openai' ? s.messagesField : s.conversationsField;
  const list = record[field];
  if (!Array.isArray(list)) throw badInput(at, `field '${field}' is ${list === undefined ? 'missing' : typeof list}, expected a list of messages`);
  const out: ChatMessage[] = [];
  // ShareGPT datasets often keep the system prompt beside the turns.
  if (format === 'sharegpt' && typeof record.system === 'string' && record.system.trim() !== '') out.push({ role: 'system', content: record.system });
  list.forEach((m, i) => {
    const name = `${field}[${i}]`;
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw badInput(at, `${name} is not an object`);
    const o = m as Record<string, unknown>;
    if (format === 'openai') {
      const role = str(o.role, `${name}.role`);
      out.push({ role, content: contentText(o.content, `${name}.content`, at) });
    } else {
      const from = str(o.from, `${name}.from`);
      const role = SHAREGPT_ROLES[from.toLowerCase()];
      if (!role) throw badInput(at, `${name}.from is '${from}'; expected one of ${Object.keys(SHAREGPT_ROLES).join(', ')}`);
      out.push({ role, content: str(o.value, `${name}.value`) });
    }
  });
  if (out.length === 0) throw badInput(at, `field '${field}' is an empty conversation`);
  return out;
}

/** OpenAI content: a string, or a list of parts of which the text ones are joined. */
function contentText(v: unknown, field: string, at: string): string {
  if (typeof v === 'string') return v;
  if (v === null || v === undefined) return '';
  if (Array.isArray(v)) {
    return v
      .map((p, i) => {
        const o = p as { type?: unknown; text?: unknown };
        if (o && typeof o === 'object' && o.type === 'text' && typeof o.text === 'string') return o.text;
        throw badInput(at, `${field}[${i}] is not a text part ({type: 'text', text}); only text conversations can be trained`);
      })
      .join('');
  }
  throw badInput(at, `${field} is ${typeof v}, expected a string or a list of text parts`);
}

export interface RenderedChat {
  text: string;
  /** Loss spans [start, end) in Unicode code points of `text` (the tokenizer's offsets count code points). */
  spans: number[];
}

/** Render a conversation and locate its assistant turns (all, or the last: `lossOn`). */
export function renderChat(tpl: ChatTemplate, messages: ChatMessage[], lossOn: ChatSettings['lossOn'], at: string): RenderedChat {
  const render = (msgs: ChatMessage[], gen: boolean) => {
    try {
      return tpl.render(msgs, gen);
    } catch (e) {
      throw badInput(at, `chat template (${tpl.origin}): ${(e as Error).message}`);
    }
  };
  const text = render(messages, false);
  const turns: number[] = [];
  messages.forEach((m, i) => m.role === 'assistant' && turns.push(i));
  const chosen = lossOn === 'last' ? turns.slice(-1) : turns;
  const spans: number[] = [];
  for (const i of chosen) {
    const prompt = render(messages.slice(0, i), true);
    const upTo = i === messages.length - 1 ? text : render(messages.slice(0, i + 1), false);
    if (!upTo.startsWith(prompt) || !text.startsWith(upTo))
      throw badInput(
        at,
        `chat template (${tpl.origin}) does not render the conversation up to assistant turn ${i} as a prefix of the whole ` +
          `(it changes earlier turns), so the turn cannot be located; use another template (preprocess.chat.template)`,
      );
    const end = upTo.trimEnd().length;
    if (end <= prompt.length) continue; // an empty answer: nothing to learn
    spans.push(codePoints(text, prompt.length), codePoints(text, end));
  }
  return { text, spans };
}

/** Code points in text[0, utf16Index). */
function codePoints(text: string, utf16Index: number): number {
  let n = 0;
  for (let i = 0; i < utf16Index; i++) {
    const c = text.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < utf16Index) i++;
    n++;
  }
  return n;
}

/** Loss mask of a tokenized chat: 1 where a token's first character (`starts`, code points) is in a span. */
export function chatLossMask(starts: ArrayLike<number>, spans: number[]): Uint8Array {
  const mask = new Uint8Array(starts.length);
  for (let t = 0; t < starts.length; t++) {
    const s = starts[t]!;
    for (let k = 0; k < spans.length; k += 2)
      if (s >= spans[k]! && s < spans[k + 1]!) {
        mask[t] = 1;
        break;
      }
  }
  return mask;
}
