import { callSite, type StackHolder } from './call-site';

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
      (whole ? 'A deadlock or serialization failure here ends the whole transaction, savepoints included: ' : 'For a deadlock or serialization failure, ') +
      `let the error propagate, and set @Transactional({ retry: true }) (or run(fn, { retry: true })) to run the unit of work again.`
    );
  }
  return (
    `Let the first error propagate, or run the statement that may fail in a savepoint (tx.transaction(), or ` +
    `TransactionRunner.run(fn, { propagation: 'nested' })): its failure then undoes the savepoint alone, and the ` +
    `transaction goes on.`
  );
}
