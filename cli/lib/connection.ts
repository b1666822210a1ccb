// Where and how to reach Temporal, as Temporal's own tools configure it (@temporalio/envconfig): a profile of the
// config file (TEMPORAL_CONFIG_FILE, else ~/.config/temporalio/temporal.toml; TEMPORAL_PROFILE picks the profile),
// overridden by TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS* and TEMPORAL_GRPC_META_*,
// overridden by our command-line flags. Temporal Cloud is reachable by configuration alone (address, namespace and
// an API key or mTLS certificates). Connecting checks the address, TLS and namespace at once and names the setting
// that is wrong, instead of failing later inside a worker.
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { loadClientConfigProfile, toClientOptions, type ClientConfigProfile } from '@temporalio/envconfig';
import type { NativeConnectionOptions } from '@temporalio/worker';

export const DEFAULT_ADDRESS = 'localhost:7233';

export interface TemporalTarget {
  address: string;
  namespace: string;
  /** Options for Connection.connect and NativeConnection.connect: address, TLS, API key, gRPC metadata. */
  connectionOptions: NativeConnectionOptions & { address: string };
  /** Where the address came from ('--address', 'TEMPORAL_ADDRESS', "profile 'cloud' of FILE", 'the default'). */
  addressSource: string;
  namespaceSource: string;
  /** True when an address was configured (flag, environment or profile), false for the default localhost:7233. */
  configured: boolean;
  tls: boolean;
}

export interface TargetFlags {
  address?: string;
  namespace?: string;
  profile?: string;
  /** The finetune config's temporal.namespace, when it names one (a flag wins over it, it wins over the profile). */
  configNamespace?: string;
  env?: NodeJS.ProcessEnv;
}

/** The config file envconfig reads (for messages). */
export function configFilePath(env: NodeJS.ProcessEnv = process.env): string {
  return env.TEMPORAL_CONFIG_FILE ?? join(env.XDG_CONFIG_HOME || join(env.HOME ?? homedir(), '.config'), 'temporalio', 'temporal.toml');
}

function loadProfile(o: TargetFlags, disableEnv: boolean): ClientConfigProfile {
  const env = o.env ?? process.env;
  const profile = o.profile ?? env.TEMPORAL_PROFILE;
  const file = configFilePath(env);
  try {
    return loadClientConfigProfile({ profile, disableEnv, overrideEnvVars: env as Record<string, string> });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // No config file at the default location means "no profile": the environment and flags decide.
    if (err.code === 'ENOENT' && !env.TEMPORAL_CONFIG_FILE && !profile) return disableEnv ? {} : loadClientConfigProfile({ disableFile: true, overrideEnvVars: env as Record<string, string> });
    if (err.code === 'ENOENT') throw new Error(`Temporal config file ${file} does not exist (${env.TEMPORAL_CONFIG_FILE ? 'TEMPORAL_CONFIG_FILE' : `profile '${profile}' asked for`})`, { cause: e });
    throw new Error(`Temporal config file ${file}${profile ? `, profile '${profile}'` : ''}: ${err.message}`, { cause: e });
  }
}

/** Resolve address, namespace, TLS and credentials from flags, environment and the config profile. */
export function resolveTarget(flags: TargetFlags = {}): TemporalTarget {
  // An empty variable (TEMPORAL_ADDRESS= in a shell or a service file) means unset, as for Temporal's CLI.
  const env = Object.fromEntries(Object.entries(flags.env ?? process.env).filter(([k, v]) => !(k.startsWith('TEMPORAL_') && !v)));
  const o = { ...flags, env };
  const profileName = o.profile ?? env.TEMPORAL_PROFILE;
  const fromFile = loadProfile(o, true);
  const merged = loadProfile(o, false);
  const profileLabel = `profile '${profileName ?? 'default'}' of ${configFilePath(env)}`;
  const connect = toClientOptions({ ...merged, address: o.address ?? merged.address });
  const address = o.address ?? merged.address ?? DEFAULT_ADDRESS;
  const addressSource = o.address ? '--address' : env.TEMPORAL_ADDRESS ? 'TEMPORAL_ADDRESS' : fromFile.address ? profileLabel : 'the default';
  // A run's config that names its namespace wins over the environment's; a flag wins over both.
  const namespace = o.namespace ?? o.configNamespace ?? merged.namespace ?? 'default';
  const namespaceSource = o.namespace ? '--namespace' : o.configNamespace ? 'temporal.namespace of the config'
    : env.TEMPORAL_NAMESPACE ? 'TEMPORAL_NAMESPACE' : fromFile.namespace ? profileLabel : 'the default';
  return {
    address, namespace, addressSource, namespaceSource,
    configured: addressSource !== 'the default',
    tls: !!connect.connectionOptions.tls,
    connectionOptions: { ...connect.connectionOptions, address },
  };
}

