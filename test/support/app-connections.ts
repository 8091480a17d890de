/**
 * The app's own MariaDB connections, as an observer can single them out. Server-wide tables
 * (`information_schema.INNODB_TRX`, `PROCESSLIST`) list every client of the server: other suites, and
 * other test runs using other databases on the same server at the same time. A check that counts rows
 * there must count the app's connections only, or another client's lock wait changes its result.
 * PostgreSQL needs none of this: its connections carry `application_name` (see `observer().backends()`).
 */
import type { DataSource } from 'typeorm';
import type { MariadbObserver } from './observer';

/** The server thread ids (`CONNECTION_ID()`) of the connections in `dataSource`'s mysql2 pool, now. */
export function mariadbThreadIds(dataSource: DataSource): number[] {
  // mysql2 3.x keeps every pooled connection in the private `_allConnections` queue.
  const pool = (dataSource.driver as unknown as { pool: { _allConnections: { toArray(): Array<{ threadId: number | null }> } } })
    .pool;
  return pool._allConnections
    .toArray()
    .map((connection) => connection.threadId)
    .filter((id): id is number => id !== null);
}

/** A transaction of the app in `information_schema.INNODB_TRX`. */
export interface MariadbTransaction {
  /** Its connection's thread id. */
  id: number;
  /** `RUNNING`, `LOCK WAIT`, … */
  state: string;
  /** Rows it has locked, the one it waits for included. */
  rowsLocked: number;
}

/**
 * The open InnoDB transactions of `dataSource`'s pooled connections (no one else's). INNODB_TRX is a
 * cache that InnoDB refreshes only when the previous read is over 100 ms old: poll it no faster (see
 * `INNODB_TRX_POLL` in test/e2e/lifecycle-fixtures.ts).
 */
export async function mariadbTransactionsOfApp(db: MariadbObserver, dataSource: DataSource): Promise<MariadbTransaction[]> {
  const ids = mariadbThreadIds(dataSource);
  if (ids.length === 0) return [];
  const rows = await db.query<{ id: unknown; state: string; rowsLocked: unknown }>(
    `SELECT trx_mysql_thread_id AS id, trx_state AS state, trx_rows_locked AS rowsLocked
       FROM information_schema.INNODB_TRX
      WHERE trx_mysql_thread_id IN (${ids.map(() => '?').join(', ')})
      ORDER BY trx_mysql_thread_id`,
    ids,
  );
  return rows.map((row) => ({ id: Number(row.id), state: row.state, rowsLocked: Number(row.rowsLocked) }));
}
