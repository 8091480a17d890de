import type { INestApplicationContext } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import type { DataSource, DataSourceOptions } from 'typeorm';
import { callSite, captureStack } from '../core/call-site';
import { DataSourceRegistry, DEFAULT_DATA_SOURCE } from '../core/data-source-registry';
import { currentContext, type TransactionContext } from '../core/transaction-context';
import { TransactionalError } from '../errors';

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

/** What one unit of work (or the code outside any) took from the pool while an audit watched. */
export interface UnitAudit {
  /** `POST /transfers`, the runner's name, or `(outside any unit of work)`. */
  readonly name: string;
  /** Successful acquisitions from the pool. */
  acquisitions: number;
  /** The most connections held at the same time. */
  maxHeld: number;
  /** Where each acquisition was made (first application frame). */
  readonly sites: string[];
}

const OUTSIDE = '(outside any unit of work)';
type Acquire = (...args: unknown[]) => Promise<unknown>;

/**
 * Records, per unit of work, the connections taken from one data source's pool: how many, and how
 * many at once. Attach it after the application is initialised.
 * @example
 * const audit = ConnectionAudit.attach(app.get(DataSource));
 * await request(app.getHttpServer()).post('/transfers').send(dto);
 * audit.assertOneConnectionPerUnit();
 */
export class ConnectionAudit {
  private readonly records = new Map<TransactionContext | typeof OUTSIDE, UnitAudit & { held: number }>();
  private readonly restore: Array<() => void> = [];

  private constructor(private readonly dataSource: DataSource) {}

  /** Starts recording acquisitions from `dataSource`'s pool. */
  static attach(dataSource: DataSource): ConnectionAudit {
    const audit = new ConnectionAudit(dataSource);
    const driver = dataSource.driver as unknown as Record<string, Acquire>;
    for (const method of ['obtainMasterConnection', 'obtainSlaveConnection']) {
      const original = driver[method];
      if (typeof original !== 'function') continue;
      driver[method] = async function auditedAcquisition(this: unknown, ...args: unknown[]) {
        const result = await original.apply(this, args);
        return audit.acquired(result);
      };
      audit.restore.push(() => {
        driver[method] = original;
      });
    }
    return audit;
  }

  /** One entry per unit of work that took a connection, in order of first acquisition. */
  units(): UnitAudit[] {
    return [...this.records.values()].map(({ held: _held, ...unit }) => ({ ...unit, sites: [...unit.sites] }));
  }

  /** Units of work that took more than one connection. Empty when all is well: `expect(audit.violations()).toEqual([])`. */
  violations(): UnitAudit[] {
    return this.units().filter((unit) => unit.name !== OUTSIDE && (unit.acquisitions > 1 || unit.maxHeld > 1));
  }

  /** Throws an error listing every unit of work that took more than one connection. */
  assertOneConnectionPerUnit(): void {
    const bad = this.violations();
    if (bad.length === 0) return;
    const lines = bad.map(
      (u) => `- ${u.name}: ${u.acquisitions} acquisitions, ${u.maxHeld} held at once; taken at ${u.sites.join('; ')}`,
    );
    throw new TransactionalError(
      `${bad.length} unit(s) of work took more than one pooled connection; under load they deadlock the pool:\n${lines.join('\n')}`,
    );
  }

  /** Forgets what was recorded so far. */
  reset(): void {
    this.records.clear();
  }

  /** Stops recording. */
  detach(): void {
    for (const undo of this.restore.splice(0)) undo();
  }

  private acquired(result: unknown): unknown {
    const ctx = currentContext();
    const key = ctx !== undefined && ctx.state !== 'committed' && ctx.state !== 'rolledBack' ? ctx : OUTSIDE;
    let record = this.records.get(key);
    if (record === undefined) {
      record = { name: key === OUTSIDE ? OUTSIDE : key.label, acquisitions: 0, maxHeld: 0, sites: [], held: 0 };
      this.records.set(key, record);
    }
    const unit = record;
    unit.acquisitions += 1;
    unit.held += 1;
    unit.maxHeld = Math.max(unit.maxHeld, unit.held);
    unit.sites.push(callSite(captureStack()) ?? '(unknown)');
    let released = false;
    const onRelease = () => {
      if (!released) {
        released = true;
        unit.held -= 1;
      }
    };
    if (this.dataSource.options.type === 'postgres') {
      // node-postgres: [client, release]
      const [client, release] = result as [unknown, (err?: unknown) => void];
      return [client, (err?: unknown) => (onRelease(), release(err))];
    }
    // mysql2: the pool connection; release() or destroy() ends this acquisition. The own properties
    // shadow the prototype's methods for this acquisition only.
    const connection = result as Record<'release' | 'destroy', () => void>;
    const end = () => {
      onRelease();
      delete (connection as Partial<typeof connection>).release;
      delete (connection as Partial<typeof connection>).destroy;
    };
    connection.release = function (this: typeof connection) {
      end();
      return this.release();
    };
    connection.destroy = function (this: typeof connection) {
      end();
      return this.destroy();
    };
    return connection;
  }
}

interface PgPool {
  connect(callback?: (err: unknown, client?: unknown, release?: (err?: unknown) => void) => void): unknown;
}
interface MysqlPool {
  getConnection(callback: (err: unknown, connection?: unknown) => void): void;
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
    const driver = dataSource.driver as unknown as { master?: PgPool; pool?: MysqlPool };
    const runner = dataSource.createQueryRunner();
    await runner.connect();
    await runner.query(entry.dialect.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION');
    const connection = (runner as unknown as { databaseConnection: unknown }).databaseConnection;
    const restorePool = driver.master
      ? shareConnection(driver.master, 'connect', (cb) => cb(null, connection, () => undefined))
      : shareConnection(driver.pool as MysqlPool, 'getConnection', (cb) => cb(null, sharedMysql(connection)));
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
