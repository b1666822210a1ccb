// Protocol helpers shared by the whole dev server: the protobufjs root that ships inside @temporalio/proto (the
// exact message types the SDK was built with), enum shortcuts, time/duration conversion, payload helpers and
// task tokens. Decoded requests carry int64 as Long and Timestamp/Duration as {seconds: Long, nanos}.
import { createRequire } from 'node:module';
import type { temporal as T, google as G } from '@temporalio/proto';
import { status } from '@grpc/grpc-js';
import { ServiceError } from './contract.js';

const require = createRequire(import.meta.url);
/** The patched protobufjs root (services, messages, enums). */
export const protoRoot = require('@temporalio/proto/protos/root.js') as import('protobufjs').Root;

// @temporalio/proto is CommonJS whose named exports Node's ESM loader cannot see: load it through require.
const pkg = require('@temporalio/proto') as { temporal: typeof T; google: typeof G };
export const temporal = pkg.temporal;
export const google = pkg.google;
export const api = temporal.api;
export const HistoryEvent = api.history.v1.HistoryEvent;
/** An event as built by the server (plain object, numbers for int64); HistoryEvent.fromObject converts it. */
export type IHistoryEvent = { eventType?: number | null; eventTime?: unknown; [attrs: string]: any };
export type IPayloads = T.api.common.v1.IPayloads;
export type IPayload = T.api.common.v1.IPayload;
export type IFailure = T.api.failure.v1.IFailure;
export const ET = api.enums.v1.EventType;
export const CT = api.enums.v1.CommandType;
export const WS = api.enums.v1.WorkflowExecutionStatus;
export const RetryState = api.enums.v1.RetryState;
export const TimeoutType = api.enums.v1.TimeoutType;
export const WftFailedCause = api.enums.v1.WorkflowTaskFailedCause;

// ─── time ──────────────────────────────────────────────────────────────────────────────────────────────

type LongLike = number | string | { toNumber(): number } | null | undefined;
export function num(v: LongLike): number {
  if (v == null) return 0;
  if (typeof v === 'number') return v;
  if (typeof v === 'string') return Number(v);
  return v.toNumber();
}
type DurLike = { seconds?: LongLike; nanos?: number | null } | null | undefined;
/** Duration or Timestamp → milliseconds (0 when unset). */
export function ms(d: DurLike): number {
  if (!d) return 0;
  return num(d.seconds) * 1000 + Math.floor((d.nanos ?? 0) / 1e6);
}
// Returned as `any`: protobufjs' generated interfaces want Long, fromObject happily takes numbers.
export function dur(msValue: number): any {
  const s = Math.floor(msValue / 1000);
  return { seconds: s, nanos: Math.round((msValue - s * 1000) * 1e6) };
}
export const ts = dur;

// ─── payloads ──────────────────────────────────────────────────────────────────────────────────────────

/** Payloads are stored inside encoded events; for state blobs we keep them as base64 of their message. */
export function b64(type: { encode(m: any): { finish(): Uint8Array } }, msg: unknown): string {
  return Buffer.from(type.encode(msg).finish()).toString('base64');
}
export function unb64<T>(type: { decode(b: Uint8Array): T }, s: string | null | undefined): T | undefined {
  return s ? type.decode(Buffer.from(s, 'base64')) : undefined;
}

export function payloadSize(p: IPayload | null | undefined): number {
  if (!p) return 0;
  let n = p.data?.length ?? 0;
  for (const [k, v] of Object.entries(p.metadata ?? {})) n += k.length + (v?.length ?? 0);
  return n;
}

// Temporal's default per-event limits (dynamic config limit.blobSize.* and limit.memoSize.*).
export const BLOB_WARN_BYTES = 512 * 1024;
export const BLOB_ERROR_BYTES = 2 * 1024 * 1024;
export const MEMO_WARN_BYTES = 2 * 1024;
export const MEMO_ERROR_BYTES = 2 * 1024 * 1024;

