/**
 * One bench server: `node --expose-gc bench/dist/server.js <variant> <adapter> [port]` (or BENCH_VARIANT,
 * BENCH_ADAPTER, PORT; `raw-pg` ignores the adapter). Prints `READY <port>` once listening; on
 * SIGTERM/SIGINT waits for requests in flight, prints `STATS <json>` (connections still out of the pool)
 * and closes (so `node --cpu-prof` writes its profile). Over an IPC channel, answers `memory` requests
 * after a forced GC, and `trace` requests with the statements run since the last one (BENCH_TRACE_SQL=1);
 * see protocol.ts.
 */
import 'reflect-metadata';
import { isMemoryRequest, isTraceRequest, type MemoryReply, type RunningServer, type TraceReply } from './protocol';
import { ADAPTERS, type AdapterName, ALL_VARIANTS, SAME_PROCESS, type Variant } from './variants';

async function start(variant: Variant, adapter: AdapterName, port: number): Promise<RunningServer> {
  const databaseUrl = process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
  const poolSize = Number(process.env.BENCH_POOL ?? 10);
  const synchronousCommit = process.env.BENCH_SYNC_COMMIT ?? 'off';
  // Each kind of server loads only its own code: raw-pg's process never loads Nest or TypeORM.
  if (variant === 'raw-pg') return (await import('./raw-pg')).startRawPg({ databaseUrl, poolSize, synchronousCommit }, port);
  const traceSql = process.env.BENCH_TRACE_SQL === '1';
  return (await import('./app')).startNestServer({ variant, adapter, databaseUrl, poolSize, synchronousCommit, traceSql }, port);
}

/** The statements run since the last request (only a Nest server started with BENCH_TRACE_SQL=1 records them). */
async function trace(variant: Variant, id: number): Promise<TraceReply> {
  const statements = variant === 'raw-pg' || process.env.BENCH_TRACE_SQL !== '1' ? [] : (await import('./app')).takeTrace();
  return { type: 'trace', id, statements };
}

function memory(id: number): MemoryReply {
  const gc = (globalThis as { gc?: () => void }).gc;
  // Twice: the second pass collects what the first one's finalizers released.
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  return {
    type: 'memory',
    id,
    gc: gc !== undefined,
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
  };
}

async function main(): Promise<void> {
  const variant = (process.argv[2] ?? process.env.BENCH_VARIANT) as Variant;
  const adapter = (process.argv[3] ?? process.env.BENCH_ADAPTER ?? 'express') as AdapterName;
  const port = Number(process.argv[4] ?? process.env.PORT ?? 0);
  if (!ALL_VARIANTS.includes(variant)) throw new Error(`variant must be one of ${ALL_VARIANTS.join(', ')}, got ${variant}`);
  const host = SAME_PROCESS[variant]?.host;
  if (host) throw new Error(`${variant} is served by the ${host} server`);
  if (!ADAPTERS.includes(adapter)) throw new Error(`adapter must be one of ${ADAPTERS.join(', ')}, got ${adapter}`);

  const server = await start(variant, adapter, port);

  // Leak check: once the requests still in flight had up to 5 s to finish (a client that went away
  // leaves its request running), no connection may be out of the pool.
  const drained = async () => {
    for (let waited = 0; server.busy() && waited < 5000; waited += 50) await new Promise((r) => setTimeout(r, 50));
  };
  let closing = false;
  const stop = async () => {
    if (closing) return;
    closing = true;
    await drained();
    process.stdout.write(`STATS ${JSON.stringify(server.stats())}\n`);
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  if (process.send) {
    process.on('message', (message) => {
      if (isMemoryRequest(message)) process.send?.(memory(message.id));
      else if (isTraceRequest(message)) void trace(variant, message.id).then((reply) => process.send?.(reply));
    });
    // The runner went away without stopping this server.
    process.on('disconnect', () => void stop());
  }
  process.stdout.write(`READY ${server.port}\n`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
