/** The checks of the options of the module, of `@Transactional()` and of `run()`, and their defaults. */
import { ISOLATION_LEVELS, MAX_DURATION_MS } from './core/dialect';
import { checkIdleInTransactionMs, defaultIdleInTransactionMs, resolveIdleInTransactionMs } from './core/idle-threshold';
import { describeValue as describe, TransactionalOptionsError } from './errors';
import type {
  GuardMode,
  ResolvedModuleOptions,
  RetryOptions,
  TransactionalModuleExtras,
  TransactionalModuleOptions,
  TransactionOptions,
} from './transactional.options';

export const GUARD_MODES: readonly GuardMode[] = ['throw', 'warn', 'off'];

/** Checks the extras given beside the options (and beside the factory of `forRootAsync`). */
export function validateExtras(extras: TransactionalModuleExtras, where: string): void {
  if (extras.mount !== undefined && typeof extras.mount !== 'boolean') {
    throw new TransactionalOptionsError(`${where}: mount must be true or false, got ${describe(extras.mount)}.`);
  }
}

const TRANSACTION_OPTION_KEYS = [
  'isolationLevel',
  'readOnly',
  'timeoutMs',
  'guard',
  'slowTransactionMs',
  'idleInTransactionMs',
  'retry',
] as const;
/** @internal The options `forRoot()` takes (besides `dataSource`). */
export const MODULE_OPTION_KEYS: readonly string[] = [
  ...TRANSACTION_OPTION_KEYS.filter((key) => key !== 'retry'),
  'logStatsIntervalMs',
];
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
      throw new TransactionalOptionsError(
        `${where}: ${key} must be a whole number of milliseconds above 0, got ${describe(value)}.`,
      );
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
function copyOf(
  value: unknown,
  where: string,
  what: string,
  known: readonly string[],
  list: string,
  hint: string,
): Record<string, unknown> {
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
    throw new TransactionalOptionsError(
      `${where}: retry must be true, false or { attempts, baseDelayMs, maxDelayMs }, got ${describe(retry)}.`,
    );
  }
  const r = copyOf(retry, where, 'retry', RETRY_OPTION_KEYS, 'Known', 'Use true for the defaults') as RetryOptions;
  if (r.attempts !== undefined && !(Number.isSafeInteger(r.attempts) && r.attempts >= 1)) {
    throw new TransactionalOptionsError(
      `${where}: retry.attempts must be a whole number of at least 1, got ${describe(r.attempts)}.`,
    );
  }
  for (const key of ['baseDelayMs', 'maxDelayMs'] as const) {
    const value = r[key];
    if (value !== undefined && !(typeof value === 'number' && Number.isFinite(value) && value >= 0)) {
      throw new TransactionalOptionsError(
        `${where}: retry.${key} must be a number of milliseconds of at least 0, got ${describe(value)}.`,
      );
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
export function checkedModuleOptions(
  options: unknown,
  where: string,
): Readonly<TransactionalModuleOptions & TransactionalModuleExtras> {
  if (typeof options === 'object' && options !== null && (options as TransactionOptions).retry !== undefined) {
    throw new TransactionalOptionsError(
      `${where}: retry is set where a unit of work can be run again: @Transactional({ retry }) on a route, or TransactionRunner.run(fn, { retry }).`,
    );
  }
  const checked = checkedTransactionOptions<TransactionalModuleOptions & TransactionalModuleExtras>(
    options,
    where,
    ['dataSource', 'mount'],
    MODULE_OPTION_KEYS,
  );
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
