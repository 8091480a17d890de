import type { EntityManager } from 'typeorm';
import { NoTransactionError } from '../errors';
import { atCallSite, captureStack } from './call-site';
import { DEFAULT_DATA_SOURCE } from './data-source-registry';
import { SavepointScope } from './savepoint-scope';
import { UnitOfWork } from './unit-of-work';
import { unitOfWorkStorage } from './unit-of-work-storage';

/** A call the guard already reported in 'warn' mode, going through: the driver must not report it again. */
class ReportedCall {
  constructor(readonly unitOfWork: UnitOfWork) {}
}

/** The unit of work the caller runs in, if any (settled ones included). */
export function currentUnitOfWork(): UnitOfWork | undefined {
  const store = unitOfWorkStorage.getStore();
  if (store instanceof UnitOfWork) return store;
  return store instanceof SavepointScope || store instanceof ReportedCall ? (store.unitOfWork as UnitOfWork) : undefined;
}

/** Runs `fn` as a call the guard already reported. */
export function runReported<T>(unitOfWork: UnitOfWork, fn: () => T): T {
  return unitOfWorkStorage.run(new ReportedCall(unitOfWork), fn);
}

/** Whether the caller runs inside `runReported()`. */
export function isReported(): boolean {
  return unitOfWorkStorage.getStore() instanceof ReportedCall;
}

/**
 * The current unit of work's manager for a data source, or the error that explains why there is none.
 * `use` names the caller in messages: `@Tx()`, `Repository<Account>.save()`.
 */
export function requireManager(dataSource: string | undefined, use: string): EntityManager {
  const unitOfWork = currentUnitOfWork();
  if (unitOfWork === undefined) {
    throw new NoTransactionError(
      `${use} was used outside a unit of work${atCallSite(captureStack())}. It needs the transaction of a request handled by ` +
        `TransactionalModule (not a @NoTransaction() route), or of TransactionRunner.run(). ` +
        `Put @Transactional() on the method, wrap the work in TransactionRunner.run(), or use a plain repository where no transaction is wanted.`,
    );
  }
  return unitOfWork.manager(dataSource ?? DEFAULT_DATA_SOURCE, use);
}
