import type { EntityManager } from 'typeorm';
import { TransactionalError } from '../errors';
import { sendStatement } from './control-statements';
import type { DataSourceTransaction } from './data-source-transaction';
import { levelOfCaller, SavepointScope } from './savepoint-scope';
import type { Savepoint } from './unit-of-work';
import { unitOfWorkStorage } from './unit-of-work-storage';

const USE = 'tx.transaction()';
type Work<T> = (tx: EntityManager) => T | Promise<T>;

/**
 * `tx.transaction(fn)` on a unit of work's manager (and `run(fn, { propagation: 'nested' })`): `fn`
 * runs in a SAVEPOINT on the unit's one connection. Savepoints started together run one after
 * another, in call order, and a statement of the level around an open savepoint waits until it ends:
 * ROLLBACK TO SAVEPOINT then undoes exactly that savepoint's work. The savepoint is kept when `fn`
 * resolves, and rolled back when `fn` throws or when the database aborted it (a failed statement on
 * PostgreSQL, even one `fn` caught; `tx.transaction()` then rejects with `TransactionAbortedError`).
 * Hooks registered in it join the scope around it when it is kept, and are dropped when it is not.
 */
export async function runInSavepoint<T>(transaction: DataSourceTransaction, args: unknown[]): Promise<T> {
  const fn = (typeof args[0] === 'function' ? args[0] : args[1]) as Work<T> | undefined;
  if (typeof fn !== 'function') {
    throw new TransactionalError(
      `tx.transaction() needs a callback: tx.transaction(async (tx) => { … }). Inside a unit of work it runs the ` +
        `callback in a savepoint; an isolation level given before it does not apply to a savepoint.`,
    );
  }
  const { unitOfWork } = transaction;
  const store = unitOfWorkStorage.getStore();
  const enclosing =
    store instanceof SavepointScope && store.unitOfWork === unitOfWork ? (store as Savepoint).innermostOpen() : undefined;
  const parent = enclosing?.on(transaction) ?? transaction.turns.root;

  await transaction.broadcast('BeforeTransactionStart');
  const savepoint = await transaction.exclusive(parent, USE, false, async (connection) => {
    const depth = await openSavepoint(transaction, connection);
    const opened: Savepoint = new SavepointScope(unitOfWork, transaction, enclosing, parent, depth);
    transaction.turns.enter(opened);
    return opened;
  });
  await transaction.broadcast('AfterTransactionStart');

  let result: T | undefined;
  let failed = false;
  let failure: unknown;
  try {
    result = await unitOfWorkStorage.run(savepoint, fn, transaction.manager);
  } catch (error) {
    failed = true;
    failure = error;
  }
  if (!failed && transaction.abort.within(savepoint.depth)) {
    failed = true;
    failure = transaction.abort.error(USE, unitOfWork.label);
  }
  try {
    await transaction.broadcast(failed ? 'BeforeTransactionRollback' : 'BeforeTransactionCommit');
    await transaction.exclusive(savepoint, USE, true, (connection) => endOrUndo(transaction, savepoint, connection, !failed));
    await transaction.broadcast(failed ? 'AfterTransactionRollback' : 'AfterTransactionCommit');
  } catch (error) {
    if (!failed) {
      failed = true;
      failure = error;
    }
  } finally {
    // Not left yet when the unit of work settled under it: nothing was sent, nothing is left to send.
    leave(transaction, savepoint);
  }
  unitOfWork.savepointEnded(savepoint, !failed);
  if (failed) throw failure;
  return result as T;
}

/** RELEASE, or ROLLBACK TO when `keep` is false or the RELEASE failed; the level around it goes on. */
async function endOrUndo(
  transaction: DataSourceTransaction,
  savepoint: Savepoint,
  connection: unknown,
  keep: boolean,
): Promise<void> {
  try {
    await endSavepoint(transaction, connection, savepoint.depth, keep);
  } catch (error) {
    if (keep) await endSavepoint(transaction, connection, savepoint.depth, false).catch(() => undefined);
    throw error;
  } finally {
    leave(transaction, savepoint);
  }
}

/** The savepoint ended: the level around it takes the connection's turns again. */
function leave(transaction: DataSourceTransaction, savepoint: Savepoint): void {
  if (savepoint.ended) return;
  savepoint.ended = true;
  transaction.turns.enter(savepoint.parent);
}

/** SAVEPOINT at TypeORM's next depth, which goes up by one; returns the depth it was opened at. */
async function openSavepoint(transaction: DataSourceTransaction, connection: unknown): Promise<number> {
  const runner = transaction.queryRunner;
  const depth = runner.transactionDepth;
  await sendStatement(transaction.entry, transaction.queryRunner, connection, `SAVEPOINT typeorm_${depth}`);
  runner.transactionDepth = depth + 1;
  return depth;
}

/**
 * Ends the savepoint opened at `depth` and any opened in it: RELEASE (refused when it is aborted),
 * or ROLLBACK TO, which clears its abort. Nothing is sent once the server ended the transaction.
 */
async function endSavepoint(
  transaction: DataSourceTransaction,
  connection: unknown,
  depth: number,
  keep: boolean,
): Promise<void> {
  const runner = transaction.queryRunner;
  if (keep) {
    if (transaction.abort.within(depth)) throw transaction.abort.error('RELEASE SAVEPOINT', transaction.unitOfWork.label);
    await sendStatement(transaction.entry, transaction.queryRunner, connection, `RELEASE SAVEPOINT typeorm_${depth}`);
  } else if (!transaction.abort.ended) {
    try {
      await sendStatement(transaction.entry, transaction.queryRunner, connection, `ROLLBACK TO SAVEPOINT typeorm_${depth}`);
    } catch (error) {
      transaction.abort.undoFailed(error);
      throw error;
    }
    transaction.abort.rolledBackTo(depth);
  }
  runner.transactionDepth = depth;
}

type ManualMethod = 'startTransaction' | 'commitTransaction' | 'rollbackTransaction';
const EVENTS = {
  startTransaction: 'TransactionStart',
  commitTransaction: 'TransactionCommit',
  rollbackTransaction: 'TransactionRollback',
};

/** `startTransaction()`, `commitTransaction()`, `rollbackTransaction()` of the runner, called by application code: savepoints. */
export async function manualSavepoint(transaction: DataSourceTransaction, method: ManualMethod): Promise<void> {
  if (method !== 'startTransaction') assertSavepoint(transaction, method);
  const event = EVENTS[method];
  await transaction.broadcast(`Before${event}`);
  const depth = transaction.queryRunner.transactionDepth - 1;
  const level = levelOfCaller(transaction, transaction.turns.root);
  // A ROLLBACK TO still goes to an aborted savepoint: it is what clears the abort.
  await transaction.exclusive(level, `queryRunner.${method}()`, method === 'rollbackTransaction', async (connection) => {
    if (method === 'startTransaction') await openSavepoint(transaction, connection);
    else await endSavepoint(transaction, connection, depth, method === 'commitTransaction');
  });
  await transaction.broadcast(`After${event}`);
}

/** Application code may end savepoints it opened, never the unit of work's own transaction. */
function assertSavepoint(transaction: DataSourceTransaction, method: string): void {
  if (transaction.queryRunner.transactionDepth > transaction.ownDepth) return;
  throw new TransactionalError(
    `${method}() was called on the query runner of ${transaction.unitOfWork.label}. The library commits or rolls back ` +
      `the unit of work when it ends; throw to roll back, or use tx.transaction() for a savepoint.`,
  );
}
