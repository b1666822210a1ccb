// Child processes for the fault-tolerance suite: the dev server and workers run as real processes
// (`node bin/finetune.js devserver|worker ...`) so a test can SIGKILL them.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const BIN = join(__dirname, '../../bin/finetune.js');

export interface Proc {
  child: ChildProcess;
  /** stdout + stderr so far (for failure messages). */
  output(): string;
  /** Resolves when `pattern` has been printed. */
  waitFor(pattern: RegExp, ms?: number): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

export function spawnFinetune(args: string[], env: NodeJS.ProcessEnv = {}, opts: { cwd?: string } = {}): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], cwd: opts.cwd });
  let out = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  const onData = (d: Buffer) => {
    out += d.toString();
    if (out.length > 200_000) out = out.slice(-100_000);
    for (const w of [...waiters]) if (w.re.test(out)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  return {
    child,
    output: () => out,
    waitFor(re, ms = 60_000) {
      if (re.test(out)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`timed out waiting for ${re} from finetune ${args.join(' ')}:\n${out.slice(-3000)}`)), ms);
        waiters.push({ re, resolve: () => (clearTimeout(t), resolve()) });
        exited.then(() => {
          clearTimeout(t);
          if (!re.test(out)) reject(new Error(`finetune ${args.join(' ')} exited (${child.exitCode ?? child.signalCode}) before ${re}:\n${out.slice(-3000)}`));
        });
      });
    },
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill(signal);
        await exited;
      }
    },
  };
}

export { freePort } from '../../cli/lib/server.js';

export async function until<T>(fn: () => Promise<T | null | undefined | false> | T | null | undefined | false, ms: number, what: string): Promise<T> {
  const t = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Compare two safetensors files tensor by tensor: null when byte-identical, else which tensors differ (the first
 * with its largest difference), so an exact-resume failure says what differs, not just two hashes.
 */
export function diffSafetensors(a: string, b: string): string | null {
  const read = (f: string) => {
    const buf = readFileSync(f);
    const n = Number(buf.readBigUInt64LE(0));
    const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    return { buf, base: 8 + n, header };
  };
  const x = read(a), y = read(b);
  if (x.buf.equals(y.buf)) return null;
  const names = Object.keys(x.header).filter((k) => k !== '__metadata__');
  const out: string[] = [];
  for (const k of names) {
    const tx = x.header[k]!, ty = y.header[k];
    if (!ty) { out.push(`${k}: missing in ${b}`); continue; }
    const bx = x.buf.subarray(x.base + tx.data_offsets[0], x.base + tx.data_offsets[1]);
    const by = y.buf.subarray(y.base + ty.data_offsets[0], y.base + ty.data_offsets[1]);
    if (bx.equals(by)) continue;
    if (tx.dtype !== 'F32' || bx.length !== by.length) { out.push(`${k}: ${tx.dtype} ${tx.shape} vs ${ty.dtype} ${ty.shape}`); continue; }
    const fx = new Float32Array(bx.buffer.slice(bx.byteOffset, bx.byteOffset + bx.length));
    const fy = new Float32Array(by.buffer.slice(by.byteOffset, by.byteOffset + by.length));
    let n = 0, max = 0, at = -1;
    for (let i = 0; i < fx.length; i++) if (fx[i] !== fy[i]) {
      n++;
      const d = Math.abs(fx[i]! - fy[i]!);
      if (d > max || at < 0) { max = d; at = i; }
    }
    out.push(`${k} [${tx.shape}]: ${n}/${fx.length} elements differ, max |diff| ${max.toExponential(3)} at ${at} (${fx[at]} vs ${fy[at]})`);
  }
  return out.length ? out.join('\n') : `same tensors, different bytes (header/metadata): ${a} vs ${b}`;
}

type HistoryEvent = { eventId?: unknown; eventType?: unknown; [k: string]: any };

/** Every trainSegment/trainRank attempt in a history: its steps, how it ended, and its failure (for failure messages). */
export function trainAttempts(history: { events?: HistoryEvent[] | null }): string[] {
  const events = history.events ?? [];
  const decode = (p: any) => { try { return JSON.parse(Buffer.from(p.data).toString('utf8')); } catch { return undefined; } };
  const scheduled = new Map<number, string>();
  const lines: string[] = [];
  for (const e of events) {
    const s = e.activityTaskScheduledEventAttributes;
    if (s && /^train/.test(s.activityType?.name ?? '')) {
      const input = decode(s.input?.payloads?.[0]);
      scheduled.set(Number(e.eventId), `${s.activityType.name} ${input?.fromStep ?? '?'}→${input?.toStep ?? '?'} (resumeFrom ${input?.resumeFrom?.step ?? 'none'})`);
    }
    for (const [key, what] of [['activityTaskCompletedEventAttributes', 'completed'], ['activityTaskFailedEventAttributes', 'failed'],
      ['activityTaskTimedOutEventAttributes', 'timed out'], ['activityTaskCanceledEventAttributes', 'cancelled']] as const) {
      const a = e[key];
      if (!a || !scheduled.has(Number(a.scheduledEventId))) continue;
      const started = events.find((x) => Number(x.eventId) === Number(a.startedEventId))?.activityTaskStartedEventAttributes;
      const result = what === 'completed' ? decode(a.result?.payloads?.[0]) : undefined;
      lines.push(`${scheduled.get(Number(a.scheduledEventId))}: ${what} at attempt ${started?.attempt ?? '?'}` +
        (result ? ` → step ${result.step}, ${result.checkpoint?.dir?.split('/').pop()}, resume ${JSON.stringify(result.resume)}` : '') +
        (started?.lastFailure?.message ? `; last failure before it: ${started.lastFailure.message}` : '') +
        (a.failure?.message ? `; ${a.failure.message}${a.failure.cause?.message ? `: ${a.failure.cause.message}` : ''}` : ''));
    }
  }
  return lines;
}
