/** Base class of every error this library throws. */
export class TransactionalError extends Error {
  override name = this.constructor.name;
}

/**
 * A second pooled connection was requested while a unit of work holds (or will hold) one for the
 * same data source. Under load every request ends up waiting for a second connection: the pool deadlocks.
 */
export class NestedConnectionError extends TransactionalError {}

/** A transactional repository or `@Tx()` was used outside any unit of work. */
export class NoTransactionError extends TransactionalError {}

/** The unit of work had already committed or rolled back when its manager was used. */
export class TransactionFinishedError extends TransactionalError {}

/** A statement ran longer than the route's `timeoutMs`, or the transaction idled longer than it. */
export class TransactionTimeoutError extends TransactionalError {}

/**
 * The pool gave no connection: none came free within the acquisition timeout (TypeORM's
 * `connectTimeoutMS` on PostgreSQL, `connectTimeout` on MySQL/MariaDB), or the database refused or
 * dropped the new connection. Nothing was sent; the request can be retried later.
 */
export class ConnectionAcquisitionError extends TransactionalError {}

/** Bad module or route options, found at bootstrap. */
export class TransactionalOptionsError extends TransactionalError {}

/**
 * The database aborted the unit of work's transaction: a statement failed on PostgreSQL (outside a
 * savepoint), or MySQL/MariaDB rolled the whole transaction back (a deadlock, say). Every later
 * statement of the unit fails with this error, and the unit ends in a ROLLBACK, even if the first
 * error was caught. `cause` is the first failure.
 */
export class TransactionAbortedError extends TransactionalError {}

/**
 * A unit of work that used several data sources committed on some and failed on a later one. There
 * is no two-phase commit: the data sources in `committed` keep their work, `failed` rolled back.
 */
export class PartialCommitError extends TransactionalError {
  constructor(
    message: string,
    readonly committed: readonly string[],
    readonly failed: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * A stream of rows read through the unit of work's connection was still open when the unit of work
 * ended, or when another statement wanted the connection: the connection is busy with the stream.
 */
export class OpenStreamError extends TransactionalError {}

/**
 * @internal A value as error messages show it: strings quoted (long ones cut), bigints with their `n`,
 * objects by kind rather than `[object Object]`.
 */
export function describeValue(value: unknown): string {
  if (typeof value === 'string') return value.length > 60 ? `'${value.slice(0, 60)}…'` : `'${value}'`;
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'function') return `a function${value.name ? ` (${value.name})` : ''}`;
  if (Array.isArray(value)) return `an array of ${value.length}`;
  if (typeof value === 'object' && value !== null) {
    const kind = (Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null)?.constructor?.name;
    if (kind === undefined || kind === 'Object' || kind === '') return 'an object';
    return `${/^[AEIOU]/i.test(kind) ? 'an' : 'a'} ${kind}`;
  }
  return String(value);
}

/**
 * At bootstrap (or when a testing helper is attached): a private part of TypeORM or of the database
 * driver that the library relies on is not there, or not in the shape it assumes, in the installed
 * version. `shapes` names each missing part; the message says which versions it was written against.
 */
export class CompatibilityError extends TransactionalError {
  constructor(
    message: string,
    readonly shapes: readonly string[],
  ) {
    super(message);
  }
}
