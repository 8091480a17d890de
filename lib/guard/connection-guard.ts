import type { QueryRunner, Repository } from 'typeorm';
import { ACQUISITION_METHODS, acquiringDriver, relationLoaderOf } from '../compat/typeorm';
import type { DataSourceEntry, DataSourceRegistry } from '../core/data-source-registry';
import { currentUnitOfWork, isReported, runReported } from '../core/current-unit-of-work';
import { ownerOf } from '../core/query-runner-binding';
import { ConnectionAcquisitionError } from '../errors';
import { heldDuring, violation } from './hold-and-wait';

const GUARDED = Symbol('nestjs-request-transaction:guarded');

// Repository methods that never touch the pool themselves (a query builder is caught when it runs).
const NON_QUERYING = new Set(['constructor', 'create', 'merge', 'hasId', 'getId', 'createQueryBuilder', 'extend']);

/**
 * Guards a data source: its driver's connection acquisition, so every path that takes a second
 * pooled connection while a unit of work holds one (see `heldDuring()`) is caught before it touches
 * the pool, and the repositories `@nestjs/typeorm` injects, so their misuse is named precisely.
 * Acquisitions while the unit of work holds nothing go through untouched.
 */
export function installConnectionGuard(entry: DataSourceEntry, registry: DataSourceRegistry): void {
  // TypeORM has no public acquisition hook: its drivers' obtain*Connection() methods are replaced
  // (lib/compat/typeorm.ts; checked at bootstrap by checkCompatibility()).
  const driver = acquiringDriver(entry.dataSource);
  if (driver[GUARDED]) return;
  driver[GUARDED] = true;
  const acquireTimeoutMs = mysqlAcquireTimeout(entry);
  for (const method of ACQUISITION_METHODS) {
    const original = driver[method];
    const acquire =
      acquireTimeoutMs === undefined
        ? original
        : function timedAcquisition(this: unknown, ...args: unknown[]) {
            return withTimeout(original.apply(this, args) as Promise<MysqlPoolConnection>, acquireTimeoutMs, entry);
          };
    driver[method] = function guardedAcquisition(this: unknown, ...args: unknown[]) {
      const unitOfWork = currentUnitOfWork();
      if (unitOfWork !== undefined && unitOfWork.registry.has(entry) && !isReported()) {
        const holder = heldDuring(unitOfWork, entry.dataSource);
        const error = holder && violation(entry, registry, unitOfWork, holder, undefined);
        if (error) return Promise.reject(error);
      }
      return acquire.apply(this, args);
    };
  }
  guardLazyRelations(entry);
  for (const metadata of entry.dataSource.entityMetadatas) {
    guardRepository(entry, registry, entry.dataSource.getRepository(metadata.target));
    if (metadata.treeType) guardRepository(entry, registry, entry.dataSource.getTreeRepository(metadata.target));
  }
}

/**
 * TypeORM loads a lazy relation through the query runner that loaded the entity, and when that runner
 * was released it quietly takes a fresh pooled connection, in autocommit. For an entity loaded by a
 * unit of work that has ended, that is use after the end: refuse it.
 */
function guardLazyRelations(entry: DataSourceEntry): void {
  // No public hook for lazy-relation loading (lib/compat/typeorm.ts; checked at bootstrap).
  const loader = relationLoaderOf(entry.dataSource);
  // Called below with the loader's own `this`.
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const load = loader.load;
  loader.load = function guardedLoad(this: unknown, ...args: unknown[]) {
    const owner = ownerOf(args[2] as QueryRunner | undefined);
    // Thrown, not rejected: TypeORM's lazy getter chains .then() on the promise without a catch.
    if (owner !== undefined && owner.state !== 'open') throw owner.finishedError('a lazy relation');
    return load.apply(this, args);
  };
}

function guardRepository(entry: DataSourceEntry, registry: DataSourceRegistry, repository: Repository<object>): void {
  const target = repository as unknown as Record<string | symbol, unknown>;
  if (target[GUARDED]) return;
  target[GUARDED] = true;
  const entity = repository.metadata.name;
  const prototypeOf = (value: object): object | null => Object.getPrototypeOf(value) as object | null;
  for (let proto = prototypeOf(repository); proto && proto !== Object.prototype; proto = prototypeOf(proto)) {
    for (const method of Object.getOwnPropertyNames(proto)) {
      const original: unknown = Object.getOwnPropertyDescriptor(proto, method)?.value;
      if (typeof original !== 'function' || NON_QUERYING.has(method) || Object.hasOwn(target, method)) continue;
      const call = original as (this: unknown, ...args: unknown[]) => unknown;
      target[method] = function guardedRepositoryMethod(this: Repository<object>, ...args: unknown[]) {
        const unitOfWork = currentUnitOfWork();
        // tx.withRepository(repository) copies these own properties onto a repository bound to the unit
        // of work's manager: that one runs on the unit's connection.
        if (unitOfWork !== undefined && unitOfWork.registry.has(entry) && ownerOf(this?.manager?.queryRunner) !== unitOfWork) {
          const holder = heldDuring(unitOfWork, entry.dataSource);
          if (holder !== undefined) {
            const error = violation(entry, registry, unitOfWork, holder, { entity, method });
            if (error) return Promise.reject(error);
            // Reported once: the driver's acquisition below must not report it again.
            return runReported(unitOfWork, () => call.apply(this, args));
          }
        }
        return call.apply(this, args);
      };
    }
  }
}

interface MysqlPoolConnection {
  release(): void;
}

/**
 * mysql2 pools have no acquisition timeout: a starved request waits forever. Like node-postgres with
 * `connectTimeoutMS`, the data source's `connectTimeout`, when set, bounds the wait for a pooled connection too.
 */
function mysqlAcquireTimeout(entry: DataSourceEntry): number | undefined {
  if (entry.dialect.name !== 'mysql') return undefined;
  const timeout = (entry.dataSource.options as { connectTimeout?: number }).connectTimeout;
  return typeof timeout === 'number' && timeout > 0 ? timeout : undefined;
}

function withTimeout(
  acquisition: Promise<MysqlPoolConnection>,
  ms: number,
  entry: DataSourceEntry,
): Promise<MysqlPoolConnection> {
  return new Promise((resolve, reject) => {
    let late = false;
    const timer = setTimeout(() => {
      late = true;
      const pool = entry.dialect.poolStats(entry.dataSource);
      reject(
        new ConnectionAcquisitionError(
          `No connection of data source '${entry.name}' within connectTimeout (${ms} ms) (pool: ${pool.total} of ${pool.max} ` +
            `open, ${pool.idle} idle, ${pool.waiting} waiting). Either every connection stayed in use (find what holds ` +
            `them with TransactionHost.stats() and slowTransactionMs, or raise poolSize), or the database did not accept a new one in time.`,
        ),
      );
    }, ms);
    acquisition.then(
      (connection) => {
        clearTimeout(timer);
        // Granted after the caller gave up: hand it straight back to the pool.
        if (late) connection.release();
        else resolve(connection);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}
