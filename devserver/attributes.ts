// Search attributes: a per-namespace registry name → type, validation of incoming attributes (Temporal's limits
// and messages), and the `type` metadata every payload in a response must carry (the TS SDK's typed API drops
// attributes without it). As on a real server, a name must be registered before use (OperatorService, the
// `searchAttributes` option, `--search-attribute`), and its registered type decides how a value is checked.
import type { Store } from './store.js';
import { api, decodeJsonPayload, invalid, type IPayload, b64, unb64 } from './proto.js';

export const SA_TYPES = ['Text', 'Keyword', 'Int', 'Double', 'Bool', 'Datetime', 'KeywordList'] as const;
export type SaType = (typeof SA_TYPES)[number];

/**
 * Attributes every namespace knows, as a real server lists them (GetSearchAttributes): the system columns of the
 * executions (SYSTEM) and the predefined attributes written by the SDK or the server itself. Those this server
 * never writes (worker deployments, pause info, batcher, ...) are still valid in queries, and match no run.
 */
export const PREDEFINED: Record<string, SaType> = {
  TemporalChangeVersion: 'KeywordList',
  TemporalScheduledById: 'Keyword',
  TemporalScheduledStartTime: 'Datetime',
  TemporalSchedulePaused: 'Bool',
  BinaryChecksums: 'KeywordList',
  BuildIds: 'KeywordList',
  BatcherUser: 'Keyword',
  BatcherNamespace: 'Keyword',
  TemporalNamespaceDivision: 'Keyword',
  TemporalPauseInfo: 'KeywordList',
  TemporalReportedProblems: 'KeywordList',
  TemporalWorkerDeployment: 'Keyword',
  TemporalWorkerDeploymentVersion: 'Keyword',
  TemporalWorkflowVersioningBehavior: 'Keyword',
  TemporalUsedWorkerDeploymentVersions: 'KeywordList',
  TemporalExternalPayloadCount: 'Int',
  TemporalExternalPayloadSizeBytes: 'Int',
  WorkflowId: 'Keyword',
  RunId: 'Keyword',
  WorkflowType: 'Keyword',
  ExecutionStatus: 'Keyword',
  StartTime: 'Datetime',
  CloseTime: 'Datetime',
  ExecutionTime: 'Datetime',
  ExecutionDuration: 'Int',
  TaskQueue: 'Keyword',
  HistoryLength: 'Int',
  HistorySizeBytes: 'Int',
  StateTransitionCount: 'Int',
  ParentWorkflowId: 'Keyword',
  ParentRunId: 'Keyword',
  RootWorkflowId: 'Keyword',
  RootRunId: 'Keyword',
};
/** Attributes that are properties of the execution itself: queryable, never set by a request. */
export const SYSTEM = new Set([
  'WorkflowId', 'RunId', 'WorkflowType', 'ExecutionStatus', 'StartTime', 'CloseTime', 'ExecutionTime', 'ExecutionDuration',
  'TaskQueue', 'HistoryLength', 'HistorySizeBytes', 'StateTransitionCount', 'ParentWorkflowId', 'ParentRunId', 'RootWorkflowId', 'RootRunId',
]);

const SearchAttributes = api.common.v1.SearchAttributes;

/** Temporal's defaults (frontend.searchAttributesNumberOfKeysLimit, ...SizeOfValueLimit, ...TotalSizeLimit). */
export const SA_LIMITS = { keys: 100, valueBytes: 2 * 1024, totalBytes: 40 * 1024 };

/** The size limits a real server puts on the attributes of one request, checked in its order and wording. */
export function checkSearchAttributeLimits(fields: Record<string, IPayload> | null | undefined): void {
  const entries = Object.entries(fields ?? {});
  if (entries.length > SA_LIMITS.keys) throw invalid(`number of search attributes ${entries.length} exceeds limit ${SA_LIMITS.keys}`);
  let total = 0;
  for (const [name, p] of entries) {
    const size = p?.data?.length ?? 0;
    if (size > SA_LIMITS.valueBytes) throw invalid(`search attribute ${name} value size ${size} exceeds size limit ${SA_LIMITS.valueBytes}`);
    total += name.length + size;
  }
  if (total > SA_LIMITS.totalBytes) throw invalid(`total size of search attributes ${total} exceeds size limit ${SA_LIMITS.totalBytes}`);
}
type Fields = Record<string, IPayload>;

function metaType(p: IPayload): string | undefined {
  const t = p.metadata?.type;
  return t ? Buffer.from(t).toString() : undefined;
}

