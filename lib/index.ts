export { TransactionalModule } from './transactional.module';
export type {
  GuardMode,
  IsolationLevel,
  RetryOptions,
  TransactionOptions,
  TransactionalModuleExtras,
  TransactionalModuleOptions,
} from './transactional.options';
export { TransactionInterceptor } from './interceptor/transaction.interceptor';
export { apolloUnitOfWorkPlugin } from './graphql/apollo-plugin';
export type { ApolloUnitOfWorkPlugin } from './graphql/apollo-plugin';
export { mercuriusUnitOfWorkHooks } from './graphql/mercurius-hooks';
export type { MercuriusUnitOfWorkHooks } from './graphql/mercurius-hooks';
export { Tx } from './decorators/tx.decorator';
export { NoTransaction, Transactional } from './decorators/transactional.decorator';
export type { TransactionalMethodOptions } from './decorators/transactional-method';
export { InjectTxRepository, getTxRepositoryToken } from './repository/tx-repository';
export { TransactionHost, TransactionRunner } from './core/transaction-runner';
export type { Propagation, RunOptions, UnitOfWorkInfo } from './core/transaction-runner';
export type { DataSourceStats, DurationSummary, TransactionalStats } from './core/stats';
export type { RouteHoldStats } from './core/route-hold-times';
export type { PoolStats } from './core/dialect';
export {
  CompatibilityError,
  ConnectionAcquisitionError,
  NestedConnectionError,
  NoTransactionError,
  OpenStreamError,
  PartialCommitError,
  TransactionAbortedError,
  TransactionalError,
  TransactionalOptionsError,
  TransactionFinishedError,
  TransactionTimeoutError,
} from './errors';
export { lockInOrder } from './locking/lock-in-order';
export type { LockId, LockInOrderOptions } from './locking/lock-in-order';
