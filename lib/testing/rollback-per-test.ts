import type { INestApplicationContext } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import { mysqlPoolGetConnectionShape, mysqlPoolOf, type Mysql2Pool } from '../compat/mysql2';
import { type PgPool, pgPoolConnectShape, pgPoolOf } from '../compat/pg';
import { requireShapes } from '../compat/shape';
import { DataSourceRegistry, DEFAULT_DATA_SOURCE } from '../core/data-source-registry';
import { describeValue, TransactionalError } from '../errors';

/**
 * Django-`TestCase`-style isolation: everything a test does through one data source, its requests
 * included, runs on one connection inside one transaction that is rolled back when the test ends.
 * Units of work become SAVEPOINTs inside it; the guard keeps working.
 *
 * It cannot cover: concurrent requests within one test (they share the one connection and see each
 * other's uncommitted work), code that needs its own connection (LISTEN/NOTIFY, advisory locks held
 * across units of work), `isolationLevel`/`readOnly`/`timeoutMs` (a savepoint cannot set them), and
 * anything that commits outside TypeORM's pool.
 *
 * `app` is the application, or a function that returns it: at `describe` level, where Jest users call
 * this, the application is created later (in `beforeAll`), so pass `() => app`; it is read at `begin()`.
 * @example
 * let app: INestApplication;
 * const db = rollbackPerTest(() => app);
 * beforeAll(async () => { app = await createTestApp(); });
 * beforeEach(() => db.begin());
 * afterEach(() => db.rollback());
 */
export function rollbackPerTest(
  app: INestApplicationContext | (() => INestApplicationContext),
  dataSource: string = DEFAULT_DATA_SOURCE,
) {
  if (typeof app !== 'function' && !isApplication(app)) {
    throw new TransactionalError(
      `rollbackPerTest(): expected the Nest application, got ${describeValue(app)}. At describe level the application ` +
        `is not created yet (beforeAll has not run): pass a function that returns it, rollbackPerTest(() => app), ` +
        `or call rollbackPerTest(app) inside beforeAll, after the application is created.`,
    );
  }
  return new TestTransaction(typeof app === 'function' ? app : () => app, dataSource);
}

function isApplication(value: unknown): value is INestApplicationContext {
  return typeof value === 'object' && value !== null && typeof (value as INestApplicationContext).get === 'function';
}

/** The handle `rollbackPerTest()` returns. */
export class TestTransaction {
  private undo?: () => Promise<void>;

  constructor(
    private readonly application: () => INestApplicationContext,
    private readonly name: string,
  ) {}

  private app(): INestApplicationContext {
    const app = this.application();
    if (!isApplication(app)) {
      throw new TransactionalError(
        `rollbackPerTest(): the function given returned ${describeValue(app)}, not the Nest application. Create the ` +
          `application before the test transaction begins: in beforeAll, which runs before every beforeEach.`,
      );
    }
    return app;
  }

  /** Takes one connection, opens the test's transaction and routes every acquisition to it. */
  async begin(): Promise<void> {
    if (this.undo) throw new TransactionalError('rollbackPerTest(): begin() was called twice without rollback().');
    const app = this.app();
    const dataSource = app.get<DataSource>(getDataSourceToken(this.name), { strict: false });
    const entry = app.get(DataSourceRegistry, { strict: false }).get(this.name, 'rollbackPerTest()');
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
    // The pool's own error, passed through unchanged.
    // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
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
      const value: unknown = Reflect.get(target, property, receiver);
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
