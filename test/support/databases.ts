import type { TypeOrmModuleOptions } from '@nestjs/typeorm';
import type { DataSourceOptions } from 'typeorm';
import { envValue, mysqlUrl, postgresUrl, redactUrl } from './database-urls';

export { mysqlUrl, postgresUrl } from './database-urls';

/** The two databases the suites run on. */
export type EngineName = 'postgres' | 'mariadb';

/** One database of this run, as listed in {@link engines}. */
export interface Engine<N extends EngineName = EngineName> {
  name: N;
  /** TypeORM `type`. */
  type: N;
  url: string;
}

/** An engine or just its name. */
export type EngineRef<N extends EngineName = EngineName> = N | Engine<N>;

/** Whether the global setup found MariaDB (`MYSQL_AVAILABLE=1`). Always true on CI, where its absence fails the run. */
export function mysqlAvailable(): boolean {
  return process.env.MYSQL_AVAILABLE === '1';
}

/**
 * Whether this run leaves MariaDB out on purpose: `TEST_ENGINES=postgres`, set by the PgBouncer run
 * (`jest.pgbouncer.config.ts`), which repeats the PostgreSQL side of the suites through PgBouncer.
 */
export function postgresOnlyRun(): boolean {
  return envValue('TEST_ENGINES') === 'postgres';
}

/**
 * Whether this is the PgBouncer run, where the app's data sources connect through PgBouncer in
 * transaction pooling: a client connection's next transaction may run on any server backend.
 */
export function throughPgBouncer(): boolean {
  return envValue('DATABASE_DIRECT_URL') !== undefined;
}

/** A `describe` that registers nothing: MariaDB blocks of a PostgreSQL-only run are not part of it. */
const notInThisRun = Object.assign(() => undefined, {
  each: () => () => undefined,
  only: () => undefined,
  skip: () => undefined,
}) as unknown as jest.Describe;

/**
 * `describe` for MariaDB-only suites: skipped, with the reason printed by the global setup, when
 * MariaDB is not available; absent from a PostgreSQL-only run ({@link postgresOnlyRun}).
 *
 * @example
 * describeMysql('on MariaDB', () => { it('…', async () => { … }); });
 */
export const describeMysql: jest.Describe = postgresOnlyRun() ? notInThisRun : mysqlAvailable() ? describe : describe.skip;

/** PostgreSQL of this run (the machine's, `DATABASE_URL`'s or an embedded one). */
export const postgresEngine: Engine<'postgres'> = { name: 'postgres', type: 'postgres', url: postgresUrl() };

/** MariaDB of this run; check {@link mysqlAvailable} (or use {@link describeMysql}) before connecting. */
export const mariadbEngine: Engine<'mariadb'> = { name: 'mariadb', type: 'mariadb', url: mysqlUrl() };

/**
 * The databases a suite runs on: PostgreSQL, and MariaDB when it is available.
 *
 * @example
 * describe.each(engines)('on $name', (engine) => {
 *   beforeAll(() => createApp({ adapter: 'express', imports: [TypeOrmModule.forRoot(typeormOptions(engine, …))] }));
 * });
 */
export const engines: readonly Engine[] =
  mysqlAvailable() && !postgresOnlyRun() ? [postgresEngine, mariadbEngine] : [postgresEngine];

if (!mysqlAvailable() && !postgresOnlyRun()) {
  // Once per test file that imports this module: a skipped database should be hard to miss.
  console.warn(
    `MariaDB is not available at ${redactUrl(mysqlUrl())}: suites over \`engines\` run on PostgreSQL only ` +
      'and `describeMysql` suites are SKIPPED (see the global setup output for why).',
  );
}

/** Resolves an engine name to the engine of this run. */
export function engineOf<N extends EngineName>(engine: EngineRef<N>): Engine<N> {
  if (typeof engine !== 'string') return engine;
  return (engine === 'postgres' ? postgresEngine : mariadbEngine) as Engine<N>;
}

