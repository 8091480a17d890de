// node-postgres parts the library reaches, written against pg 8.16 with pg-pool 3.10 to 3.14, through
// TypeORM's PostgresDriver (`driver.master`, `driver.postgres`; TypeORM 0.3.20 to 0.3.28 and 1.1).
// The pool's counters and `connect()` are pg-pool's public API; a client's `_queryable` and `_ending`
// are private: pg itself refuses queries with them, and offers no public "is this client usable".
// TODO: use a public interface if pg exposes one. Checked at bootstrap by `checkCompatibility()`.
import type { DataSource } from 'typeorm';
import { PG_VERSIONS, type Shape, TYPEORM_VERSIONS } from './shape';

/** What the library reads or replaces on pg-pool's `Pool`. */
export interface PgPool {
  readonly totalCount: number;
  readonly idleCount: number;
  readonly waitingCount: number;
  readonly options: { readonly max: number };
  connect(callback?: (err: unknown, client?: unknown, release?: (err?: unknown) => void) => void): unknown;
}

/** `PostgresDriver.master`: the pool of the data source (the master's, with replication). */
export function pgPoolOf(dataSource: DataSource): PgPool | undefined {
  return (dataSource.driver as unknown as { master?: PgPool }).master;
}

interface PgClientInternals {
  /** False once the connection failed or ended: pg refuses further queries ("Client has encountered a connection error"). */
  _queryable?: boolean;
  /** True once `end()` was called or the connection ended. */
  _ending?: boolean;
}

/** The pg client already knows its connection is dead. */
export function pgClientBroken(client: unknown): boolean {
  const c = client as PgClientInternals;
  return c._queryable === false || c._ending === true;
}

/** Everything of pg the library reaches on `dataSource`. */
export function pgShapes(dataSource: DataSource): Shape[] {
  return [
    {
      package: 'typeorm',
      writtenFor: TYPEORM_VERSIONS,
      name: "PostgresDriver.master (pg-pool's Pool: totalCount, idleCount, waitingCount, options.max)",
      use: "TransactionHost.stats(), the metrics and the messages report the pool's counters.",
      present: () => {
        const pool = pgPoolOf(dataSource);
        return (
          typeof pool?.totalCount === 'number' &&
          typeof pool.idleCount === 'number' &&
          typeof pool.waitingCount === 'number' &&
          typeof pool.options?.max === 'number'
        );
      },
    },
    {
      package: 'pg',
      writtenFor: PG_VERSIONS,
      name: 'pg Client._queryable, Client._ending',
      use: 'a connection that broke between the pool and BEGIN fails with a clear error and is discarded.',
      present: () => {
        // Constructing a client opens no connection (pg connects in connect()).
        const Client = (dataSource.driver as unknown as { postgres?: { Client?: new () => object } }).postgres?.Client;
        if (typeof Client !== 'function') return false;
        const client = new Client() as PgClientInternals;
        return typeof client._queryable === 'boolean' && typeof client._ending === 'boolean';
      },
    },
  ];
}

/** For the testing kit's rollback-per-test, which hands one client to every `pool.connect()`. */
export function pgPoolConnectShape(dataSource: DataSource): Shape {
  return {
    package: 'typeorm',
    writtenFor: TYPEORM_VERSIONS,
    name: 'PostgresDriver.master.connect()',
    use: "rollbackPerTest() hands the test's connection to every acquisition by replacing the pool's connect().",
    present: () => typeof pgPoolOf(dataSource)?.connect === 'function',
  };
}
