/**
 * What a bench server process and the runner tell each other. The server prints `READY <port>` once
 * listening and `STATS <json>` when told to stop (SIGTERM/SIGINT), on stdout; over the IPC channel the
 * runner opens, it answers `memory` requests after a forced GC (the server runs with --expose-gc).
 */

/** Connections a server still has out of its pool, and what it logged. */
export interface ServerStats {
  connectedQueryRunners?: number;
  poolTotal?: number;
  poolIdle?: number;
  poolWaiting?: number;
  /** Errors and warnings the app logged, in all. */
  loggedErrors?: number;
  /** The same by kind (first line of the message). */
  logged?: Record<string, number>;
}

/** A listening bench server, whatever serves it (Nest or node's http). */
export interface RunningServer {
  port: number;
  stats(): ServerStats;
  /** Whether connections are still out of the pool (requests still in flight). */
  busy(): boolean;
  close(): Promise<void>;
}

export interface MemoryRequest {
  type: 'memory';
  id: number;
}

export interface MemoryReply {
  type: 'memory';
  id: number;
  /** Whether a GC was forced first (false without --expose-gc: the figures then include garbage). */
  gc: boolean;
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
}

/** A statement a traced server ran (BENCH_TRACE_SQL=1): which query runner, and its first words. */
export interface TracedStatement {
  runner: number;
  sql: string;
}

export interface TraceRequest {
  type: 'trace';
  id: number;
}

/** The statements run since the previous trace request. */
export interface TraceReply {
  type: 'trace';
  id: number;
  statements: TracedStatement[];
}

export function isTraceRequest(message: unknown): message is TraceRequest {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === 'trace';
}

export function isMemoryRequest(message: unknown): message is MemoryRequest {
  return typeof message === 'object' && message !== null && (message as { type?: unknown }).type === 'memory';
}
