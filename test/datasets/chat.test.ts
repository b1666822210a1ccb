// chat mode: conversations rendered with a model's own chat template give exactly the token ids and loss masks
// that Python transformers' apply_chat_template gives (test/fixtures/chat/golden.json, made by make_golden.py with
// real templates of public models: zephyr-7b-beta / TinyLlama-Chat, Mistral-7B-Instruct-v0.1, and ChatML), and the
// pipeline writes them into shards: OpenAI, ShareGPT and QA records, JSONL and Parquet, loss on all or the last
// assistant turn, records that would train on nothing dropped and counted.
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Field, List, Struct, Table, Utf8, tableToIPC, vectorFromArray } from 'apache-arrow';
import * as pq from 'parquet-wasm';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../configs/index.js';
import { loadTokenizer, prepareData } from '../../datasets/index.js';
import { loadChatTemplate, messagesOf, renderChat, chatLossMask } from '../../datasets/chat.js';
import { EncodePool } from '../../datasets/encode-pool.js';
import { config, readSplit, tmp } from './helpers.js';

const CHAT = resolve(import.meta.dirname, '../fixtures/chat');
const golden = JSON.parse(readFileSync(join(CHAT, 'golden.json'), 'utf8')) as {
  cases: { folder: string; template: 'model' | 'chatml'; conversation: number; lossOn: 'assistant' | 'last'; text?: string; ids?: number[]; mask?: number[]; error?: string }[];
};
const conversations = readFileSync(join(CHAT, 'conversations.jsonl'), 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as Record<string, unknown>);
const chatDefaults = parseConfig({}).preprocess.chat;

describe('chat templates: ids and masks equal transformers apply_chat_template', () => {
  it.each(golden.cases.map((c) => [`${c.folder}/${c.template} conversation ${c.conversation} lossOn ${c.lossOn}`, c] as const))('%s', async (_, c) => {
    const tokCfg = { type: 'huggingface' as const, path: join(CHAT, c.folder) };
    const tok = await loadTokenizer(tokCfg);
    const tpl = loadChatTemplate({ ...chatDefaults, template: c.template }, tokCfg, tok);
    const messages = messagesOf(conversations[c.conversation]!, chatDefaults, 'conversations.jsonl');
    if (c.error) {
      expect(() => renderChat(tpl, messages, c.lossOn, 'conversations.jsonl:2')).toThrow(c.error);
      return;
    }
    const r = renderChat(tpl, messages, c.lossOn, 'x');
    expect(r.text).toBe(c.text);
    const pool = new EncodePool(tok.json, -1);
    try {
      const enc = await pool.encode([r.text], true);
      expect(Array.from(enc.ids)).toEqual(c.ids);
      expect(Array.from(chatLossMask(enc.starts!, r.spans))).toEqual(c.mask);
    } finally {
      await pool.close();
    }
  });

  it('covers loss on every assistant turn, the last one only, end-of-turn tokens and non-BMP text', () => {
    const z = golden.cases.filter((c) => c.folder === 'zephyr' && c.template === 'model' && c.conversation === 1);
    const all = z.find((c) => c.lossOn === 'assistant')!.mask!.reduce((a, b) => a + b, 0);
    const last = z.find((c) => c.lossOn === 'last')!.mask!.reduce((a, b) => a + b, 0);
    expect(last).toBeGreaterThan(0);
    expect(all).toBeGreaterThan(last);
    expect(golden.cases.some((c) => c.text?.includes('🙂'))).toBe(true);
  });
});

describe('chat records', () => {
  const s = chatDefaults;
  it('OpenAI messages (string or text parts), ShareGPT conversations with a system field, QA', () => {
    expect(messagesOf({ messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }, { type: 'text', text: 'b' }] }, { role: 'assistant', content: 'c' }] }, s, 'f:1')).toEqual([
      { role: 'user', content: 'ab' },
      { role: 'assistant', content: 'c' },
    ]);
    expect(messagesOf({ system: 'be brief', conversations: [{ from: 'human', value: 'q' }, { from: 'gpt', value: 'a' }] }, s, 'f:1')).toEqual([
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'q' },
      { role: 'assistant', content: 'a' },
    ]);
    expect(messagesOf({ context: 'Paris is in France.', question: 'Where is Paris?', answer: 'France' }, { ...s, format: 'qa' }, 'f:1')).toEqual([
      { role: 'user', content: 'Paris is in France.\n\nWhere is Paris?' },
      { role: 'assistant', content: 'France' },
    ]);
  });

  it('bad records name the record and the field', () => {
    expect(() => messagesOf({ text: 'x' }, s, 'd.jsonl:3')).toThrow(/d\.jsonl:3.*no 'messages' \(OpenAI\) or 'conversations' \(ShareGPT\)/);
    expect(() => messagesOf({ conversations: [{ from: 'robot', value: 'x' }] }, s, 'd.jsonl:4')).toThrow(/d\.jsonl:4.*conversations\[0\]\.from is 'robot'/);
    expect(() => messagesOf({ messages: [{ role: 'user', content: 5 }] }, s, 'd.jsonl:5')).toThrow(/d\.jsonl:5.*messages\[0\]\.content is number/);
    expect(() => messagesOf({ question: 'q' }, { ...s, format: 'qa' }, 'd.jsonl:6')).toThrow(/d\.jsonl:6.*no field 'answer'/);
  });

  it('a tokenizer folder without a chat template is refused unless a built-in one is named', async () => {
    const tokCfg = { type: 'huggingface' as const, path: resolve(import.meta.dirname, '../fixtures/golden/families/llama-tokenizer') };
    const tok = await loadTokenizer(tokCfg);
    expect(() => loadChatTemplate(s, tokCfg, tok)).toThrow(/no chat template.*'chatml' or 'zephyr'/);
    expect(loadChatTemplate({ ...s, template: 'zephyr' }, tokCfg, tok).render([{ role: 'user', content: 'q' }], true)).toBe('<|user|>\nq</s>\n<|assistant|>\n');
  });
});

