// A recording fake of what the core uses of TypeORM and a driver: a data source, its query runners
// and managers, and a pool of one driver connection that records every statement sent on it. No
// database: unit tests check the exact statements of a unit of work in milliseconds.
import { EventEmitter } from 'node:events';
import { Readable } from 'node:stream';
import type { DataSource } from 'typeorm';
import { QueryFailedError } from 'typeorm';
import { DataSourceRegistry, type DataSourceEntry } from '../../lib/core/data-source-registry';
import { dialectOf } from '../../lib/core/dialect';
import { DataSourceCounters } from '../../lib/core/stats';
import { TransactionHost, TransactionRunner } from '../../lib/core/transaction-runner';

/** How the fake answers a statement: a result, or an error object thrown as the driver's. */
export type Responder = (sql: string, connection: FakeConnection) => unknown;

/** A database error as pg reports it (`severity`, SQLSTATE `code`) and mysql2 (`errno`). */
export function databaseError(message: string, fields: { code?: string; errno?: number; severity?: string } = {}): Error {
  return Object.assign(new Error(message), { severity: 'ERROR', ...fields });
}

/** One driver connection: records what it was sent, answers through the responder. Emits 'end' when lost. */
export class FakeConnection extends EventEmitter {
  constructor(private readonly pool: FakePool) {
    super();
  }

  /** pg's `client.query(sql)`, and mysql2's `connection.query(sql, callback)`. */
  query(sql: string, callback?: (error: unknown, result?: unknown) => void): Promise<unknown> | void {
    this.pool.sent.push(sql);
    let result: unknown;
    let failed = false;
    let failure: unknown;
    try {
      result = this.pool.respond(sql, this);
    } catch (error) {
      failed = true;
      failure = error;
    }
    if (callback !== undefined) {
      queueMicrotask(() => (failed ? callback(failure) : callback(null, result)));
      return;
    }
    return failed ? Promise.reject(failure) : Promise.resolve(result);
  }

  /** mysql2's destroy(). */
  destroy(): void {
    this.pool.destroyed += 1;
  }
}

/** A pool of one connection, with counters. */
export class FakePool {
  readonly sent: string[] = [];
  acquired = 0;
  released = 0;
  destroyed = 0;
  respond: Responder = () => ({ command: 'OK', rows: [] });
  readonly connection = new FakeConnection(this);

  acquire(): Promise<FakeConnection> {
    this.acquired += 1;
    return Promise.resolve(this.connection);
  }

  /** The server closes the connection, as pg and mysql2 report it: an 'end' event. */
  lose(): void {
    this.connection.emit('end');
  }

  /** Statements sent, control statements and data statements alike. */
  statements(): string[] {
    return [...this.sent];
  }
}

class FakeManager {
  constructor(readonly queryRunner: FakeQueryRunner) {}

  query(sql: string, parameters?: unknown[]): Promise<unknown> {
    return this.queryRunner.query(sql, parameters);
  }

  /** Outside a unit of work the library never calls this; inside one it replaces it. */
  transaction(): Promise<unknown> {
    return Promise.reject(new Error('the fake has no transactions of its own'));
  }
}

class FakeQueryRunner {
  isTransactionActive = false;
  transactionDepth = 0;
  isReleased = false;
  databaseConnection?: FakeConnection;
  readonly broadcaster = { broadcast: () => Promise.resolve() };
  readonly manager: FakeManager;

  constructor(private readonly pool: FakePool) {
    this.manager = new FakeManager(this);
  }

  async connect(): Promise<FakeConnection> {
    this.databaseConnection ??= await this.pool.acquire();
    return this.databaseConnection;
  }

  async query(sql: string, parameters?: unknown[]): Promise<unknown> {
    const connection = await this.connect();
    try {
      return await connection.query(sql);
    } catch (error) {
      throw new QueryFailedError(sql, parameters, error as Error);
    }
  }

  /** A stream of `rows` for `sql`, sent like a query: the connection is busy until it is read or destroyed. */
  async stream(sql: string, rows: unknown[] = [{ n: 1 }, { n: 2 }]): Promise<Readable> {
    const connection = await this.connect();
    await connection.query(sql);
    return Readable.from(rows);
  }

  async release(): Promise<void> {
    this.isReleased = true;
    if (this.databaseConnection !== undefined) this.pool.released += 1;
    this.databaseConnection = undefined;
  }

  /** pg's release with an error: the pool destroys the client. */
  async releasePostgresConnection(): Promise<void> {
    this.isReleased = true;
    this.pool.destroyed += 1;
    this.databaseConnection = undefined;
  }
}

/** What {@link fakeApp} gives a test. */
export interface FakeApp {
  /** The pool of the first data source ('default'). */
  pool: FakePool;
  /** Every data source's pool, by name. */
  pools: Record<string, FakePool>;
  runner: TransactionRunner;
  host: TransactionHost;
  registry: DataSourceRegistry;
}

/** A registry with fake data sources of `type` ('default' unless named), and the runner and host over it. */
export function fakeApp(type: 'postgres' | 'mysql' = 'postgres', names: string[] = ['default']): FakeApp {
  const registry = new DataSourceRegistry();
  const pools: Record<string, FakePool> = {};
  for (const name of names) pools[name] = registerFake(registry, type, name);
  return { pool: pools[names[0]], pools, registry, runner: new TransactionRunner(registry), host: new TransactionHost(registry) };
}

function registerFake(registry: DataSourceRegistry, type: 'postgres' | 'mysql', name: string): FakePool {
  const pool = new FakePool();
  const dataSource = {
    options: { type },
    subscribers: [],
    logger: { logQuery: () => undefined, logQueryError: () => undefined },
    driver: {},
    createQueryRunner: () => new FakeQueryRunner(pool),
  } as unknown as DataSource;
  const dialect = dialectOf(dataSource);
  if (dialect === undefined) throw new Error(`no dialect for ${type}`);
  const entry: DataSourceEntry = {
    name,
    dataSource,
    dialect,
    options: { guard: 'throw', readOnly: false },
    counters: new DataSourceCounters(),
  };
  registry.register(entry);
  return pool;
}
