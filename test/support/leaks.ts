/**
 * The "nothing leaked" check the suites end their tests with, and the pool counters it reads.
 */
import type { DataSource } from 'typeorm';
import { dialectOf, type PoolStats } from '../../lib/core/dialect';
import { mariadbTransactionsOfApp } from './app-connections';
import { DEFAULT_WAIT_MS, waitFor, type MariadbObserver, type Observer, type PostgresObserver } from './observer';

/** The pool counters of `dataSource` (see `lib/core/dialect.ts`). */
export function poolStats(dataSource: DataSource): PoolStats {
  const dialect = dialectOf(dataSource);
  if (dialect === undefined) throw new Error(`no dialect for ${dataSource.options.type}`);
  return dialect.poolStats(dataSource);
}

/** What {@link expectNothingLeaked} looks at. */
export interface LeakScope {
  /** The app's data source: its pool, and on MariaDB its pooled connections. */
  dataSource: DataSource;
  /** An observer of the same database. */
  db: Observer;
  /** The app's `application_name` (PostgreSQL). */
  applicationName: string;
}

/** Options of {@link expectNothingLeaked}. */
export interface LeakCheckOptions {
  /**
   * How MariaDB is asked whether one of the app's pooled connections is still inside a transaction.
   * Either way only the app's own connections are looked at: MariaDB has no application_name, and the
   * observer's `inTransactionCount()` counts every connection of the test user, other suites' included.
   *
   * - `'observer'` (default): the observer reads `information_schema.INNODB_TRX` for the thread ids of
   *   the pool's connections. Nothing goes through the app, so its SQL log, a `ConnectionAudit` and the
   *   guard see nothing of the check. INNODB_TRX lists a transaction only once it touched an InnoDB
   *   table, and is a cache refreshed when the previous read is over 100 ms old: polled every 150 ms.
   * - `'app-connections'`: `SELECT @@in_transaction` on each of the pool's (idle) connections, asked
   *   through the data source: sees any open transaction and has no cache, but the statements reach
   *   the data source's logger.
   */
  mariadb?: 'observer' | 'app-connections';
}

/**
 * Waits (up to `DEFAULT_WAIT_MS`) until the app leaked nothing: its pool is back to idle (every connection it
 * holds is idle, nobody waits) and no connection of the app is left inside a transaction. PostgreSQL:
 * no `idle in transaction` backend of `applicationName`, nor any other of its backends inside a
 * transaction. MariaDB: see {@link LeakCheckOptions.mariadb}; the pool must be idle for that, which is
 * checked first.
 */
export async function expectNothingLeaked(
  { dataSource, db, applicationName }: LeakScope,
  { mariadb = 'observer' }: LeakCheckOptions = {},
): Promise<void> {
  await waitFor(
    async () => {
      const stats = poolStats(dataSource);
      expect({ idle: stats.idle, waiting: stats.waiting }).toEqual({ idle: stats.total, waiting: 0 });
      if (db.engine === 'postgres') {
        const postgres = db as PostgresObserver;
        expect(await postgres.idleInTransactionCount(applicationName)).toBe(0);
        const backends = await postgres.backends(applicationName);
        expect(backends.filter((backend) => backend.xactStart !== null)).toEqual([]);
      } else if (mariadb === 'observer') {
        expect(await mariadbTransactionsOf(db as MariadbObserver, dataSource)).toEqual([]);
      } else {
        // Concurrent acquisitions of every idle connection: each is asked once.
        const answers = await Promise.all(
          Array.from({ length: stats.total }, () =>
            dataSource.query<Array<{ open: number | string }>>('SELECT @@in_transaction AS open'),
          ),
        );
        expect(answers.map(([row]) => Number(row.open))).toEqual(answers.map(() => 0));
      }
    },
    { timeoutMs: DEFAULT_WAIT_MS, intervalMs: db.engine === 'mariadb' && mariadb === 'observer' ? 150 : 20 },
  );
}

/** Thread ids of the MariaDB connections of `dataSource`'s pool that have an open InnoDB transaction. */
export async function mariadbTransactionsOf(db: MariadbObserver, dataSource: DataSource): Promise<number[]> {
  return (await mariadbTransactionsOfApp(db, dataSource)).map((transaction) => transaction.id);
}
