import type { EntityManager, EntityTarget, ObjectLiteral } from 'typeorm';
import { ownerOf } from '../core/transaction-context';
import { TransactionalError } from '../errors';

/** A primary key value `lockInOrder` can sort. */
export type LockId = number | string | bigint;

/** Options of `lockInOrder()`. */
export interface LockInOrderOptions {
  /** `'update'`: `FOR UPDATE` (writers and lockers wait). `'share'`: `FOR SHARE` (only writers wait). Default: `'update'`. */
  mode?: 'update' | 'share';
}

function compare(a: LockId, b: LockId): number {
  if (typeof a === typeof b) return a < b ? -1 : a > b ? 1 : 0;
  // Mixed types: order by type name, then value, so the order is still the same for everyone.
  return typeof a < typeof b ? -1 : 1;
}

/**
 * Locks the rows of `entity` with these primary keys in one deterministic order (ascending), one
 * `SELECT … FOR UPDATE` at a time, and returns them by id. Two transactions that lock the same rows
 * through it can never wait on each other in a cycle: transfers A→B and B→A do not deadlock.
 * Ids without a row are absent from the result.
 * @example
 * const accounts = await lockInOrder(tx, Account, [dto.from, dto.to]);
 * const from = accounts.get(dto.from);
 */
export async function lockInOrder<T extends ObjectLiteral>(
  tx: EntityManager,
  entity: EntityTarget<T>,
  ids: readonly LockId[],
  options: LockInOrderOptions = {},
): Promise<Map<LockId, T>> {
  const metadata = tx.connection.getMetadata(entity);
  const owner = ownerOf(tx.queryRunner);
  if (owner !== undefined && owner.state !== 'open') throw owner.finishedError(`lockInOrder(${metadata.name})`);
  if (tx.queryRunner === undefined || !tx.queryRunner.isTransactionActive) {
    throw new TransactionalError(
      `lockInOrder(${metadata.name}) was given a manager outside a transaction: its locks would end with each ` +
        `statement. Pass the manager from @Tx(), TransactionHost.manager() or TransactionRunner.run().`,
    );
  }
  if (metadata.primaryColumns.length !== 1) {
    throw new TransactionalError(
      `lockInOrder(${metadata.name}): the entity has ${metadata.primaryColumns.length} primary columns; it locks by a single primary key.`,
    );
  }
  const mode = options.mode ?? 'update';
  if (mode !== 'update' && mode !== 'share') {
    throw new TransactionalError(`lockInOrder(${metadata.name}): mode must be 'update' or 'share', got '${String(mode)}'.`);
  }
  const key = metadata.primaryColumns[0].propertyPath;
  const sorted = [...new Set(ids)].sort(compare);
  const rows = new Map<LockId, T>();
  // One statement per row, in order: a single IN (…) query may lock in whatever order its plan scans.
  for (const id of sorted) {
    const row = await tx
      .createQueryBuilder(entity, 'locked')
      .setLock(mode === 'update' ? 'pessimistic_write' : 'pessimistic_read')
      .where(`locked.${key} = :id`, { id })
      .getOne();
    if (row !== null) rows.set(id, row);
  }
  return rows;
}
