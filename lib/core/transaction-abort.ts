import { TransactionAbortedError } from '../errors';
import { atCallSite, callSite, captureStack, type StackHolder } from './call-site';
import type { Dialect } from './dialect';

/** The database aborted a unit of work's transaction, or one of its savepoints. */
export interface Abort {
  /**
   * TypeORM's transaction depth the failed statement ran at: the unit of work's own depth when the
   * whole transaction is aborted, deeper inside a savepoint (a ROLLBACK TO that savepoint clears it).
   */
  depth: number;
  /** The server rolled the whole transaction back (MySQL/MariaDB): its savepoints are gone too. */
  ended: boolean;
  /** The first failure. */
  cause: unknown;
  /** Where the failed statement was made. */
  site: StackHolder;
}

/**
 * Whether the database aborted a data-source transaction or one of its savepoints: asked of the dialect
 * after each failed statement; while aborted, every later statement is refused until a ROLLBACK (TO
 * SAVEPOINT) clears it.
 */
export class AbortState {
  current?: Abort;

  /** `ownDepth`: TypeORM's depth of the unit of work's own level. */
  constructor(
    private readonly dialect: Dialect,
    private readonly ownDepth: number,
  ) {}

  /**
   * After a failed statement on `connection`: asks the dialect what the database did and notes an abort
   * of the transaction, or of the savepoint at the runner's depth. Called while the connection is still
   * the failed statement's, so nothing else reaches the database before this is known.
   */
  async noteFailure(connection: unknown, error: unknown, runner: { transactionDepth: number }): Promise<void> {
    if (this.current?.ended === true) return;
    const site = captureStack();
    const scope = await this.dialect.afterFailure(connection, error);
    if (scope === 'statement' || (this.current !== undefined && scope === 'level')) return;
    const depth = scope === 'transaction' ? this.ownDepth : runner.transactionDepth;
    this.current = { depth, ended: scope === 'transaction', cause: error, site };
  }

  /** Whether the savepoint opened at `depth` (or the transaction, or any savepoint in it) is aborted. */
  within(depth: number): boolean {
    return this.current !== undefined && (this.current.ended || this.current.depth > depth);
  }

  /** The server ended the whole transaction: nothing, not even a ROLLBACK TO SAVEPOINT, can go to it. */
  get ended(): boolean {
    return this.current?.ended === true;
  }

  /** A ROLLBACK TO the savepoint opened at `depth` went through: an abort inside it is cleared. */
  rolledBackTo(depth: number): void {
    if (this.current !== undefined && this.current.depth > depth) this.current = undefined;
  }

  /** A savepoint could not be undone: nothing in the transaction can be trusted any more. */
  undoFailed(cause: unknown): void {
    this.current = { depth: this.ownDepth, ended: false, cause, site: captureStack() };
  }

  /** The error for `use` refused in `label`'s aborted transaction or savepoint. */
  error(use: string, label: string): TransactionAbortedError {
    return abortedError(this.current as Abort, use, label, this.dialect, this.ownDepth);
  }
}

/** What `abort` means, for messages: the first failure, where it was made, and what the database did. */
export function describeAbort(abort: Abort, database: string, wholeTransaction: boolean): string {
  const reason = abort.cause instanceof Error ? abort.cause.message : String(abort.cause);
  const site = callSite(abort.site);
  const what = abort.ended
    ? `${database} rolled the whole transaction back`
    : wholeTransaction
      ? `${database} aborted the transaction`
      : `${database} aborted the savepoint it ran in`;
  return `an earlier statement failed (${reason}${site ? `, at ${site}` : ''}) and ${what}`;
}

/** How to avoid the abort, for messages. `whole`: the database ended the transaction, savepoints included. */
export function abortAdvice(retryable: boolean, whole: boolean): string {
  if (retryable) {
    return (
      (whole
        ? 'A deadlock or serialization failure here ends the whole transaction, savepoints included: '
        : 'For a deadlock or serialization failure, ') +
      `let the error propagate, and set @Transactional({ retry: true }) (or run(fn, { retry: true })) to run the unit of work again.`
    );
  }
  return (
    `Let the first error propagate, or run the statement that may fail in a savepoint (tx.transaction(), or ` +
    `TransactionRunner.run(fn, { propagation: 'nested' })): its failure then undoes the savepoint alone, and the ` +
    `transaction goes on.`
  );
}

/**
 * The error for `use` refused in `label`'s transaction, aborted as `abort` says; `ownDepth` is the
 * unit of work's own depth (the whole transaction is aborted at or above it).
 */
function abortedError(abort: Abort, use: string, label: string, dialect: Dialect, ownDepth: number): TransactionAbortedError {
  const database = dialect.name === 'postgres' ? 'PostgreSQL' : 'MySQL/MariaDB';
  const whole = abort.ended || abort.depth <= ownDepth;
  const end = whole
    ? 'it ends in a ROLLBACK, and the unit of work fails'
    : 'the savepoint is rolled back, and tx.transaction() rejects';
  return new TransactionAbortedError(
    `${use} in the transaction of ${label} was refused${use === 'COMMIT' ? '' : atCallSite(captureStack())}: ` +
      `${describeAbort(abort, database, whole)}. Nothing more can run in it, even though that error was caught: ` +
      `${end}. ${abortAdvice(dialect.isRetryable(abort.cause), abort.ended)}`,
    { cause: abort.cause },
  );
}

/** PostgreSQL answered COMMIT with ROLLBACK: the transaction was aborted by a statement the library did not run. */
export function refusedCommitError(label: string): TransactionAbortedError {
  return new TransactionAbortedError(
    `PostgreSQL answered the COMMIT of ${label} with ROLLBACK: a statement of its transaction had failed, ` +
      `sent on its connection outside the unit of work's manager, and the database aborted the transaction. ` +
      `Nothing of it was written. Run every statement through the manager from @Tx() (or TransactionHost.manager()), ` +
      `and let a failure propagate or run the statement that may fail in tx.transaction().`,
  );
}