function valueFits(type: SaType, v: unknown): boolean {
  // The SDK's legacy (untyped) API sends every value as a list; the server takes a list of fitting values.
  if (Array.isArray(v) && type !== 'KeywordList') return v.every((x) => valueFits(type, x));
  switch (type) {
    case 'Int':
      return typeof v === 'number' && Number.isInteger(v);
    case 'Double':
      return typeof v === 'number';
    case 'Bool':
      return typeof v === 'boolean';
    case 'Datetime':
      return typeof v === 'string' && !Number.isNaN(Date.parse(v));
    case 'KeywordList':
      return (Array.isArray(v) && v.every((x) => typeof x === 'string')) || typeof v === 'string';
    default:
      return typeof v === 'string';
  }
}

/** A value as Go's %v prints it (the real server's wording of a bad value): strings bare, lists in brackets. */
function goValue(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(goValue).join(' ')}]`;
  return typeof v === 'string' ? v : JSON.stringify(v);
}

export class SearchAttributeRegistry {
  private readonly get;
  private readonly put;
  private readonly all;

  constructor(store: Store) {
    this.get = store.db.prepare('SELECT type FROM search_attribute_types WHERE namespace = ? AND name = ?');
    this.put = store.db.prepare('INSERT OR REPLACE INTO search_attribute_types (namespace, name, type) VALUES (?, ?, ?)');
    this.all = store.db.prepare('SELECT name, type FROM search_attribute_types WHERE namespace = ?');
  }

  typeOf(ns: string, name: string): SaType | undefined {
    return PREDEFINED[name] ?? ((this.get.get(ns, name) as { type: SaType } | undefined)?.type);
  }

  register(ns: string, name: string, type: string): void {
    if (!(SA_TYPES as readonly string[]).includes(type)) throw invalid(`Unknown search attribute type ${type} for ${name}; use one of ${SA_TYPES.join(', ')}`);
    if (PREDEFINED[name]) throw invalid(`Search attribute ${name} is reserved by system.`);
    this.put.run(ns, name, type);
  }

  custom(ns: string): Record<string, SaType> {
    const out: Record<string, SaType> = {};
    for (const r of this.all.all(ns) as { name: string; type: SaType }[]) out[r.name] = r.type;
    return out;
  }

  /**
   * Merges `incoming` into `current` (base64 SearchAttributes). A null value removes the attribute.
   * Returns the new encoded map and its decoded JSON (for visibility queries).
   */
  merge(ns: string, current: string | null, incoming: Fields | null | undefined): { encoded: string | null; json: Record<string, unknown> } {
    checkSearchAttributeLimits(incoming);
    const fields: Fields = { ...(unb64(SearchAttributes, current)?.indexedFields ?? {}) } as Fields;
    for (const [name, p] of Object.entries(incoming ?? {})) {
      if (SYSTEM.has(name)) throw invalid(`Search attribute ${name} is a system attribute and cannot be set`);
      const value = decodeJsonPayload(p);
      if (value === null || value === undefined || (Array.isArray(value) && value.length === 0)) {
        delete fields[name];
        continue;
      }
      const type = this.typeOf(ns, name);
      if (!type) throw invalid(`Namespace ${ns} has no mapping defined for search attribute ${name} (register it first: OperatorService.AddSearchAttributes, \`temporal operator search-attribute create\` or the dev server's --search-attribute)`);
      if (!valueFits(type, value)) throw invalid(`invalid value for search attribute ${name} of type ${type}: ${goValue(value)}`);
      fields[name] = p;
    }
    const json: Record<string, unknown> = {};
    for (const [name, p] of Object.entries(fields)) json[name] = decodeJsonPayload(p);
    const encoded = Object.keys(fields).length ? b64(SearchAttributes, { indexedFields: fields }) : null;
    return { encoded, json };
  }

  /** The stored attributes as a response field: every payload with its `type` metadata. */
  present(ns: string, encoded: string | null): { indexedFields: Fields } | null {
    const sa = unb64(SearchAttributes, encoded);
    if (!sa) return null;
    const out: Fields = {};
    for (const [name, p] of Object.entries(sa.indexedFields ?? {})) {
      const type = this.typeOf(ns, name) ?? metaType(p);
      out[name] = { data: p.data, metadata: { ...(p.metadata ?? {}), ...(type ? { type: Buffer.from(type) } : {}) } };
    }
    return { indexedFields: out };
  }
}
