import { QueryFailedError } from 'typeorm';
import { brokenConnectionError } from './connection-loss';
import type { DataSourceEntry } from './data-source-registry';
import type { DataSourceTransaction } from './data-source-transaction';
import type { BoundRunner } from './query-runner-binding';

/**
 * Sends statements on the raw driver connection, logged through TypeORM's logger: BEGIN, COMMIT,
 * ROLLBACK and savepoint statements bypass the query runner, so no state check, no event and no extra
 * promise stands in the way.
 */
export function sendStatements(
  entry: DataSourceEntry,
  runner: BoundRunner | undefined,
  connection: unknown,
  statements: string[],
): Promise<unknown> {
  if (statements.length === 1) return sendStatement(entry, runner, connection, statements[0]);
  return sendEach(entry, runner, connection, statements);
}

async function sendEach(
  entry: DataSourceEntry,
  runner: BoundRunner | undefined,
  connection: unknown,
  statements: string[],
): Promise<void> {
  for (const sql of statements) await sendStatement(entry, runner, connection, sql);
}

/** One statement, logged; its failure as TypeORM's `QueryFailedError`. */
export function sendStatement(
  entry: DataSourceEntry,
  runner: BoundRunner | undefined,
  connection: unknown,
  sql: string,
): Promise<unknown> {
  const { dialect, dataSource } = entry;
  dataSource.logger.logQuery(sql, undefined, runner);
  return dialect.send(connection, sql).then(undefined, (error: unknown) => {
    dataSource.logger.logQueryError(error as Error, sql, undefined, runner);
    throw new QueryFailedError(sql, undefined, error as Error);
  });
}

/**
 * BEGIN (with the dialect's session settings) on the connection `transaction` just took, between the
 * subscribers' transaction-start events. In a test's transaction, TypeORM's own savepoint for depth 1
 * instead: the one its end releases.
 */
export async function sendBegin(transaction: DataSourceTransaction, connection: unknown): Promise<void> {
  const { entry, spec, statements } = transaction;
  const begin = transaction.ownDepth === 1 ? entry.dialect.beginStatements(connection, spec) : ['SAVEPOINT typeorm_1'];
  const before = transaction.broadcast('BeforeTransactionStart');
  if (before !== undefined) await before;
  const sent = statements.timed ? performance.now() : 0;
  try {
    await sendStatements(entry, transaction.queryRunner, connection, begin);
  } catch (error) {
    // Broken between the pool and here (a restart): the pool could not know, and nothing was sent.
    if (entry.dialect.isBroken(connection)) throw brokenConnectionError(transaction.unitOfWork.label, error);
    throw error;
  }
  if (statements.timed) statements.addBusy(performance.now() - sent);
  transaction.began = true;
  const after = transaction.broadcast('AfterTransactionStart');
  if (after !== undefined) await after;
}
