import type { EntityManager } from 'typeorm';
import { TransactionalError } from '../errors';
import { SavepointScope } from './savepoint-scope';
import type { Savepoint, SourceTransaction } from './transaction-context';
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
export async function runInSavepoint<T>(source: SourceTransaction, args: unknown[]): Promise<T> {
  const fn = (typeof args[0] === 'function' ? args[0] : args[1]) as Work<T> | undefined;
  if (typeof fn !== 'function') {
    throw new TransactionalError(
      `tx.transaction() needs a callback: tx.transaction(async (tx) => { … }). Inside a unit of work it runs the ` +
        `callback in a savepoint; an isolation level given before it does not apply to a savepoint.`,
    );
  }
  const store = unitOfWorkStorage.getStore();
  const enclosing = store instanceof SavepointScope && store.ctx === source.ctx ? (store as Savepoint).innermostOpen() : undefined;
  const parent = enclosing?.on(source) ?? source.turns.root;

  await source.broadcast('BeforeTransactionStart');
  const savepoint = await source.exclusive(parent, USE, false, async (connection) => {
    const depth = await source.openSavepoint(connection);
    const opened: Savepoint = new SavepointScope(source.ctx, source, enclosing, parent, depth);
    source.turns.enter(opened);
    return opened;
  });
  await source.broadcast('AfterTransactionStart');

  let result: T | undefined;
  let failed = false;
  let failure: unknown;
  try {
    result = await unitOfWorkStorage.run(savepoint, fn, source.manager);
  } catch (error) {
    failed = true;
    failure = error;
  }
  if (!failed && source.abortedWithin(savepoint.depth)) {
    failed = true;
    failure = source.abortedError(USE);
  }
  try {
    await source.broadcast(failed ? 'BeforeTransactionRollback' : 'BeforeTransactionCommit');
    await source.exclusive(savepoint, USE, true, (connection) => end(source, savepoint, connection, !failed));
    await source.broadcast(failed ? 'AfterTransactionRollback' : 'AfterTransactionCommit');
  } catch (error) {
    if (!failed) {
      failed = true;
      failure = error;
    }
  } finally {
    // Not closed when the unit of work ended under it: nothing was sent, nothing is left to send.
    close(source, savepoint);
  }
  source.ctx.closeScope(savepoint, !failed);
  if (failed) throw failure;
  return result as T;
}

/** RELEASE, or ROLLBACK TO when `keep` is false or the RELEASE failed; the level around it goes on. */
async function end(source: SourceTransaction, savepoint: Savepoint, connection: unknown, keep: boolean): Promise<void> {
  try {
    await source.closeSavepoint(connection, savepoint.depth, keep);
  } catch (error) {
    if (keep) await source.closeSavepoint(connection, savepoint.depth, false).catch(() => undefined);
    throw error;
  } finally {
    close(source, savepoint);
  }
}

function close(source: SourceTransaction, savepoint: Savepoint): void {
  if (savepoint.closed) return;
  savepoint.closed = true;
  source.turns.enter(savepoint.parent);
}
