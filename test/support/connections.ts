/**
 * The server-side connections a test looks at: which one a manager runs on, whether it is inside a
 * transaction, what it is running, and ending one from outside as an administrator or a failover would.
 */
import type { DataSource, EntityManager, QueryRunner } from 'typeorm';
import type { EngineName } from './databases';
import { type AnyObserver, DEFAULT_WAIT_MS, type Observer, waitFor } from './observer';

/** What TypeORM runs SQL through. */
export type Queryable = EntityManager | QueryRunner | DataSource;

/** The engine `through` runs on. */
export function engineNameOf(through: Queryable): EngineName {
  const dataSource = 'connection' in through ? through.connection : through;
  return dataSource.options.type === 'postgres' ? 'postgres' : 'mariadb';
}

/** The server-side id of the connection `through`'s next statement runs on (PostgreSQL backend pid, MariaDB connection id). */
export async function connectionIdOf(through: Queryable): Promise<number> {
  const sql = engineNameOf(through) === 'postgres' ? 'SELECT pg_backend_pid() AS id' : 'SELECT CONNECTION_ID() AS id';
  const [row] = await through.query<Array<{ id: number | string }>>(sql);
  return Number(row.id);
}

/**
 * Whether the server connection `connectionId` (see {@link connectionIdOf}) is inside a transaction.
 * PostgreSQL: its `xact_start`. MariaDB: `information_schema.INNODB_TRX`, which lists a transaction once
 * it touched an InnoDB table and is served from a cache InnoDB refreshes only when the previous read is
 * over 100 ms old: poll it with {@link INNODB_TRX_POLL}.
 */
export async function inTransaction(db: AnyObserver, connectionId: number): Promise<boolean> {
  if (db.engine === 'postgres') {
    const rows = await db.query<{ open: boolean }>('SELECT xact_start IS NOT NULL AS open FROM pg_stat_activity WHERE pid = $1', [
      connectionId,
    ]);
    return rows[0]?.open === true;
  }
  const [row] = await db.query<{ count: number | string }>(
    'SELECT COUNT(*) AS count FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ?',
    [connectionId],
  );
  return Number(row.count) > 0;
}

/** `waitFor` options for probes that read INNODB_TRX: slower than its 100 ms cache. */
export const INNODB_TRX_POLL = { intervalMs: 150, timeoutMs: DEFAULT_WAIT_MS } as const;

/** A statement that runs `seconds` unless something stops it. */
export function sleepSql(engine: EngineName, seconds: number): string {
  return engine === 'postgres' ? `SELECT pg_sleep(${seconds})` : `SELECT SLEEP(${seconds})`;
}

/**
 * Ends a server connection from outside, as an administrator or a failover would: PostgreSQL
 * `pg_terminate_backend(pid)`, MariaDB `KILL id`. Resolves once the server no longer lists it.
 */
export async function killConnection(db: Observer, id: number): Promise<void> {
  if (db.engine === 'postgres') {
    const [row] = await db.query<{ killed: boolean }>('SELECT pg_terminate_backend($1) AS killed', [id]);
    if (row?.killed !== true) throw new Error(`pg_terminate_backend(${id}) found no such backend`);
  } else {
    await db.query(`KILL ${Number(id)}`);
  }
  await waitFor(async () => !(await connectionListed(db, id)), { intervalMs: 10 }).catch((error: unknown) => {
    throw new Error(`connection ${id} was still listed ${DEFAULT_WAIT_MS} ms after it was killed`, { cause: error });
  });
}

/** Whether the server still lists connection `id` (pg_stat_activity / PROCESSLIST). */
export async function connectionListed(db: Observer, id: number): Promise<boolean> {
  const rows =
    db.engine === 'postgres'
      ? await db.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [id])
      : await db.query('SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = ?', [id]);
  return rows.length > 0;
}

/** What the statement running on connection `id` is, or null when it runs none (or is gone). */
export async function runningStatement(db: Observer, id: number): Promise<string | null> {
  if (db.engine === 'postgres') {
    const [row] = await db.query<{ state: string; query: string }>('SELECT state, query FROM pg_stat_activity WHERE pid = $1', [
      id,
    ]);
    return row?.state === 'active' ? row.query : null;
  }
  const [row] = await db.query<{ info: string | null }>('SELECT INFO AS info FROM information_schema.PROCESSLIST WHERE ID = ?', [
    id,
  ]);
  return row?.info ?? null;
}

/** The error a killed connection's running statement fails with: PostgreSQL 57P01; MariaDB 1927 (or the lost socket). */
export function killedStatementError(engine: EngineName): RegExp {
  return engine === 'postgres'
    ? /terminating connection due to administrator command/
    : /Connection was killed|Connection lost|closed state|server closed the connection/i;
}