/** The flags every command that talks to Temporal takes (parseArgs options). */
export const TARGET_OPTIONS = {
  address: { type: 'string' },
  namespace: { type: 'string' },
  profile: { type: 'string' },
} as const;

const describeTarget = (t: TemporalTarget) => `Temporal at ${t.address} (${t.addressSource}${t.tls ? ', TLS' : ''})`;

/**
 * A connection error as a message that names the setting to fix: the address and where it came from, TLS when the
 * handshake failed, the API key or certificates when the server refused them.
 */
export function explainConnectError(t: TemporalTarget, e: unknown): Error {
  const msg = (e as Error)?.message ?? String(e);
  const tlsHint = /ssl|tls|certificate|handshake|wrong version|alert/i.test(msg);
  let advice: string;
  if (/unauthenticated|permission|unauthori[sz]ed|api key|forbidden/i.test(msg))
    advice = 'the server refused the credentials: check the API key (TEMPORAL_API_KEY, api_key of the profile) or the client certificate';
  else if (tlsHint)
    advice = t.tls
      ? 'the TLS handshake failed: check that the server speaks TLS and the certificates (TEMPORAL_TLS*, [profile.<name>.tls] of the config file)'
      : 'the TLS handshake failed: the server expects TLS (set TEMPORAL_TLS=true, an API key, or tls in the profile)';
  else advice = `nothing answered: check the address${t.tls ? ' and that the server speaks TLS' : ''}, or unset TEMPORAL_ADDRESS to let \`finetune run\` start a dev server`;
  return new Error(`cannot reach ${describeTarget(t)}: ${msg.split('\n')[0]}\n  ${advice}`);
}

/** Connect a client and check the namespace, with errors that name the address, TLS or namespace setting. */
export async function connectClient(t: TemporalTarget): Promise<Client> {
  let connection: Connection;
  try {
    connection = await Connection.connect({ ...t.connectionOptions, connectTimeout: '5s' });
  } catch (e) {
    throw explainConnectError(t, e);
  }
  try {
    await checkNamespace(connection, t);
  } catch (e) {
    await connection.close();
    throw e;
  }
  return new Client({ connection, namespace: t.namespace });
}

/** DescribeNamespace: NOT_FOUND becomes a message naming the namespace and where it was set. */
export async function checkNamespace(connection: Connection, t: TemporalTarget): Promise<void> {
  try {
    await connection.withDeadline(Date.now() + 10_000, () => connection.workflowService.describeNamespace({ namespace: t.namespace }));
  } catch (e) {
    const err = e as Error & { code?: number };
    if (err.code === 5 /* NOT_FOUND */)
      throw new Error(`namespace '${t.namespace}' (${t.namespaceSource}) does not exist on ${describeTarget(t)}: ` +
        `create it (temporal operator namespace create --namespace ${t.namespace}) or name another (--namespace, TEMPORAL_NAMESPACE, temporal.namespace)`, { cause: e });
    if (err.code === 7 /* PERMISSION_DENIED */ || err.code === 16 /* UNAUTHENTICATED */)
      throw new Error(`${describeTarget(t)} refused access to namespace '${t.namespace}' (${t.namespaceSource}): ${err.message}\n  ` +
        'check the API key (TEMPORAL_API_KEY, api_key of the profile) or the client certificate, and that it is granted this namespace', { cause: e });
    throw explainConnectError(t, e);
  }
}

/** The Web UI's page of a workflow run, when the server has a known UI (Temporal's dev server, Temporal Cloud). */
export function workflowUiUrl(uiBase: string | undefined, namespace: string, workflowId: string, runId?: string): string | undefined {
  if (!uiBase) return undefined;
  const base = `${uiBase.replace(/\/$/, '')}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(workflowId)}`;
  return runId ? `${base}/${runId}/history` : base;
}

/** Temporal Cloud's Web UI for an address of the form <namespace>.<account>.tmprl.cloud:7233 or a regional endpoint. */
export function cloudUiBase(address: string): string | undefined {
  return /\.tmprl\.cloud(:\d+)?$/.test(address) ? 'https://cloud.temporal.io' : undefined;
}
