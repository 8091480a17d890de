import { sendStatements } from './control-statements';
import type { DataSourceTransaction } from './data-source-transaction';
import { callOriginal } from './query-runner-binding';
import { openStreamError, type RowStreams } from './row-streams';
import { refusedCommitError } from './transaction-abort';

// How a data-source transaction ends, once BEGIN went through and no statement is in flight: COMMIT
// or ROLLBACK, then its connection released to the pool; or, when the connection's state is unknown
// (a stream left open, the connection lost, a failed ROLLBACK), discarded.

/** Ends the transaction on `connection`. Rejects only when a commit failed (or was refused). */
export async function endTransaction(
  transaction: DataSourceTransaction,
  connection: unknown,
  commit: boolean,
  streams: RowStreams | undefined,
): Promise<void> {
  const label = transaction.unitOfWork.label;
  if (streams?.open === true) {
    // The connection is busy with a stream nobody may read to its end: destroy it, the database rolls back.
    const error = openStreamError(label, commit ? 'COMMIT' : 'ROLLBACK');
    const destroying = streams.destroyAll(error);
    const { loss } = transaction;
    if (loss.lost === undefined) await Promise.race([destroying, loss.whenLost()]);
    loss.stopWaiting();
    await discard(transaction, error);
    if (commit) throw error;
    return;
  }
  if (transaction.loss.lost !== undefined) {
    // The server already ended the session, and with it the transaction.
    await discard(transaction, transaction.loss.lost);
    if (commit) throw transaction.lostError();
    return;
  }
  // The database aborted the transaction: it can only roll back, and the unit of work fails.
  const refused = commit && transaction.abort.current !== undefined ? transaction.abort.error('COMMIT', label) : undefined;
  if (refused !== undefined) commit = false;
  try {
    await sendEnd(transaction, connection, commit);
    transaction.committed = commit;
  } catch (error) {
    if (transaction.loss.lost !== undefined) {
      // The server ended the session under the COMMIT or ROLLBACK (or while subscribers ran before it).
      await discard(transaction, transaction.loss.lost);
      if (commit) throw transaction.lostError();
      return;
    }
    if (!commit) {
      await discard(transaction, error);
      if (refused !== undefined) throw refused;
      return;
    }
    // A failed COMMIT (a deferred constraint, say): make sure nothing stays open, then report it.
    try {
      await sendEnd(transaction, connection, false);
    } catch (rollbackError) {
      await discard(transaction, rollbackError);
      throw error;
    }
    await release(transaction, connection);
    throw error;
  }
  await release(transaction, connection);
  if (refused !== undefined) throw refused;
}

/** COMMIT or ROLLBACK; savepoints left open end with it. In a test's transaction, its savepoint. */
async function sendEnd(transaction: DataSourceTransaction, connection: unknown, commit: boolean): Promise<void> {
  const runner = transaction.queryRunner;
  const depth = transaction.ownDepth;
  const sql =
    depth === 1 ? (commit ? 'COMMIT' : 'ROLLBACK') : commit ? 'RELEASE SAVEPOINT typeorm_1' : 'ROLLBACK TO SAVEPOINT typeorm_1';
  const before = transaction.broadcast(commit ? 'BeforeTransactionCommit' : 'BeforeTransactionRollback');
  if (before !== undefined) await before;
  // Lost while the subscribers ran: the transaction is gone, there is nothing to send it to.
  // eslint-disable-next-line @typescript-eslint/only-throw-error -- the driver's own error, whatever it emitted
  if (transaction.loss.lost !== undefined) throw transaction.loss.lost;
  transaction.endSent = commit ? 'COMMIT' : 'ROLLBACK';
  const answer = await sendStatements(transaction.entry, runner, connection, [sql]);
  if (commit && depth === 1 && transaction.entry.dialect.commitRefused(answer)) {
    throw refusedCommitError(transaction.unitOfWork.label);
  }
  runner.isTransactionActive = false;
  runner.transactionDepth = depth - 1;
  const after = transaction.broadcast(commit ? 'AfterTransactionCommit' : 'AfterTransactionRollback');
  if (after !== undefined) await after;
}

/** Undoes session state the BEGIN set (MySQL timeouts), then releases the connection to the pool. */
function release(transaction: DataSourceTransaction, connection: unknown): Promise<unknown> {
  const reset = transaction.entry.dialect.endStatements(connection, transaction.spec);
  if (reset.length === 0) return callOriginal(transaction.queryRunner, 'release', []);
  return resetAndRelease(transaction, connection, reset);
}

async function resetAndRelease(transaction: DataSourceTransaction, connection: unknown, reset: string[]): Promise<void> {
  try {
    await sendStatements(transaction.entry, transaction.queryRunner, connection, reset);
  } catch (error) {
    return discard(transaction, error);
  }
  await callOriginal(transaction.queryRunner, 'release', []);
}

/** Gives the connection up without returning it to the pool: its state is unknown. */
export async function discard(transaction: DataSourceTransaction, cause: unknown): Promise<void> {
  const runner = transaction.queryRunner;
  if (runner.databaseConnection === undefined) {
    await callOriginal(runner, 'release', []);
    return;
  }
  await transaction.entry.dialect.destroy(runner, cause);
}
