import { PartialCommitError, TransactionalError, TransactionFinishedError, TransactionTimeoutError } from '../errors';
import { atCallSite, captureStack } from './call-site';
import type { DataSourceTransaction } from './data-source-transaction';
import type { UnitOfWorkState } from './unit-of-work';

/**
 * No two-phase commit: data sources that committed before `failed` keep their work. The unit of
 * work logs it, since the client learns only that the request failed.
 */
export function partialCommitError(label: string, committed: string[], failed: string, cause: unknown): PartialCommitError {
  const names = committed.map((name) => `'${name}'`).join(', ');
  const reason = cause instanceof Error ? cause.message : String(cause);
  const message =
    `${label} committed on data source ${names}, then the COMMIT on data source '${failed}' ` +
    `failed (${reason}) and its work was rolled back. There is no two-phase commit across data sources: the work ` +
    `on ${names} stays committed. Make the work on the later data sources safe to repeat, or keep what must be ` +
    `atomic on one data source.`;
  return new PartialCommitError(message, committed, failed, { cause });
}

/**
 * Turns a database timeout into a `TransactionTimeoutError`, and the failure of a statement whose
 * connection ended under it into the lost-connection error; other errors pass unchanged.
 */
export function explainError(label: string, transactions: readonly DataSourceTransaction[], error: unknown): unknown {
  if (error instanceof TransactionalError) return error;
  for (const transaction of transactions) {
    if (transaction.loss.explains(error, transaction.entry.dialect)) return transaction.lostError();
  }
  for (const transaction of transactions) {
    if (transaction.entry.dialect.isTimeout(error)) {
      return new TransactionTimeoutError(
        `A statement of ${label} ran longer than timeoutMs (${transaction.spec.timeoutMs} ms), or its transaction ` +
          `sat idle that long, and the database stopped it; the transaction was rolled back. Make the work faster, ` +
          `move slow non-database work out of the transaction, or raise @Transactional({ timeoutMs }).`,
        { cause: error },
      );
    }
  }
  return error;
}

/** The error for `use` of a unit of work after it settled (or while it settles). */
export function finishedError(
  label: string,
  state: UnitOfWorkState,
  reason: string | undefined,
  use: string,
): TransactionFinishedError {
  const done = state === 'committed' ? 'committed' : state === 'rolledBack' ? 'rolled back' : 'ending';
  const why = reason ? ` (${reason})` : '';
  return new TransactionFinishedError(
    `The transaction of ${label} was already ${done}${why} when ${use} ran${atCallSite(captureStack())}. ` +
      `Work that outlives its request or unit of work cannot use its transaction; run it in its own ` +
      `TransactionRunner.run(), or await it before the handler returns.`,
  );
}
