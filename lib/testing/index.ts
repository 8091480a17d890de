import type { INestApplicationContext } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import type { DataSource, DataSourceOptions } from 'typeorm';
import { mysqlPoolGetConnectionShape, mysqlPoolOf, type Mysql2Pool } from '../compat/mysql2';
import { type PgPool, pgPoolConnectShape, pgPoolOf } from '../compat/pg';
import { requireShapes } from '../compat/shape';
import { DataSourceRegistry, DEFAULT_DATA_SOURCE } from '../core/data-source-registry';
import { TransactionalError } from '../errors';

export { ConnectionAudit, type PlainAcquisition, type UnitAudit } from './connection-audit';
export type { IdleGap } from '../core/idle-gap-report';

/**
 * TypeORM options for a test suite: a pool of one connection and a short acquisition timeout, so any
 * second connection the guard cannot see fails fast with a message instead of hanging the suite.
 * @example
 * TypeOrmModule.forRoot(singleConnectionPool({ type: 'postgres', url, autoLoadEntities: true }))
 */
export function singleConnectionPool<T extends DataSourceOptions>(options: T, { acquireTimeoutMs = 2000 } = {}): T {
  switch (options.type) {
    case 'postgres':
      // node-postgres uses connectionTimeoutMillis for pool acquisition as well.
      return { ...options, poolSize: 1, connectTimeoutMS: acquireTimeoutMs };
    case 'mysql':
    case 'mariadb':
      // mysql2 has no acquisition timeout; TransactionalModule applies connectTimeout to acquisition.
      return { ...options, poolSize: 1, connectTimeout: acquireTimeoutMs };
    default:
      throw new TransactionalError(`singleConnectionPool(): unsupported data source type '${options.type}'.`);
  }
}

/**
 * Django-`TestCase`-style isolation: everything a test does through one data source, its requests
 * included, runs on one connection inside one transaction that is rolled back when the test ends.
 * Units of work become SAVEPOINTs inside it; the guard keeps working.
 *
 * It cannot cover: concurrent requests within one test (they share the one connection and see each
 * other's uncommitted work), code that needs its own connection (LISTEN/NOTIFY, advisory locks held
 * across units of work), `isolationLevel`/`readOnly`/`timeoutMs` (a savepoint cannot set them), and
 * anything that commits outside TypeORM's pool.
 * @example
 * const db = rollbackPerTest(app);
 * beforeEach(() => db.begin());
 * afterEach(() => db.rollback());
 */
export function rollbackPerTest(app: INestApplicationContext, dataSource: string = DEFAULT_DATA_SOURCE) {
  return new TestTransaction(app, dataSource);
}

/** The handle `rollbackPerTest()` returns. */
export class TestTransaction {
  private undo?: () => Promise<void>;

  constructor(
    private readonly app: INestApplicationContext,
    private readonly name: string,
  ) {}

  /** Takes one connection, opens the test's transaction and routes every acquisition to it. */
  async begin(): Promise<void> {
    if (this.undo) throw new TransactionalError('rollbackPerTest(): begin() was called twice without rollback().');
    const dataSource = this.app.get<DataSource>(getDataSourceToken(this.name), { strict: false });
    const entry = this.app.get(DataSourceRegistry, { strict: false }).get(this.name, 'rollbackPerTest()');
    const postgres = entry.dialect.name === 'postgres';
    // Every acquisition gets the test's connection: the pool's connect() / getConnection() is replaced.
    requireShapes('rollbackPerTest()', [postgres ? pgPoolConnectShape(dataSource) : mysqlPoolGetConnectionShape(dataSource)]);
    const runner = dataSource.createQueryRunner();
    const connection: unknown = await runner.connect();
    await runner.query(postgres ? 'BEGIN' : 'START TRANSACTION');
    const restorePool = postgres
      ? shareConnection(pgPoolOf(dataSource) as PgPool, 'connect', (cb) => cb(null, connection, () => undefined))
      : shareConnection(mysqlPoolOf(dataSource) as Mysql2Pool, 'getConnection', (cb) => cb(null, sharedMysql(connection)));
    entry.insideTestTransaction = true;
    this.undo = async () => {
      entry.insideTestTransaction = false;
      restorePool();
      try {
        await runner.query('ROLLBACK');
      } finally {
        await runner.release();
      }
    };
  }

  /** Rolls the test's transaction back and gives the connection back to the pool. */
  async rollback(): Promise<void> {
    const undo = this.undo;
    this.undo = undefined;
    await undo?.();
  }
}

type Callback = (err: unknown, ...rest: unknown[]) => void;

function shareConnection<P extends object>(pool: P, method: string, hand: (cb: Callback) => void): () => void {
  const target = pool as unknown as Record<string, unknown>;
  const original = target[method];
  target[method] = (cb?: Callback) => {
    if (cb) return hand(cb);
    return new Promise((resolve, reject) => hand((err, client) => (err ? reject(err) : resolve(client))));
  };
  return () => {
    target[method] = original;
  };
}

/** The test's mysql2 connection, with release/destroy that leave it in place for the next user. */
function sharedMysql(connection: unknown): unknown {
  return new Proxy(connection as object, {
    get(target, property, receiver) {
      if (property === 'release' || property === 'destroy') return () => undefined;
      const value = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}
