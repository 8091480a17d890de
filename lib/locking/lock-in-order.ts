import type { EntityManager, EntityTarget, ObjectLiteral } from 'typeorm';
import { ownerOf } from '../core/query-runner-binding';
import { describeValue, TransactionalError } from '../errors';

/** A primary key value `lockInOrder` can sort. */
export type LockId = number | string | bigint;

/** Options of `lockInOrder()`. */
export interface LockInOrderOptions {
  /** `'update'`: `FOR UPDATE` (writers and lockers wait). `'share'`: `FOR SHARE` (only writers wait). Default: `'update'`. */
  mode?: 'update' | 'share';
}

function compare(a: LockId, b: LockId): number {
  // Strings with strings; numbers and bigints with each other, by value (checkIds() refuses a mix of both).
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The ids must be an array of strings, or of finite numbers and bigints: anything else would lock
 * the wrong rows or none. Strings and numbers sort differently ('10' before '9'), so one call mixing
 * them could lock in another order than a call given the same ids as numbers.
 */
function checkIds(ids: unknown, use: string): asserts ids is readonly LockId[] {
  if (!Array.isArray(ids)) {
    throw new TransactionalError(
      `${use}: ids must be an array of primary key values, got ${describeValue(ids)}. ` +
        `Pass [id] for one row, or [...ids] for another collection.`,
    );
  }
  let firstString: number | undefined;
  let firstNumber: number | undefined;
  // An index loop, not forEach: a hole in a sparse array is an undefined id too.
  for (let index = 0; index < ids.length; index++) {
    const id: unknown = ids[index];
    const ok = typeof id === 'string' || typeof id === 'bigint' || (typeof id === 'number' && Number.isFinite(id));
    if (!ok) {
      throw new TransactionalError(
        `${use}: ids[${index}] is ${describeValue(id)}; each id must be a primary key value: a string, a finite ` +
          `number or a bigint. Nothing was locked.`,
      );
    }
    if (typeof id === 'number' && Math.abs(id) > Number.MAX_SAFE_INTEGER) {
      throw new TransactionalError(
        `${use}: ids[${index}] is ${id}, beyond Number.MAX_SAFE_INTEGER, where a number no longer names one integer ` +
          `exactly and could lock another row. Pass it as a string or a bigint. Nothing was locked.`,
      );
    }
    if (typeof id === 'string') firstString ??= index;
    else firstNumber ??= index;
  }
  if (firstString !== undefined && firstNumber !== undefined) {
    throw new TransactionalError(
      `${use}: ids mix strings (ids[${firstString}] is ${describeValue(ids[firstString])}) and numbers ` +
        `(ids[${firstNumber}] is ${describeValue(ids[firstNumber])}). They sort differently ('10' before '9'), so ` +
        `two transactions could lock the same rows in opposite orders and deadlock. Convert them to the primary ` +
        `key's type first (Number(id) or String(id)).`,
    );
  }
}

function checkOptions(options: unknown, use: string): asserts options is LockInOrderOptions {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new TransactionalError(`${use}: options must be an object such as { mode: 'share' }, got ${describeValue(options)}.`);
  }
  for (const key of Object.keys(options)) {
    if (key !== 'mode') throw new TransactionalError(`${use}: unknown option '${key}'. Known options: mode.`);
  }
}

/**
 * Locks the rows of `entity` with these primary keys in one deterministic order (ascending), one
 * `SELECT … FOR UPDATE` at a time, and returns them by id. Two transactions that lock the same rows
 * through it can never wait on each other in a cycle: transfers A→B and B→A do not deadlock.
 * Ids without a row are absent from the result. `ids` must be an array of strings, or of finite numbers
 * and bigints (one kind per call, so the order is the same for every caller); anything else is
 * rejected with a `TransactionalError` before anything is sent.
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
  if (typeof (tx as Partial<EntityManager> | null)?.connection?.getMetadata !== 'function') {
    throw new TransactionalError(
      `lockInOrder() takes an EntityManager first, got ${describeValue(tx)}. Pass the manager from @Tx(), ` +
        `TransactionHost.manager() or TransactionRunner.run().`,
    );
  }
  const metadata = tx.connection.getMetadata(entity);
  const use = `lockInOrder(${metadata.name})`;
  checkIds(ids, use);
  checkOptions(options, use);
  const owner = ownerOf(tx.queryRunner);
  if (owner !== undefined && owner.state !== 'open') throw owner.finishedError(use);
  if (tx.queryRunner === undefined || !tx.queryRunner.isTransactionActive) {
    throw new TransactionalError(
      `${use} was given a manager outside a transaction: its locks would end with each ` +
        `statement. Pass the manager from @Tx(), TransactionHost.manager() or TransactionRunner.run().`,
    );
  }
  if (metadata.primaryColumns.length !== 1) {
    throw new TransactionalError(
      `${use}: the entity has ${metadata.primaryColumns.length} primary columns; it locks by a single primary key.`,
    );
  }
  const mode = options.mode ?? 'update';
  if (mode !== 'update' && mode !== 'share') {
    throw new TransactionalError(`${use}: mode must be 'update' or 'share', got ${describeValue(mode)}.`);
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
