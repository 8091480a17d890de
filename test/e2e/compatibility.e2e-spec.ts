import { type INestApplicationContext, type ModuleMetadata } from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { CompatibilityError, TransactionalError, TransactionalModule } from '../../lib';
import { rollbackPerTest } from '../../lib/testing';
import { type Engine, engines, typeormOptions } from '../support/databases';
import { Item } from '../support/entities';
import { poolStats } from '../support/leaks';
import { waitFor } from '../support/observer';
import { RecordingNestLogger } from '../support/recording-loggers';
import { suiteObserver } from '../support/suite';

const applicationName = 'compatibility-e2e';

/** A change to an initialised data source, and how to undo it (before the data source is destroyed). */
type Alteration = (dataSource: DataSource) => () => void;

/** Gives `target[key]` the value `value` as an own property; the undo deletes it again. */
function shadow(target: object, key: string, value: unknown): () => void {
  const own = Object.getOwnPropertyDescriptor(target, key);
  Object.defineProperty(target, key, { value, configurable: true, writable: true });
  return () => {
    if (own) Object.defineProperty(target, key, own);
    else delete (target as Record<string, unknown>)[key];
  };
}

/** Data sources of the current test with their undos: a failed bootstrap never closes them itself. */
const created: Array<{ dataSource: DataSource; undo: () => void }> = [];

/** The data source of these tests, created through a factory that applies `alter` once it is initialised. */
function typeorm(engine: Engine, alter?: Alteration) {
  return TypeOrmModule.forRootAsync({
    useFactory: () => typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item] }),
    dataSourceFactory: async (options) => {
      const dataSource = await new DataSource(options as DataSourceOptions).initialize();
      created.push({ dataSource, undo: alter?.(dataSource) ?? (() => undefined) });
      return dataSource;
    },
  });
}

/** Compiles and initialises an application context with the modules `imports` returns. */
async function bootstrap(imports: ModuleMetadata['imports']): Promise<TestingModule> {
  const moduleRef = await Test.createTestingModule({ imports }).setLogger(new RecordingNestLogger()).compile();
  try {
    await moduleRef.init();
  } catch (error) {
    await moduleRef.close().catch(() => undefined);
    throw error;
  }
  return moduleRef;
}

/** The CompatibilityError `attempt` rejects with. */
async function compatibilityErrorOf(attempt: Promise<unknown>): Promise<CompatibilityError> {
  const error = await attempt.then(
    () => undefined,
    (rejection: unknown) => rejection,
  );
  expect(error).toBeInstanceOf(CompatibilityError);
  expect(error).toBeInstanceOf(TransactionalError);
  expect((error as Error).name).toBe('CompatibilityError');
  return error as CompatibilityError;
}

