import { ISOLATION_LEVELS, type IsolationLevel } from './core/dialect';
import { TransactionalOptionsError } from './errors';

export type { IsolationLevel } from './core/dialect';

/**
 * What happens when code inside a unit of work asks the pool for a second connection:
 * `'throw'` fails the call with `NestedConnectionError`, `'warn'` logs once per call site and lets it
 * through, `'off'` does nothing.
 */
export type GuardMode = 'throw' | 'warn' | 'off';
export const GUARD_MODES: readonly GuardMode[] = ['throw', 'warn', 'off'];

/** Retry of a whole unit of work after a deadlock or serialization failure. */
export interface RetryOptions {
  /** Attempts in all, the first included. Default: 3. */
  attempts?: number;
  /** Backoff ceiling before the first retry, in ms; doubles each retry; the wait is random below it (full jitter). Default: 20. */
  baseDelayMs?: number;
  /** Largest backoff ceiling, in ms. Default: 1000. */
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
   * (PostgreSQL: `SET LOCAL statement_timeout` and `idle_in_transaction_session_timeout`).
   * Default: none.
   */
  timeoutMs?: number;
  /** Guard mode for this unit of work. Default: the module's `guard`. */
  guard?: GuardMode;
  /**
   * Logs a warning, once per unit of work, when it has held a connection longer than this many
   * milliseconds: where it took the connection, and how the time split between statements running
   * in the database and the connection idling in transaction. Default: off.
   */
  slowTransactionMs?: number;
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
   * milliseconds (counters as changes since the previous line). Default: off.
   */
  logStatsIntervalMs?: number;
}

/** Extras read before the options factory of `forRootAsync` runs. */
export interface TransactionalModuleExtras {
  /** Name of the TypeORM data source, as given to `TypeOrmModule.forRoot({ name })`. Default: `'default'`. */
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

/** Checks the extras given beside the options (and beside the factory of `forRootAsync`). */
export function validateExtras(extras: TransactionalModuleExtras, where: string): void {
  if (extras.mount !== undefined && typeof extras.mount !== 'boolean') {
    throw new TransactionalOptionsError(`${where}: mount must be true or false, got ${describe(extras.mount)}.`);
  }
}

/** Module options with every default applied: the only place defaults are merged. */
export interface ResolvedModuleOptions {
  guard: GuardMode;
  isolationLevel?: IsolationLevel;
  readOnly: boolean;
  timeoutMs?: number;
  slowTransactionMs?: number;
  logStatsIntervalMs?: number;
}

const TRANSACTION_OPTION_KEYS = ['isolationLevel', 'readOnly', 'timeoutMs', 'guard', 'slowTransactionMs', 'retry'] as const;
const MODULE_OPTION_KEYS = [...TRANSACTION_OPTION_KEYS.filter((key) => key !== 'retry'), 'logStatsIntervalMs'];
const RETRY_OPTION_KEYS = ['attempts', 'baseDelayMs', 'maxDelayMs'];

/** Default guard mode for this process. */
export function defaultGuardMode(): GuardMode {
  return process.env.NODE_ENV === 'production' ? 'warn' : 'throw';
}

/**
 * Checks options where they are declared and throws `TransactionalOptionsError` naming the option,
 * the bad value and the values that would work.
 */
export function validateTransactionOptions(
  options: unknown,
  where: string,
  extraKeys: readonly string[] = [],
  baseKeys: readonly string[] = TRANSACTION_OPTION_KEYS,
): asserts options is TransactionOptions {
  if (options === undefined) return;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TransactionalOptionsError(`${where}: options must be an object, got ${describe(options)}.`);
  }
  const known: readonly string[] = [...baseKeys, ...extraKeys];
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new TransactionalOptionsError(
        `${where}: unknown option '${key}'. Known options: ${known.join(', ')}.`,
      );
    }
  }
  const o = options as Record<string, unknown>;
  if (o.isolationLevel !== undefined && !(ISOLATION_LEVELS as readonly unknown[]).includes(o.isolationLevel)) {
    throw new TransactionalOptionsError(
      `${where}: isolationLevel ${describe(o.isolationLevel)} is not one of ${ISOLATION_LEVELS.map((l) => `'${l}'`).join(', ')}.`,
    );
  }
  if (o.readOnly !== undefined && typeof o.readOnly !== 'boolean') {
    throw new TransactionalOptionsError(`${where}: readOnly must be true or false, got ${describe(o.readOnly)}.`);
  }
  for (const key of ['timeoutMs', 'slowTransactionMs', 'logStatsIntervalMs']) {
    const value = o[key];
    if (value !== undefined && !(Number.isInteger(value) && (value as number) > 0)) {
      throw new TransactionalOptionsError(
        `${where}: ${key} must be a whole number of milliseconds above 0, got ${describe(value)}.`,
      );
    }
  }
  if (o.guard !== undefined && !(GUARD_MODES as readonly unknown[]).includes(o.guard)) {
    throw new TransactionalOptionsError(
      `${where}: guard ${describe(o.guard)} is not one of ${GUARD_MODES.map((m) => `'${m}'`).join(', ')}.`,
    );
  }
  if (o.retry !== undefined && typeof o.retry !== 'boolean') validateRetry(o.retry, where);
}

