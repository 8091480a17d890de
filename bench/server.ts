/**
 * One bench server: `node bench/dist/server.js <variant> <adapter> [port]` (or BENCH_VARIANT,
 * BENCH_ADAPTER, PORT). Prints `READY <port>` once listening; closes cleanly on SIGTERM/SIGINT
 * (so `node --cpu-prof` writes its profile).
 */
import 'reflect-metadata';
import type { AddressInfo } from 'node:net';
import { DataSource } from 'typeorm';
import { ADAPTERS, type AdapterName, ALL_VARIANTS, CountingLogger, createBenchApp, type Variant } from './app';

async function main(): Promise<void> {
  const variant = (process.argv[2] ?? process.env.BENCH_VARIANT) as Variant;
  const adapter = (process.argv[3] ?? process.env.BENCH_ADAPTER ?? 'express') as AdapterName;
  const port = Number(process.argv[4] ?? process.env.PORT ?? 0);
  if (!ALL_VARIANTS.includes(variant)) throw new Error(`variant must be one of ${ALL_VARIANTS.join(', ')}, got ${variant}`);
  if (!ADAPTERS.includes(adapter)) throw new Error(`adapter must be one of ${ADAPTERS.join(', ')}, got ${adapter}`);

  const logger = new CountingLogger();
  const app = await createBenchApp({
    variant,
    adapter,
    databaseUrl: process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test',
    poolSize: Number(process.env.BENCH_POOL ?? 10),
    synchronousCommit: process.env.BENCH_SYNC_COMMIT ?? 'off',
  }, logger);
  await app.listen(port, '127.0.0.1');
  const { port: actual } = app.getHttpServer().address() as AddressInfo;

  // Leak check: query runners still connected and pool counters (PostgreSQL pool), once the requests
  // still in flight had up to 5 s to finish (a client that went away leaves its request running).
  const driver = app.get(DataSource).driver as unknown as {
    connectedQueryRunners?: unknown[];
    master?: { totalCount: number; idleCount: number; waitingCount: number };
  };
  const stats = () => ({
    connectedQueryRunners: driver.connectedQueryRunners?.length,
    poolTotal: driver.master?.totalCount,
    poolIdle: driver.master?.idleCount,
    poolWaiting: driver.master?.waitingCount,
    loggedErrors: logger.total,
    logged: Object.fromEntries(logger.counts),
  });
  const busy = () => {
    const s = stats();
    return (s.connectedQueryRunners ?? 0) > 0 || (s.poolWaiting ?? 0) > 0 || (s.poolTotal ?? 0) !== (s.poolIdle ?? 0);
  };
  const drained = async () => {
    for (let waited = 0; busy() && waited < 5000; waited += 50) await new Promise((r) => setTimeout(r, 50));
  };

  let closing = false;
  const stop = async () => {
    if (closing) return;
    closing = true;
    await drained();
    process.stdout.write(`STATS ${JSON.stringify(stats())}\n`);
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', () => void stop());
  process.on('SIGINT', () => void stop());
  process.stdout.write(`READY ${actual}\n`);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