describe.each(engines)('private parts of TypeORM and the driver, checked at bootstrap, on $name', (engine) => {
  const driverClass = engine.name === 'postgres' ? 'PostgresDriver' : 'MysqlDriver';
  // Only PostgreSQL tells the connections of an application_name apart.
  const db = engine.name === 'postgres' ? suiteObserver('postgres') : undefined;
  let app: INestApplicationContext | undefined;

  afterEach(async () => {
    await app?.close();
    app = undefined;
    for (const { dataSource, undo } of created.splice(0)) {
      undo();
      if (dataSource.isInitialized) await dataSource.destroy();
    }
    // Nothing of a failed bootstrap stays connected.
    if (db) await waitFor(async () => expect(await db.backends(applicationName)).toEqual([]), { timeoutMs: 5000 });
  });

  it('boots when every part is there, without taking a connection to check them', async () => {
    let acquisitions = 0;
    const countAcquisitions: Alteration = (dataSource) => {
      const driver = dataSource.driver as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
      const original = driver.obtainMasterConnection;
      return shadow(driver, 'obtainMasterConnection', function counted(this: unknown, ...args: unknown[]) {
        acquisitions += 1;
        return original.apply(this, args);
      });
    };

    app = await bootstrap([typeorm(engine, countAcquisitions), TransactionalModule.forRoot()]);

    expect(acquisitions).toBe(0);
    const dataSource = created[0].dataSource;
    // TypeORM's initialisation left one connection in the pool; the check took none and left it idle.
    expect(poolStats(dataSource)).toMatchObject({ total: 1, idle: 1, waiting: 0 });
  });

  it("fails with a CompatibilityError when TypeORM's driver has no obtainMasterConnection()", async () => {
    const error = await compatibilityErrorOf(
      bootstrap([typeorm(engine, (ds) => shadow(ds.driver, 'obtainMasterConnection', undefined)), TransactionalModule.forRoot()]),
    );

    expect(error.shapes).toEqual([`${driverClass}.obtainMasterConnection()`]);
    expect(error.message).toMatch(
      new RegExp(
        `^TransactionalModule\\.forRoot\\(\\) cannot work with the installed typeorm: .*\\n- ${driverClass}\\.obtainMasterConnection\\(\\) ` +
          `\\(typeorm; written against TypeORM 0\\.3\\.20 to 0\\.3\\.28 and 1\\.1, installed: \\d+\\.\\d+\\.\\d+\\): the connection guard sees every pooled connection`,
      ),
    );
    expect(error.message).toMatch(
      /Install a version the library supports \(see the README's supported stack\), or report an issue/,
    );
  });

  it('fails with a CompatibilityError when the data source has no relationLoader, naming the forRootAsync() call', async () => {
    const error = await compatibilityErrorOf(
      bootstrap([
        typeorm(engine, (ds) => shadow(ds, 'relationLoader', undefined)),
        TransactionalModule.forRootAsync({ useFactory: () => ({}) }),
      ]),
    );

    expect(error.shapes).toEqual(['DataSource.relationLoader.load(relation, entities, queryRunner)']);
    expect(error.message).toMatch(/^TransactionalModule\.forRootAsync\(\) cannot work with the installed typeorm/);
  });

  it('fails with a CompatibilityError when a private part of the driver library is missing', async () => {
    const alter: Alteration =
      engine.name === 'postgres'
        ? (ds) => {
            const driver = ds.driver as unknown as { postgres: object };
            return shadow(driver, 'postgres', { ...driver.postgres, Client: class Client {} });
          }
        : (ds) => shadow((ds.driver as unknown as { pool: object }).pool, '_connectionQueue', undefined);

    const error = await compatibilityErrorOf(bootstrap([typeorm(engine, alter), TransactionalModule.forRoot()]));

    const shape =
      engine.name === 'postgres'
        ? 'pg Client._queryable, Client._ending'
        : 'mysql2 Pool._allConnections, ._freeConnections, ._connectionQueue, .config.connectionLimit';
    expect(error.shapes).toEqual([shape]);
    expect(error.message).toContain(
      engine.name === 'postgres'
        ? 'cannot work with the installed pg: the library reaches a part of it that has no public interface'
        : 'cannot work with the installed mysql2: the library reaches a part of it that has no public interface',
    );
    expect(error.message).toMatch(engine.name === 'postgres' ? /written against pg 8\.16/ : /written against mysql2 3\.15/);
  });

  it("rollbackPerTest() fails with a CompatibilityError when the pool's acquisition cannot be replaced, and holds nothing", async () => {
    app = await bootstrap([typeorm(engine), TransactionalModule.forRoot()]);
    const dataSource = created[0].dataSource;
    const driver = dataSource.driver as unknown as { master?: object; pool?: object };
    const pool = (engine.name === 'postgres' ? driver.master : driver.pool) as object;
    const method = engine.name === 'postgres' ? 'connect' : 'getConnection';
    const undo = shadow(pool, method, undefined);
    try {
      const error = await compatibilityErrorOf(rollbackPerTest(app).begin());

      expect(error.shapes).toEqual([`${driverClass}.${engine.name === 'postgres' ? 'master' : 'pool'}.${method}()`]);
      expect(error.message).toMatch(/^rollbackPerTest\(\) cannot work with the installed typeorm/);
    } finally {
      undo();
    }
    expect(poolStats(dataSource)).toMatchObject({ total: 1, idle: 1, waiting: 0 });
  });
});
