/**
 * The ceiling: no Nest, no TypeORM, no context propagation. Node's `http` server and a `pg` Pool of the
 * same size and connection settings, serving the same routes with the statements TypeORM sends for the
 * other variants (parameterised), each request's statements in one transaction on one pooled client.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool, type PoolClient } from 'pg';
import type { RunningServer } from './protocol';
import { ROUTES } from './workloads';

export interface RawPgOptions {
  databaseUrl: string;
  poolSize: number;
  synchronousCommit: string;
}

const SQL = {
  decrement: 'UPDATE "bench_accounts" SET "balance" = "balance" - $1 WHERE "id" = $2',
  increment: 'UPDATE "bench_accounts" SET "balance" = "balance" + $1 WHERE "id" = $2',
  insert: 'INSERT INTO "bench_transfers"("fromId", "toId", "amount") VALUES ($1, $2, $3) RETURNING "id"',
  account: 'SELECT "id", "balance" FROM "bench_accounts" WHERE "id" = $1 LIMIT 1',
};

async function inTransaction<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken = false;
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => {
      broken = true;
    });
    throw error;
  } finally {
    // A connection whose ROLLBACK failed is not given back to the pool in an unknown state.
    client.release(broken);
  }
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export async function startRawPg(options: RawPgOptions, port: number): Promise<RunningServer> {
  const pool = new Pool({
    connectionString: options.databaseUrl,
    max: options.poolSize,
    connectionTimeoutMillis: 5000,
    idleTimeoutMillis: 2000, // as the Nest servers' pools (IDLE_CONNECTION_MS in app.ts)
    options: `-c synchronous_commit=${options.synchronousCommit}`,
  });
  const logged = new Map<string, number>();
  const log = (error: unknown) => {
    const key = `error ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`
      .split('\n')[0]
      .slice(0, 100);
    const count = (logged.get(key) ?? 0) + 1;
    logged.set(key, count);
    if (count === 1) console.error(error);
  };

  const transfer = (dto: { from: unknown; to: unknown; amount: unknown }) =>
    inTransaction(pool, async (client) => {
      const from = Number(dto.from);
      const to = Number(dto.to);
      const amount = Number(dto.amount);
      await client.query(SQL.decrement, [amount, from]);
      await client.query(SQL.increment, [amount, to]);
      const { rows } = await client.query<{ id: number }>(SQL.insert, [from, to, amount]);
      return { id: rows[0].id };
    });

  const balances = (query: URLSearchParams) =>
    inTransaction(pool, async (client) => {
      const a = await client.query(SQL.account, [Number(query.get('from'))]);
      const b = await client.query(SQL.account, [Number(query.get('to'))]);
      return { from: a.rows[0] ?? null, to: b.rows[0] ?? null };
    });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    if (req.method === 'GET' && path === ROUTES.ping) return send(res, 200, { ok: true });
    if (req.method === 'GET' && path === ROUTES.balances)
      return send(res, 200, await balances(new URLSearchParams(url.slice(q + 1))));
    if (req.method === 'POST' && path === ROUTES.transfer) return send(res, 200, await transfer(JSON.parse(await readBody(req))));
    send(res, 404, { message: `Cannot ${req.method} ${path}` });
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      log(error);
      if (!res.headersSent) send(res, 500, { message: 'Internal server error' });
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));

  const stats = () => ({
    poolTotal: pool.totalCount,
    poolIdle: pool.idleCount,
    poolWaiting: pool.waitingCount,
    loggedErrors: [...logged.values()].reduce((a, b) => a + b, 0),
    logged: Object.fromEntries(logged),
  });
  return {
    port: (server.address() as AddressInfo).port,
    stats,
    busy: () => pool.waitingCount > 0 || pool.totalCount !== pool.idleCount,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await pool.end();
    },
  };
}
