import { Agent, request as httpRequest } from 'node:http';

/** One request of a load run. */
export interface LoadRequest {
  method: string;
  path: string;
  body?: unknown;
}

/** Options of {@link runLoad}. */
export interface LoadOptions {
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** Requests in flight at once (one keep-alive socket each). */
  concurrency: number;
  /** No request starts after this long; those in flight are awaited (up to `timeoutMs`). */
  durationMs: number;
  /** No request starts after this many. Default: no limit. */
  maxRequests?: number;
  /** A request with no complete answer after this long counts as a timeout. */
  timeoutMs: number;
  /** The `n`th request to send (0-based). */
  next(n: number): LoadRequest;
}

/** What a load run measured. */
export interface LoadResult {
  /** From the first request to the last answer (requests in flight at the deadline included). */
  elapsedMs: number;
  /** `durationMs`: the window in which requests were started. */
  windowMs: number;
  sent: number;
  /** 2xx answers. */
  ok: number;
  /** 2xx answers that arrived within the window: what the throughput is computed from. */
  okInWindow: number;
  /** Answers refused because no pooled connection came free in time (503, reason `pool-timeout`). */
  poolTimeouts: number;
  /** Requests the client gave up on (no answer within `timeoutMs`). */
  clientTimeouts: number;
  /** Every other failure: other non-2xx answers, broken connections. */
  errors: number;
  /** Answers by status code (`'socket'` for broken connections, `'timeout'` for client timeouts). */
  byStatus: Record<string, number>;
  /** Latency of every answered request (failed ones too), in ms, ascending. */
  latenciesMs: number[];
}

/**
 * A closed-loop load generator on Node's own `http` module: `concurrency` workers, each sending its
 * next request as soon as the previous one is answered, over keep-alive connections, bounded by time
 * and count.
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: options.concurrency });
  const result: LoadResult = {
    elapsedMs: 0,
    windowMs: options.durationMs,
    sent: 0,
    ok: 0,
    okInWindow: 0,
    poolTimeouts: 0,
    clientTimeouts: 0,
    errors: 0,
    byStatus: {},
    latenciesMs: [],
  };
  const started = performance.now();
  const deadline = started + options.durationMs;
  const count = (key: string) => (result.byStatus[key] = (result.byStatus[key] ?? 0) + 1);

  const worker = async () => {
    while (performance.now() < deadline && result.sent < (options.maxRequests ?? Infinity)) {
      const n = result.sent++;
      const sentAt = performance.now();
      const outcome = await send(agent, options.url, options.next(n), options.timeoutMs);
      if (outcome.kind === 'timeout') {
        result.clientTimeouts++;
        count('timeout');
        continue;
      }
      result.latenciesMs.push(performance.now() - sentAt);
      if (outcome.kind === 'socket') {
        result.errors++;
        count('socket');
      } else {
        count(String(outcome.status));
        if (outcome.status >= 200 && outcome.status < 300) {
          result.ok++;
          if (performance.now() <= deadline) result.okInWindow++;
        } else if (outcome.status === 503 && /"reason":"pool-timeout"/.test(outcome.body)) result.poolTimeouts++;
        else result.errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  result.elapsedMs = performance.now() - started;
  agent.destroy();
  result.latenciesMs.sort((a, b) => a - b);
  return result;
}

type Outcome = { kind: 'answer'; status: number; body: string } | { kind: 'timeout' } | { kind: 'socket' };

function send(agent: Agent, base: string, { method, path, body }: LoadRequest, timeoutMs: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    let settled = false;
    const settle = (outcome: Outcome) => {
      if (!settled) {
        settled = true;
        clearTimeout(timer);
        resolve(outcome);
      }
    };
    const req = httpRequest(new URL(path, base), {
      method,
      agent,
      headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
    });
    const timer = setTimeout(() => {
      settle({ kind: 'timeout' });
      req.destroy();
    }, timeoutMs);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => settle({ kind: 'answer', status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', () => settle({ kind: 'socket' }));
    });
    req.on('error', () => settle({ kind: 'socket' }));
    req.end(payload);
  });
}

/** Successful requests per second: 2xx answers within the window, over the window. */
export function okPerSecond(result: LoadResult): number {
  return result.okInWindow / (result.windowMs / 1000);
}

/** The `p`th percentile (0–100) of ascending `sorted`, or NaN when empty. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}