describe('prepare in chat mode', () => {
  const tokenizer = { type: 'huggingface' as const, path: join(CHAT, 'zephyr') };

  it('writes the golden ids and labels into shards; a conversation without an assistant turn is dropped and reported', async () => {
    const cfg = config({
      data: { train: { type: 'jsonl', path: join(CHAT, 'conversations.jsonl') }, validationFraction: 0 },
      preprocess: { mode: 'chat', blockSize: 256 },
      tokenizer,
    });
    const { dir, manifest: m } = await prepareData(cfg);
    expect(m.mode).toBe('chat');
    const t = m.splits.train;
    expect(t.examples).toBe(4);
    expect(t.droppedExamples).toBe(1);
    expect(t.sequences).toBe(3);
    expect(m.warnings.join('\n')).toMatch(/train: 1 of 4 examples dropped/);
    const { ids, labels } = await readSplit(dir, m, 'train');
    const cases = golden.cases.filter((c) => c.folder === 'zephyr' && c.template === 'model' && c.lossOn === 'assistant');
    for (let k = 0; k < 3; k++) {
      const c = cases[k]!;
      const row = ids.slice(k * 256, k * 256 + c.ids!.length);
      expect(row).toEqual(c.ids);
      expect(labels.slice(k * 256, (k + 1) * 256)).toEqual([...c.ids!.map((id, i) => (c.mask![i] ? id : -100)), ...Array(256 - c.ids!.length).fill(-100)]);
    }
  });

  it('ShareGPT and QA records from Parquet, loss on the last turn; truncation above the threshold warns', async () => {
    const d = tmp();
    const rows = [
      { conversations: [{ from: 'human', value: 'hi' }, { from: 'gpt', value: 'hello' }, { from: 'human', value: 'bye' }, { from: 'gpt', value: 'see you' }] },
      { conversations: [{ from: 'human', value: 'x' }, { from: 'gpt', value: 'y' }] },
    ];
    const turn = new Struct([new Field('from', new Utf8()), new Field('value', new Utf8())]);
    const table = new Table({ conversations: vectorFromArray(rows.map((r) => r.conversations), new List(new Field('item', turn))) });
    writeFileSync(join(d, 'c.parquet'), pq.writeParquet(pq.Table.fromIPCStream(tableToIPC(table, 'stream'))));
    const cfg = config({
      data: { train: { type: 'parquet', path: join(d, 'c.parquet'), column: 'conversations' }, validationFraction: 0 },
      preprocess: { mode: 'chat', blockSize: 64, chat: { lossOn: 'last' } },
      tokenizer,
    });
    const { dir, manifest: m } = await prepareData(cfg);
    const { labels } = await readSplit(dir, m, 'train');
    const tok = await loadTokenizer(tokenizer);
    const lossText = (row: number) => tok.decode(labels.slice(row * 64, (row + 1) * 64).filter((x) => x !== -100));
    expect(m.splits.train.sequences).toBe(2);
    // The first conversation is longer than 64 tokens: its last answer is cut off, so it trains on nothing.
    // The first conversation (71 tokens) is cut at 64: its last answer keeps only its start.
    expect(m.splits.train).toMatchObject({ examples: 2, truncatedExamples: 1, truncatedTokens: 7, droppedExamples: 0, sourceTokens: 101 });
    expect(m.warnings).toEqual(['train: truncation to blockSize 64 cut away 6.9% of the tokens (7 of 101, 1 of 2 examples cut); raise preprocess.blockSize']);
    expect('see you</s>'.startsWith(lossText(0).trim())).toBe(true);
    expect(lossText(0).trim()).not.toBe('');
    expect(lossText(1)).toBe('y</s>');

    writeFileSync(join(d, 'qa.jsonl'), JSON.stringify({ context: 'The sky is blue.', question: 'What colour is the sky?', answer: 'Blue.' }) + '\n');
    const qa = await prepareData(config({
      data: { train: { type: 'jsonl', path: join(d, 'qa.jsonl') }, validationFraction: 0 },
      preprocess: { mode: 'chat', blockSize: 128, chat: { format: 'qa' } },
      tokenizer,
    }));
    const q = await readSplit(qa.dir, qa.manifest, 'train');
    expect(q.ids.filter((_, i) => q.mask[i])).toEqual(tok.encode('<|user|>\nThe sky is blue.\n\nWhat colour is the sky?</s>\n<|assistant|>\nBlue.</s>\n'));
    expect(tok.decode(q.labels.filter((x) => x !== -100))).toBe('Blue.</s>');
  });
});