function validateRetry(retry: unknown, where: string): void {
  if (typeof retry !== 'object' || retry === null || Array.isArray(retry)) {
    throw new TransactionalOptionsError(`${where}: retry must be true, false or { attempts, baseDelayMs, maxDelayMs }, got ${describe(retry)}.`);
  }
  for (const key of Object.keys(retry)) {
    if (!RETRY_OPTION_KEYS.includes(key)) {
      throw new TransactionalOptionsError(`${where}: unknown retry option '${key}'. Known: ${RETRY_OPTION_KEYS.join(', ')}.`);
    }
  }
  const r = retry as RetryOptions;
  if (r.attempts !== undefined && !(Number.isInteger(r.attempts) && r.attempts >= 1)) {
    throw new TransactionalOptionsError(`${where}: retry.attempts must be a whole number of at least 1, got ${describe(r.attempts)}.`);
  }
  for (const key of ['baseDelayMs', 'maxDelayMs'] as const) {
    const value = r[key];
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) {
      throw new TransactionalOptionsError(`${where}: retry.${key} must be a number of milliseconds of at least 0, got ${describe(value)}.`);
    }
  }
}

/** Retry settings with defaults applied; `attempts: 1` means no retry. */
export function resolveRetry(retry: TransactionOptions['retry']): Required<RetryOptions> {
  const r = retry === true ? {} : retry === false || retry === undefined ? { attempts: 1 } : retry;
  return { attempts: r.attempts ?? 3, baseDelayMs: r.baseDelayMs ?? 20, maxDelayMs: r.maxDelayMs ?? 1000 };
}

/** Validates module options and applies the defaults. */
export function resolveModuleOptions(options: TransactionalModuleOptions & TransactionalModuleExtras, where: string): ResolvedModuleOptions {
  if ((options as TransactionOptions | undefined)?.retry !== undefined) {
    throw new TransactionalOptionsError(
      `${where}: retry is set where a unit of work can be run again: @Transactional({ retry }) on a route, or TransactionRunner.run(fn, { retry }).`,
    );
  }
  validateTransactionOptions(options, where, ['dataSource', 'mount'], MODULE_OPTION_KEYS);
  validateExtras(options, where);
  return {
    guard: options.guard ?? defaultGuardMode(),
    isolationLevel: options.isolationLevel,
    readOnly: options.readOnly ?? false,
    timeoutMs: options.timeoutMs,
    slowTransactionMs: options.slowTransactionMs,
    logStatsIntervalMs: options.logStatsIntervalMs,
  };
}

function describe(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : String(value);
}
