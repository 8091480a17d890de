import type { EntityManager, QueryRunner } from 'typeorm';
import type { RunnerInternals } from '../compat/typeorm';
import type { DataSourceTransaction } from './data-source-transaction';
import { manualSavepoint, runInSavepoint } from './savepoints';
import type { UnitOfWork } from './unit-of-work';

/** On each library-made QueryRunner and its manager: the data-source transaction they belong to. */
const TRANSACTION = Symbol('nestjs-request-transaction:transaction');

// TypeORM's query runner fields the unit of work keeps in step (lib/compat/typeorm.ts; checked at bootstrap).
/** A QueryRunner the library made for a data-source transaction. */
export type BoundRunner = RunnerInternals & { [TRANSACTION]: DataSourceTransaction };
type BoundManager = EntityManager & { [TRANSACTION]: DataSourceTransaction };
type Method = (...args: unknown[]) => Promise<unknown>;

/** On the prototypes `patch()` makes: the prototype they stand in front of. */
const BASE = Symbol('nestjs-request-transaction:base');
type PatchedPrototype = Record<string | symbol, unknown> & { [BASE]: Record<string, Method> };

/** The unit of work a query runner belongs to, when the library made it. */
export function ownerOf(queryRunner: QueryRunner | undefined): UnitOfWork | undefined {
  return (queryRunner as Partial<BoundRunner> | undefined)?.[TRANSACTION]?.unitOfWork;
}

/**
 * A QueryRunner of `transaction`'s data source whose methods go through `transaction`. TypeORM sees a
 * transaction from the start (so save() opens no transaction of its own and tx.transaction() makes
 * savepoints) at `depth`; the BEGIN itself goes out with the first query.
 */
export function bindQueryRunner(transaction: DataSourceTransaction, depth: number): BoundRunner {
  const runner = transaction.entry.dataSource.createQueryRunner('master') as BoundRunner;
  runner[TRANSACTION] = transaction;
  runner.isTransactionActive = true;
  runner.transactionDepth = depth;
  patch(runner, runnerMethods);
  const manager = runner.manager as BoundManager;
  manager[TRANSACTION] = transaction;
  patch(manager, managerMethods);
  return runner;
}

/** The own implementation of `name` of the class the library patched `target` from, called on `target`. */
export function callOriginal(target: object, name: string, args: unknown[]): Promise<unknown> {
  return (Object.getPrototypeOf(target) as PatchedPrototype)[BASE][name].apply(target, args);
}

/** By original prototype (a driver's QueryRunner class, EntityManager), the patched one in front of it. */
const patchedPrototypes = new WeakMap<object, WeakMap<object, object>>();

/**
 * Gives `target` the methods of `methods` in place of its class's: its prototype becomes one made once
 * per class (and set of methods), inheriting from the class's, so a request copies no methods onto
 * its objects and every patched object of a class keeps one shape.
 */
function patch(target: object, methods: object): void {
  const base = Object.getPrototypeOf(target) as object;
  let byMethods = patchedPrototypes.get(base);
  if (byMethods === undefined) patchedPrototypes.set(base, (byMethods = new WeakMap()));
  let prototype = byMethods.get(methods);
  if (prototype === undefined) {
    const descriptors = Object.getOwnPropertyDescriptors(methods);
    for (const descriptor of Object.values(descriptors)) descriptor.enumerable = false;
    prototype = Object.create(base, descriptors) as PatchedPrototype;
    Object.defineProperty(prototype, BASE, { value: base });
    byMethods.set(methods, prototype);
  }
  Object.setPrototypeOf(target, prototype);
}

/**
 * The methods every library-made QueryRunner (and its manager) gets instead of its own: shared
 * functions that find their transaction through `this`, so a request allocates no closures for them.
 * Each checks the transaction first and fails as a rejected promise, like the call it replaces.
 */
const runnerMethods = {
  connect(this: BoundRunner) {
    return this[TRANSACTION].open();
  },
  query(this: BoundRunner, ...args: unknown[]) {
    return this[TRANSACTION].run(this, 'query', args);
  },
  stream(this: BoundRunner, ...args: unknown[]) {
    return this[TRANSACTION].run(this, 'stream', args);
  },
  startTransaction(this: BoundRunner) {
    return manualSavepoint(this[TRANSACTION], 'startTransaction');
  },
  commitTransaction(this: BoundRunner) {
    return manualSavepoint(this[TRANSACTION], 'commitTransaction');
  },
  rollbackTransaction(this: BoundRunner) {
    return manualSavepoint(this[TRANSACTION], 'rollbackTransaction');
  },
  /** TypeORM's pool shutdown releases every runner in use: settle the unit of work, which releases the connection. */
  async release(this: BoundRunner) {
    await this[TRANSACTION].unitOfWork.settle(false, 'its query runner was released').catch(() => undefined);
  },
};

/** TypeORM checks its own "released" flag in these two before they reach `query`. */
const managerMethods = {
  query(this: BoundManager, ...args: unknown[]) {
    const problem = this[TRANSACTION].unusable();
    return problem === undefined ? callOriginal(this, 'query', args) : Promise.reject(problem);
  },
  transaction(this: BoundManager, ...args: unknown[]) {
    const problem = this[TRANSACTION].unusable('tx.transaction()');
    return problem === undefined ? runInSavepoint(this[TRANSACTION], args) : Promise.reject(problem);
  },
};