/** Temporal's per-blob limit: the payloads of one field must stay within 2 MB (a warning is logged above 512 KB). */
export function checkBlob(what: string, payloads: IPayload[] | null | undefined, log?: (l: string) => void): void {
  let size = 0;
  for (const p of payloads ?? []) size += payloadSize(p);
  if (size > BLOB_ERROR_BYTES) {
    throw new ServiceError(status.INVALID_ARGUMENT, `Blob data size exceeds limit. (${what}: ${size} bytes > ${BLOB_ERROR_BYTES})`);
  }
  if (size > BLOB_WARN_BYTES) log?.(`warn: ${what} is ${size} bytes; payloads over 512 KB slow every replay (pass references, not data)`);
}

/** Temporal's memo limit: the encoded memo of one start or upsert must stay within 2 MB (warned above 2 KB). */
export function checkMemo(what: string, memo: T.api.common.v1.IMemo | null | undefined, log?: (l: string) => void): void {
  if (!memo?.fields || Object.keys(memo.fields).length === 0) return;
  const size = api.common.v1.Memo.encode(memo).finish().length;
  if (size > MEMO_ERROR_BYTES) throw new ServiceError(status.INVALID_ARGUMENT, `Memo size exceeds limit. (${what}: ${size} bytes > ${MEMO_ERROR_BYTES})`);
  if (size > MEMO_WARN_BYTES) log?.(`warn: ${what} is ${size} bytes; memos over 2 KB are stored with every visibility record (keep them small)`);
}

export function jsonPayload(value: unknown, extra: Record<string, string> = {}): IPayload {
  const metadata: Record<string, Uint8Array> = { encoding: Buffer.from('json/plain') };
  for (const [k, v] of Object.entries(extra)) metadata[k] = Buffer.from(v);
  return { metadata, data: Buffer.from(JSON.stringify(value)) };
}

/** Decode a json/plain payload (search attributes); undefined for other encodings. */
export function decodeJsonPayload(p: IPayload | null | undefined): unknown {
  if (!p) return undefined;
  const enc = p.metadata?.encoding ? Buffer.from(p.metadata.encoding).toString() : '';
  if (enc === 'binary/null') return null;
  if (enc !== 'json/plain' || !p.data) return undefined;
  try {
    return JSON.parse(Buffer.from(p.data).toString());
  } catch {
    return undefined;
  }
}

// ─── task tokens ───────────────────────────────────────────────────────────────────────────────────────
// Opaque to the SDK. They name the run, the scheduled event and the attempt, so stale attempts are rejected.

export interface TaskToken {
  k: 'w' | 'a' | 'q'; // workflow task, activity task, query task
  ns: string;
  r: string; // run id
  s: number; // scheduled event id (workflow/activity) ; 0 for queries
  a: number; // attempt
  q?: string; // query id
}

export function encodeToken(t: TaskToken): Buffer {
  return Buffer.from(JSON.stringify(t));
}

export function decodeToken(raw: Uint8Array | null | undefined, want: TaskToken['k']): TaskToken {
  try {
    const t = JSON.parse(Buffer.from(raw ?? []).toString()) as TaskToken;
    if (t && t.k === want && typeof t.r === 'string') return t;
  } catch {
    /* fall through */
  }
  throw new ServiceError(status.INVALID_ARGUMENT, 'Error deserializing task token.');
}

export const notFound = (what: string) => new ServiceError(status.NOT_FOUND, what);
export const invalid = (what: string) => new ServiceError(status.INVALID_ARGUMENT, what);

/** A google.rpc.Status with one detail, for the grpc-status-details-bin trailer the SDK decodes. */
export function googleStatus(code: number, message: string, typeName: string, value: Uint8Array): Uint8Array {
  return google.rpc.Status.encode({ code, message, details: [{ type_url: `type.googleapis.com/${typeName}`, value }] }).finish();
}