/** Options of {@link typeormOptions}. */
export interface TestTypeormOptions {
  /** Pool size: the tests of this library mostly use 1, to make a second connection deadlock. */
  poolSize: number;
  /**
   * Tags the connections: PostgreSQL `application_name` (count them with `observer().backends()`),
   * MariaDB connect attribute `program_name`.
   */
  applicationName: string;
  /** Nest data source name, for suites with several data sources. */
  name?: string;
  entities: NonNullable<DataSourceOptions['entities']>;
  /** A TypeORM logger, e.g. one that records the SQL to assert its order. */
  logger?: DataSourceOptions['logger'];
  /** Driver pool options, merged over the ones set here. */
  extra?: Record<string, unknown>;
  /**
   * Longest wait for a pooled connection (PostgreSQL `connectTimeoutMS`, MariaDB `connectTimeout`,
   * which the library applies to acquisition). Default: {@link ACQUIRE_TIMEOUT_MS}. Suites that queue
   * many requests on a small pool on purpose pass {@link QUEUED_ACQUIRE_TIMEOUT_MS}.
   */
  acquireTimeoutMs?: number;
}

/**
 * Default acquisition timeout of a test data source. It bounds two waits that no test measures: for a
 * pooled connection, and (node-postgres) for a new connection to be set up. A pool exhausted by a bug
 * (a second connection inside a transaction, the guard off) fails after it instead of hanging the test,
 * within Jest's 30 s. It is far above what either wait takes on an idle machine (milliseconds), because
 * on a busy one both grow a hundredfold: with the machine's cores taken by other work, setting up a
 * PostgreSQL connection took over 2 s, and a request behind 60 others on a pool of 4 waited over 2 s.
 * A test of the timeout itself passes a short one.
 */
export const ACQUIRE_TIMEOUT_MS = 20_000;

/**
 * Acquisition timeout for suites that queue hundreds of requests on a pool of one or two connections
 * on purpose: the last one waits for every unit of work before it, which takes tens of seconds when
 * the machine is busy (200 requests on a pool of 1 on MariaDB took over 20 s with the cores taken by
 * other work). The wait is not what these suites test, so it gets all the time a slow machine needs;
 * give their tests a Jest timeout above it.
 */
export const QUEUED_ACQUIRE_TIMEOUT_MS = 120_000;

/**
 * TypeORM options for a test data source on `engine`; usable with `TypeOrmModule.forRoot()` and
 * `new DataSource()`. Creates the tables of `entities` (`synchronize`), never drops anything: the suites
 * share their tables (the entities of `entities.ts`, one meaning per table), and each empties the ones it
 * uses before its tests (see `suite.ts`).
 */
export function typeormOptions(engine: EngineRef, options: TestTypeormOptions): TypeOrmModuleOptions & DataSourceOptions {
  const { url, name: type } = engineOf(engine);
  const common = {
    url,
    poolSize: options.poolSize,
    entities: options.entities,
    logger: options.logger,
    synchronize: true,
    dropSchema: false,
  } as const;
  // Nest's default is 10 retries 3 s apart: a broken test setup would take half a minute to fail.
  const nest = { name: options.name, retryAttempts: 0 };

  if (type === 'postgres') {
    return {
      ...nest,
      ...common,
      type,
      // pg-pool's connectionTimeoutMillis: both the setup of a new connection and the wait for a free
      // pooled one, so an exhausted pool fails instead of hanging the test.
      connectTimeoutMS: options.acquireTimeoutMs ?? ACQUIRE_TIMEOUT_MS,
      applicationName: options.applicationName,
      extra: options.extra,
    };
  }
  return {
    ...nest,
    ...common,
    type,
    // mysql2 pools have no acquisition timeout (TypeORM's `acquireTimeout` is a mysqljs option that
    // mysql2 3.x ignores with a warning): a request waiting for a free connection waits forever.
    connectTimeout: options.acquireTimeoutMs ?? ACQUIRE_TIMEOUT_MS,
    extra: { connectAttributes: { program_name: options.applicationName }, ...options.extra },
  };
}
