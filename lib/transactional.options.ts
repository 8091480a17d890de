import { ISOLATION_LEVELS, type IsolationLevel, MAX_DURATION_MS } from './core/dialect';
import { checkIdleInTransactionMs, defaultIdleInTransactionMs, resolveIdleInTransactionMs } from './core/idle-threshold';
import { describeValue as describe, TransactionalOptionsError } from './errors';

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
  /** Undefined: off. */
  idleInTransactionMs?: number;
  logStatsIntervalMs?: number;
}

const TRANSACTION_OPTION_KEYS = ['isolationLevel', 'readOnly', 'timeoutMs', 'guard', 'slowTransactionMs', 'idleInTransactionMs', 'retry'] as const;
/** @internal The options `forRoot()` takes (besides `dataSource`). */
export const MODULE_OPTION_KEYS: readonly string[] = [...TRANSACTION_OPTION_KEYS.filter((key) => key !== 'retry'), 'logStatsIntervalMs'];
const RETRY_OPTION_KEYS = ['attempts', 'baseDelayMs', 'maxDelayMs'];
const PROPAGATIONS = ['required', 'nested'];
const NO_OPTIONS = Object.freeze({});

/** What a duration above 2147483647 would do, and what leaving the option out means. */
const TOO_LONG: Record<string, string> = {
  timeoutMs:
    "PostgreSQL's statement_timeout takes no more, so every transaction would fail. " +
    'Use at most 2147483647, or leave timeoutMs out for no timeout',
  slowTransactionMs:
    'Node.js fires a longer timer after 1 ms, so every transaction would be reported slow. ' +
    'Use at most 2147483647, or leave slowTransactionMs out for no warning',
  logStatsIntervalMs:
    'Node.js runs a longer interval every millisecond. Use at most 2147483647, or leave logStatsIntervalMs out for no stats lines',
  'retry.baseDelayMs': 'Node.js ends a longer wait after 1 ms. Use at most 2147483647',
  'retry.maxDelayMs': 'Node.js ends a longer wait after 1 ms. Use at most 2147483647',
};

/** Default guard mode for this process. */
export function defaultGuardMode(): GuardMode {
  return process.env.NODE_ENV === 'production' ? 'warn' : 'throw';
}

/**
 * Checks options where they are declared and returns a frozen shallow copy of them (a `retry` object
 * copied and frozen too; keys set to `undefined` left out), read once: the caller keeps the copy, so
 * changing the given object later changes nothing. Throws `TransactionalOptionsError` naming the option,
 * the bad value and the values that would work. `undefined` gives an empty (frozen) object.
 * `extraKeys` are allowed beside `baseKeys`; those among `name`, `dataSource` and `propagation` are checked too.
 * @example
 * const checked = checkedTransactionOptions<RunOptions>(options, 'TransactionRunner.run()', ['name', 'dataSource', 'propagation']);
 */
export function checkedTransactionOptions<T extends object = TransactionOptions>(
  options: unknown,
  where: string,
  extraKeys: readonly string[] = [],
  baseKeys: readonly string[] = TRANSACTION_OPTION_KEYS,
): Readonly<T> {
  if (options === undefined) return NO_OPTIONS as Readonly<T>;
  const known: readonly string[] = [...baseKeys, ...extraKeys];
  const o = copyOf(options, where, 'options', known, 'Known options', 'Leave them out for the defaults');
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
      throw new TransactionalOptionsError(`${where}: ${key} must be a whole number of milliseconds above 0, got ${describe(value)}.`);
    }
    checkCeiling(value, key, where);
  }
  checkIdleInTransactionMs(o.idleInTransactionMs, where);
  if (o.guard !== undefined && !(GUARD_MODES as readonly unknown[]).includes(o.guard)) {
    throw new TransactionalOptionsError(
      `${where}: guard ${describe(o.guard)} is not one of ${GUARD_MODES.map((m) => `'${m}'`).join(', ')}.`,
    );
  }
  if (o.retry !== undefined && typeof o.retry !== 'boolean') o.retry = checkedRetry(o.retry, where);
  for (const key of ['name', 'dataSource']) {
    if (known.includes(key) && o[key] !== undefined && (typeof o[key] !== 'string' || o[key] === '')) {
      const what = key === 'name' ? 'a label for errors and warnings' : 'the name of a TypeORM data source';
      throw new TransactionalOptionsError(`${where}: ${key} must be ${what}, a non-empty string; got ${describe(o[key])}.`);
    }
  }
  if (known.includes('propagation') && o.propagation !== undefined && !PROPAGATIONS.includes(o.propagation as string)) {
    throw new TransactionalOptionsError(`${where}: propagation ${describe(o.propagation)} is not one of 'required', 'nested'.`);
  }
  return Object.freeze(o) as Readonly<T>;
}

