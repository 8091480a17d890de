/**
 * The setup block of a database suite, written once: an observer opened before the first test and closed
 * after the last, an app started likewise, the suite's tables emptied before its tests and after each one,
 * and the leak check after each test.
 *
 * @example
 * describe.each(engines)('items on $name', (engine) => {
 *   const db = suiteObserver(engine);
 *   const suite = suiteApp(db, {
 *     applicationName: `items-${engine.name}`,
 *     tables: [Item],
 *     app: () => ({ adapter: 'express', imports: [...], controllers: [ItemsController] }),
 *   });
 *
 *   it('writes', async () => {
 *     await postJson(`${suite.url}/items`, { label: 'a' });
 *     expect(await db.query('SELECT label FROM items')).toEqual([{ label: 'a' }]);
 *   });
 * });
 */
import type { INestApplication } from '@nestjs/common';
import { getDataSourceToken } from '@nestjs/typeorm';
import type { DataSource } from 'typeorm';
import { createApp, type CreateAppOptions, type TestApp } from './app';
import { engineOf, type EngineName, type EngineRef } from './databases';
import { tableOf } from './entities';
import { expectNothingLeaked, type LeakCheckOptions } from './leaks';
import { type AnyObserver, type MariadbObserver, observer, type ObserverOf, type PostgresObserver } from './observer';

/**
 * An observer of `engine` for the tests of the calling `describe`: opened in its `beforeAll`, closed in its
 * `afterAll`. Jest runs the hooks of a `describe` in the order they were registered: usable from the
 * `beforeAll` hooks registered after this call on, and in no `afterAll` (it closes in the first one).
 */
export function suiteObserver<E extends EngineName>(engine: EngineRef<E>): ObserverOf<E> {
  let opened: AnyObserver | undefined;
  beforeAll(async () => {
    opened = await observer(engine);
  });
  afterAll(async () => {
    await opened?.close();
    opened = undefined;
  });
  const current = <T extends AnyObserver>(): T => {
    if (opened === undefined) throw new Error('suiteObserver(): the observer is open from beforeAll to afterAll of its describe');
    return opened as T;
  };
  const common = {
    query: <T>(sql: string, params?: unknown[]) => current().query<T>(sql, params),
    close: async () => undefined,
  };
  if (engineOf(engine).name === 'postgres') {
    const postgres: PostgresObserver = {
      engine: 'postgres',
      ...common,
      backends: (applicationName) => current<PostgresObserver>().backends(applicationName),
      idleInTransactionCount: (applicationName) => current<PostgresObserver>().idleInTransactionCount(applicationName),
    };
    return postgres as ObserverOf<E>;
  }
  const mariadb: MariadbObserver = {
    engine: 'mariadb',
    ...common,
    processlist: (filter) => current<MariadbObserver>().processlist(filter),
    inTransactionCount: (filter) => current<MariadbObserver>().inTransactionCount(filter),
  };
  return mariadb as ObserverOf<E>;
}

/** Options of {@link suiteApp}. */
export interface SuiteAppOptions {
  /** The app, built in `beforeAll` (a function, so that it may read what earlier hooks set). */
  app: () => CreateAppOptions;
  /** The app's `application_name`, for the leak check. */
  applicationName: string;
  /** Entities whose tables are emptied once the app has synchronized them, and after each test: children before parents. */
  tables?: Array<abstract new (...args: never[]) => unknown>;
  /** Nest name of the data source the leak check and `dataSource` look at. Default: the default one. */
  dataSourceName?: string;
  /** The leak check after each test; `false` for suites that check something else (a killed connection). */
  leakCheck?: LeakCheckOptions | false;
}

/** The app of a suite, started in `beforeAll` and closed in `afterAll`. */
export interface SuiteApp {
  readonly app: INestApplication;
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** The data source of {@link SuiteAppOptions.dataSourceName}. */
  readonly dataSource: DataSource;
  /** A provider of the app. */
  get<T>(token: string | symbol | (abstract new (...args: never[]) => T)): T;
  /** Empties the suite's tables now (the suite does it before its tests and after each one). */
  emptyTables(): Promise<void>;
}

/** Starts the app of `options` for the tests of the calling `describe`; see the file's example. */
export function suiteApp(db: AnyObserver, options: SuiteAppOptions): SuiteApp {
  let started: TestApp | undefined;
  const current = (): TestApp => {
    if (started === undefined) throw new Error('suiteApp(): the app runs from beforeAll to afterAll of its describe');
    return started;
  };
  const dataSource = () => current().app.get<DataSource>(getDataSourceToken(options.dataSourceName));
  const emptyTables = async () => {
    for (const entity of options.tables ?? []) await db.query(`DELETE FROM ${tableOf(entity)}`);
  };

  beforeAll(async () => {
    started = await createApp(options.app());
    await emptyTables();
  });
  // Not emptied after a failed leak check: a DELETE would wait for the row locks of the leaked transaction.
  afterEach(async () => {
    if (options.leakCheck !== false) {
      await expectNothingLeaked({ dataSource: dataSource(), db, applicationName: options.applicationName }, options.leakCheck);
    }
    await emptyTables();
  });
  afterAll(async () => {
    await started?.close();
    started = undefined;
  });

  return {
    get app() {
      return current().app;
    },
    get url() {
      return current().url;
    },
    get dataSource() {
      return dataSource();
    },
    get: <T>(token: string | symbol | (abstract new (...args: never[]) => T)) => current().app.get<T>(token),
    emptyTables,
  };
}
