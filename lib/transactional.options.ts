/**
 * The options of the module, of `@Transactional()` and of `run()`: their types. Their checks and
 * defaults are in options-check.ts.
 */
import type { IsolationLevel } from './core/dialect';

/**
 * What happens when code inside a unit of work asks the pool for a second connection:
 * `'throw'` fails the call with `NestedConnectionError`, `'warn'` logs once per call site and lets it
 * through, `'off'` does nothing.
 */
export type GuardMode = 'throw' | 'warn' | 'off';

/** Retry of a whole unit of work after a deadlock or serialization failure. */
export interface RetryOptions {
  /** Attempts in all, the first included. Default: 3. */
  attempts?: number;
  /**
   * Backoff ceiling before the first retry, in ms (0 to 2147483647); doubles each retry; the wait
   * is random below it (full jitter). Default: 20.
   */
  baseDelayMs?: number;
  /** Largest backoff ceiling, in ms (0 to 2147483647). Default: 1000. */
  maxDelayMs?: number;
}

/** Per-unit-of-work settings: module defaults, `@Transactional()` and `TransactionRunner.run()` all take these. */
export interface TransactionOptions {
  /** Sent with BEGIN. Default: the database's own default (PostgreSQL and MariaDB: none sent). */
  isolationLevel?: IsolationLevel;
  /** `BEGIN … READ ONLY`: the database rejects writes. Default: false. */
  readOnly?: boolean;
  /**
   * Longest a single statement may run, and longest the transaction may sit idle, in milliseconds
   * (PostgreSQL: `SET LOCAL statement_timeout` and `idle_in_transaction_session_timeout`), from 1 to
   * 2147483647. Default: none.
   */
  timeoutMs?: number;
  /** Guard mode for this unit of work. Default: the module's `guard`. */
  guard?: GuardMode;
  /**
   * Logs a warning, once per unit of work, when it has held a connection longer than this many
   * milliseconds: where it took the connection, and how the time split between statements running
   * in the database and the connection idling in transaction. 1 to 2147483647. Default: off.
   */
  slowTransactionMs?: number;
  /**
   * Reports a unit of work whose connection sat idle in transaction (held, no statement of it running)
   * longer than this many milliseconds between two statements, or between its last statement and its
   * end: a warning naming the statements on both sides of the gap, a count in `stats()`, and a record
   * for `ConnectionAudit`. `0` or `false` turns it off; up to 2147483647. Default: 200, off when `NODE_ENV=production`.
   */
  idleInTransactionMs?: number | false;
  /**
   * Runs the whole unit of work again after a deadlock or serialization failure (PostgreSQL 40P01,
   * 40001; MySQL/MariaDB 1213), only where the library owns the transaction and no response was sent.
   * `true` for the defaults. Default: no retry.
   */
  retry?: boolean | RetryOptions;
}

/** Options of `TransactionalModule.forRoot()`. All optional. */
export interface TransactionalModuleOptions extends Omit<TransactionOptions, 'retry'> {
  /**
   * Guard mode. Default: `'warn'` when `NODE_ENV=production`, `'throw'` otherwise.
   */
  guard?: GuardMode;
  /**
   * Logs this data source's `TransactionHost.stats()` through Nest's `Logger` every so many
   * milliseconds (counters as changes since the previous line), 1 to 2147483647. Default: off.
   */
  logStatsIntervalMs?: number;
}

/** Extras read before the options factory of `forRootAsync` runs. */
export interface TransactionalModuleExtras {
  /**
   * Name of the TypeORM data source, as given to `TypeOrmModule.forRoot({ name })`. With `forRootAsync()`
   * it goes beside the factory; a factory that returns it fails at bootstrap. Default: `'default'`.
   */
  dataSource?: string;
  /**
   * Binds `TransactionInterceptor` globally (`APP_INTERCEPTOR`). `false` leaves it to you: place it
   * among your own global interceptors, or bind it per controller with
   * `@UseInterceptors(TransactionInterceptor)`; handlers it is not bound to get no unit of work. With
   * several `forRoot()` calls (one per data source), the interceptor is bound once, unless every one
   * says `false`. Default: `true`.
   */
  mount?: boolean;
}

/** Module options with every default applied: the only place defaults are merged. */
export interface ResolvedModuleOptions {
  guard: GuardMode;
  isolationLevel?: IsolationLevel;
  readOnly: boolean;
  timeoutMs?: number;
  slowTransactionMs?: number;
  /** Undefined: off. */
  idleInTransactionMs?: number;
  logStatsIntervalMs?: number;
}

export type { IsolationLevel } from './core/dialect';