/** A plain copy of the object's own keys, each read once, all known; `undefined` values left out. */
function copyOf(value: unknown, where: string, what: string, known: readonly string[], list: string, hint: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TransactionalOptionsError(`${where}: ${what} must be an object, got ${describe(value)}. ${hint}.`);
  }
  const copy: Record<string, unknown> = {};
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      const prefix = what === 'options' ? '' : `${what} `;
      throw new TransactionalOptionsError(`${where}: unknown ${prefix}option '${key}'. ${list}: ${known.join(', ')}.`);
    }
    const item = (value as Record<string, unknown>)[key];
    if (item !== undefined) copy[key] = item;
  }
  return copy;
}

function checkCeiling(value: unknown, key: string, where: string): void {
  if (typeof value === 'number' && value > MAX_DURATION_MS) {
    throw new TransactionalOptionsError(
      `${where}: ${key} ${value} is above the limit of ${MAX_DURATION_MS} ms (about 24.8 days): ${TOO_LONG[key]}.`,
    );
  }
}

function checkedRetry(retry: unknown, where: string): Readonly<RetryOptions> {
  if (typeof retry !== 'object' || retry === null || Array.isArray(retry)) {
    throw new TransactionalOptionsError(`${where}: retry must be true, false or { attempts, baseDelayMs, maxDelayMs }, got ${describe(retry)}.`);
  }
  const r = copyOf(retry, where, 'retry', RETRY_OPTION_KEYS, 'Known', 'Use true for the defaults') as RetryOptions;
  if (r.attempts !== undefined && !(Number.isSafeInteger(r.attempts) && r.attempts >= 1)) {
    throw new TransactionalOptionsError(`${where}: retry.attempts must be a whole number of at least 1, got ${describe(r.attempts)}.`);
  }
  for (const key of ['baseDelayMs', 'maxDelayMs'] as const) {
    const value = r[key];
    if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
      throw new TransactionalOptionsError(`${where}: retry.${key} must be a number of milliseconds of at least 0, got ${describe(value)}.`);
    }
    checkCeiling(value, `retry.${key}`, where);
  }
  return Object.freeze(r);
}

/** Retry settings with defaults applied; `attempts: 1` means no retry. */
export function resolveRetry(retry: TransactionOptions['retry']): Required<RetryOptions> {
  const r = retry === true ? {} : retry === false || retry === undefined ? { attempts: 1 } : retry;
  return { attempts: r.attempts ?? 3, baseDelayMs: r.baseDelayMs ?? 20, maxDelayMs: r.maxDelayMs ?? 1000 };
}

/** Module options checked, copied and frozen as {@link checkedTransactionOptions} does, `dataSource` included. */
export function checkedModuleOptions(options: unknown, where: string): Readonly<TransactionalModuleOptions & TransactionalModuleExtras> {
  if (typeof options === 'object' && options !== null && (options as TransactionOptions).retry !== undefined) {
    throw new TransactionalOptionsError(
      `${where}: retry is set where a unit of work can be run again: @Transactional({ retry }) on a route, or TransactionRunner.run(fn, { retry }).`,
    );
  }
  const checked = checkedTransactionOptions<TransactionalModuleOptions & TransactionalModuleExtras>(options, where, ['dataSource', 'mount'], MODULE_OPTION_KEYS);
  validateExtras(checked, where);
  return checked;
}

/** Validates module options and applies the defaults: a frozen object built from checked values only. */
export function resolveModuleOptions(options: unknown, where: string): ResolvedModuleOptions {
  const o = checkedModuleOptions(options, where);
  return Object.freeze({
    guard: o.guard ?? defaultGuardMode(),
    isolationLevel: o.isolationLevel,
    readOnly: o.readOnly ?? false,
    timeoutMs: o.timeoutMs,
    slowTransactionMs: o.slowTransactionMs,
    idleInTransactionMs: resolveIdleInTransactionMs(o.idleInTransactionMs, defaultIdleInTransactionMs()),
    logStatsIntervalMs: o.logStatsIntervalMs,
  });
}

