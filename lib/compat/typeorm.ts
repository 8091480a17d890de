// TypeORM's parts without a public interface that the library reaches, written against TypeORM
// 0.3.20 to 0.3.28 and 1.1. TypeORM offers no hook for connection acquisition, none for lazy-relation
// loading, and keeps a query runner's transaction state in fields that only it writes.
// TODO: use a public interface if TypeORM exposes one. Every shape here is checked at bootstrap by
// `checkCompatibility()`; the code that uses them then reaches them directly.
import type { DataSource, QueryRunner } from 'typeorm';
import { type Shape, TYPEORM_VERSIONS } from './shape';

/**
 * The driver methods through which TypeORM takes every pooled connection (PostgresDriver and
 * MysqlDriver; the slave one in replication). Typed `public` in TypeORM's declarations, undocumented.
 */
export const ACQUISITION_METHODS = ['obtainMasterConnection', 'obtainSlaveConnection'] as const;
/** One of {@link ACQUISITION_METHODS}. */
export type AcquisitionMethod = (typeof ACQUISITION_METHODS)[number];
/** An acquisition: pg resolves with `[client, release]`, mysql2 with the pool connection. */
export type Acquire = (this: unknown, ...args: unknown[]) => Promise<unknown>;
/** A TypeORM driver as the guard and the connection audit replace its acquisition methods. */
export type AcquiringDriver = Record<AcquisitionMethod, Acquire> & Record<symbol, unknown>;

/** The driver of `dataSource`, with its acquisition methods. */
export function acquiringDriver(dataSource: DataSource): AcquiringDriver {
  return dataSource.driver as unknown as AcquiringDriver;
}

/**
 * `DataSource.relationLoader` (typed `readonly`, undocumented): loads a lazy relation,
 * `load(relation, entityOrEntities, queryRunner?, queryBuilder?)`; the query runner is the third argument.
 */
export interface RelationLoader {
  load(this: unknown, ...args: unknown[]): unknown;
}

/** The lazy-relation loader of `dataSource`. */
export function relationLoaderOf(dataSource: DataSource): RelationLoader {
  return (dataSource as unknown as { relationLoader: RelationLoader }).relationLoader;
}

/**
 * A query runner's state that TypeORM keeps in fields (`transactionDepth` and `databaseConnection` are
 * `protected`): the unit of work, which sends BEGIN and SAVEPOINT itself, keeps them in step.
 */
export type RunnerInternals = QueryRunner & {
  isTransactionActive: boolean;
  transactionDepth: number;
  isReleased: boolean;
  /** The driver connection while the runner holds one. */
  databaseConnection?: unknown;
  broadcaster?: { broadcast(event: string): Promise<void> };
};

/** `queryRunner`, typed with the fields of {@link RunnerInternals}. */
export function runnerInternals(queryRunner: QueryRunner): RunnerInternals {
  return queryRunner as RunnerInternals;
}

/**
 * PostgresQueryRunner's `private releasePostgresConnection(err)`: hands the client back to pg-pool
 * with an error, so the pool destroys it instead of reusing it.
 */
export function releasePostgresConnection(queryRunner: QueryRunner, error: Error): Promise<void> {
  return (queryRunner as unknown as { releasePostgresConnection(err: Error): Promise<void> }).releasePostgresConnection(error);
}

function shape(name: string, use: string, present: () => boolean): Shape {
  return { package: 'typeorm', writtenFor: TYPEORM_VERSIONS, name, use, present };
}

/** The acquisition methods, for the guard (`checkCompatibility()`) and `ConnectionAudit`. */
export function acquisitionShapes(dataSource: DataSource, use: string): Shape[] {
  const driver = dataSource.driver.constructor.name;
  return ACQUISITION_METHODS.map((method) =>
    shape(`${driver}.${method}()`, use, () => typeof acquiringDriver(dataSource)[method] === 'function'),
  );
}

/** Everything of TypeORM the library's core and guard reach on `dataSource`. */
export function typeormShapes(dataSource: DataSource): Shape[] {
  const runner = () => runnerInternals(dataSource.createQueryRunner('master'));
  const runnerClass = dataSource.driver.constructor.name.replace(/Driver$/, 'QueryRunner');
  const shapes = [
    ...acquisitionShapes(
      dataSource,
      'the connection guard sees every pooled connection TypeORM takes through it, and refuses a second one while a unit of work holds one.',
    ),
    shape(
      'DataSource.relationLoader.load(relation, entities, queryRunner)',
      'a lazy relation of an entity loaded by a unit of work that has ended is refused there, instead of being loaded on a fresh connection in autocommit.',
      () => typeof relationLoaderOf(dataSource)?.load === 'function',
    ),
    shape(
      `${runnerClass}.isTransactionActive, .transactionDepth, .isReleased, .broadcaster`,
      "the unit of work sends BEGIN and SAVEPOINT itself and keeps TypeORM's transaction state and transaction events in step.",
      () => {
        const r = runner();
        return (
          typeof r.isTransactionActive === 'boolean' &&
          typeof r.transactionDepth === 'number' &&
          typeof r.isReleased === 'boolean' &&
          typeof r.broadcaster?.broadcast === 'function'
        );
      },
    ),
    shape(
      `${runnerClass}.databaseConnection`,
      'a connection whose state is unknown (a failed COMMIT, a failed reset) is destroyed instead of going back to the pool.',
      () => holdsConnectionIn(runner()),
    ),
  ];
  if (dataSource.options.type === 'postgres') {
    shapes.push(
      shape(
        'PostgresQueryRunner.releasePostgresConnection()',
        'a connection left in an unknown state is handed back to pg-pool with an error, so the pool destroys it instead of reusing it.',
        () => typeof (runner() as unknown as Record<string, unknown>).releasePostgresConnection === 'function',
      ),
    );
  }
  return shapes;
}

/**
 * Whether the runner keeps its driver connection in `databaseConnection`: with that field set,
 * TypeORM's `connect()` answers with it and asks the pool for nothing. This runner's own driver
 * stands in front of the real one and records an acquisition instead of reaching the pool, so the
 * check takes no connection and sends nothing. The runner is never released: it never connected.
 */
function holdsConnectionIn(runner: RunnerInternals): boolean {
  let acquired = false;
  const recordAcquisition = (): Promise<never> => {
    acquired = true;
    return new Promise<never>(() => undefined);
  };
  const driver = (runner as unknown as { driver: object }).driver;
  Object.defineProperty(runner, 'driver', {
    value: Object.create(driver, {
      obtainMasterConnection: { value: recordAcquisition },
      obtainSlaveConnection: { value: recordAcquisition },
    }) as object,
  });
  runner.databaseConnection = {};
  void runner.connect().catch(() => undefined);
  return !acquired;
}
