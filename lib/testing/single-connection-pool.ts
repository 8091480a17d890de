import type { TypeOrmModuleOptions } from '@nestjs/typeorm';
import type { DataSource, DataSourceOptions } from 'typeorm';
import { describeValue, TransactionalError } from '../errors';

/**
 * Marks the options `singleConnectionPool()` returned. A symbol key survives the spreads that
 * `@nestjs/typeorm` and the application make, so TransactionalModule can check at bootstrap that the
 * pool TypeORM built really holds one connection.
 */
const SINGLE_CONNECTION = Symbol.for('nestjs-request-transaction:singleConnectionPool');

/** The TypeORM options `singleConnectionPool()` takes: those `forRoot()` gets, or a data source's. */
export type SingleConnectionPoolInput = TypeOrmModuleOptions | DataSourceOptions;

/**
 * TypeORM options for a test suite: a pool of one connection and a short acquisition timeout, so any
 * second connection the guard cannot see fails fast with a message instead of hanging the suite.
 * It sets every pool size TypeORM reads (`poolSize`, and the driver's own in `extra`, which TypeORM
 * applies after `poolSize`: `extra.max` for node-postgres, `extra.connectionLimit` for mysql2).
 * Accepts what `TypeOrmModule.forRoot()` takes and what a `forRootAsync()` factory returns.
 * @throws TransactionalError for a type other than postgres, mysql or mariadb, and for `replication`
 * (a pool per server); at bootstrap, TransactionalModule throws if the pool still opens more than one.
 * @example
 * TypeOrmModule.forRoot(singleConnectionPool({ type: 'postgres', url, autoLoadEntities: true }))
 * TypeOrmModule.forRootAsync({ useFactory: () => singleConnectionPool(databaseOptions()) })
 */
export function singleConnectionPool<T extends SingleConnectionPoolInput>(options: T, { acquireTimeoutMs = 2000 } = {}): T {
  const where = 'singleConnectionPool()';
  if (typeof options !== 'object' || options === null) {
    throw new TransactionalError(`${where}: expected TypeORM options ({ type: 'postgres', … }), got ${describeValue(options)}.`);
  }
  if ((options as { replication?: unknown }).replication !== undefined) {
    throw new TransactionalError(
      `${where}: the options set replication, and TypeORM opens a pool per server then, so the data source would ` +
        `hold more than one connection. Give the test suite one server (url or host) and no replication.`,
    );
  }
  const extra: unknown = options.extra ?? {};
  if (typeof extra !== 'object' || extra === null || Array.isArray(extra)) {
    throw new TransactionalError(`${where}: extra must be an object (the driver's pool options), got ${describeValue(extra)}.`);
  }
  switch (options.type) {
    case 'postgres':
      // node-postgres uses connectionTimeoutMillis for pool acquisition as well.
      return {
        ...options,
        poolSize: 1,
        connectTimeoutMS: acquireTimeoutMs,
        extra: { ...extra, max: 1 },
        [SINGLE_CONNECTION]: true,
      };
    case 'mysql':
    case 'mariadb':
      // mysql2 has no acquisition timeout; TransactionalModule applies connectTimeout to acquisition.
      return {
        ...options,
        poolSize: 1,
        connectTimeout: acquireTimeoutMs,
        extra: { ...extra, connectionLimit: 1 },
        [SINGLE_CONNECTION]: true,
      };
    default:
      throw new TransactionalError(
        `${where}: unsupported data source type ${describeValue(options.type)}. It knows how to size the pools of ` +
          `'postgres', 'mysql' and 'mariadb' (the types TransactionalModule supports); set type to one of them.`,
      );
  }
}

/**
 * At bootstrap, for a data source built from `singleConnectionPool()`'s options: throws when its pool
 * opens more than one connection, which happens when the pool size was set again after the call.
 */
export function checkSingleConnectionPool(dataSource: DataSource, name: string, poolMax: number, where: string): void {
  if ((dataSource.options as { [SINGLE_CONNECTION]?: boolean })[SINGLE_CONNECTION] !== true || poolMax === 1) return;
  const key = dataSource.options.type === 'postgres' ? 'extra.max' : 'extra.connectionLimit';
  throw new TransactionalError(
    `${where}: data source '${name}' was configured with singleConnectionPool(), but its pool opens up ` +
      `to ${poolMax} connections: the pool size was set again after the call (poolSize or ${key} on the options it ` +
      `returned). A test suite on a larger pool no longer proves that each request takes one connection. Call ` +
      `singleConnectionPool() last, on the options exactly as TypeORM gets them.`,
  );
}
