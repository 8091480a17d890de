// The bootstrap check of TypeORM's and the drivers' private parts, on fakes shaped like TypeORM 0.3/1.1
// data sources over the real pg and mysql2 libraries (nothing connects): each shape taken away in
// turn must fail with a CompatibilityError naming exactly that shape.
import { PassThrough } from 'node:stream';
import * as mysql2 from 'mysql2';
import * as pg from 'pg';
import type { DataSource } from 'typeorm';
import { CompatibilityError, TransactionalError } from '../../lib';
import { checkCompatibility, compatibilityShapes } from '../../lib/compat/check-compatibility';
import { mysqlConnectionClosing, mysqlServerVersion } from '../../lib/compat/mysql2';
import { pgClientBroken } from '../../lib/compat/pg';
import { ConnectionAudit } from '../../lib/testing';

type Engine = 'postgres' | 'mysql';

/** Counts what would reach the pool: the check must take nothing from it. */
const pool = { acquisitions: 0 };

function acquire(): Promise<never> {
  pool.acquisitions += 1;
  return new Promise<never>(() => undefined);
}

class PostgresDriver {
  master: Record<string, unknown> = {
    totalCount: 1,
    idleCount: 1,
    waitingCount: 0,
    options: { max: 10 },
    connect: () => undefined,
  };
  postgres: unknown = pg;
  obtainMasterConnection = acquire;
  obtainSlaveConnection = acquire;
}

class MysqlDriver {
  pool: Record<string, unknown> = {
    _allConnections: queue([{ _handshakePacket: { serverVersion: '5.5.5-10.11.6-MariaDB' } }]),
    _freeConnections: queue([]),
    _connectionQueue: queue([]),
    config: { connectionLimit: 10 },
    getConnection: () => undefined,
  };
  mysql: unknown = mysql2;
  obtainMasterConnection = acquire;
  obtainSlaveConnection = acquire;
}

function queue(items: unknown[]) {
  return { length: items.length, get: (index: number) => items[index] };
}

/** TypeORM's query runners keep their driver connection in `databaseConnection`; `connect()` answers with it. */
class FakeQueryRunner {
  isTransactionActive = false;
  isReleased = false;
  transactionDepth = 0;
  broadcaster = { broadcast: () => Promise.resolve() };
  databaseConnection?: unknown;

  constructor(readonly driver: PostgresDriver | MysqlDriver) {}

  connect(): Promise<unknown> {
    if (this.databaseConnection) return Promise.resolve(this.databaseConnection);
    return this.driver.obtainMasterConnection();
  }
}

class PostgresQueryRunner extends FakeQueryRunner {
  releasePostgresConnection(): Promise<void> {
    return Promise.resolve();
  }
}

class MysqlQueryRunner extends FakeQueryRunner {}

interface Fake {
  dataSource: DataSource;
  driver: PostgresDriver & MysqlDriver;
  /** Applied to every query runner the data source creates. */
  alterRunner: (runner: Record<string, unknown>) => void;
}

function fakeDataSource(type: Engine): Fake {
  const driver = (type === 'postgres' ? new PostgresDriver() : new MysqlDriver()) as PostgresDriver & MysqlDriver;
  const fake: Fake = {
    driver,
    alterRunner: () => undefined,
    dataSource: undefined as unknown as DataSource,
  };
  fake.dataSource = {
    options: { type },
    driver,
    relationLoader: { load: () => Promise.resolve([]) },
    createQueryRunner: () => {
      const runner = type === 'postgres' ? new PostgresQueryRunner(driver) : new MysqlQueryRunner(driver);
      fake.alterRunner(runner as unknown as Record<string, unknown>);
      return runner;
    },
  } as unknown as DataSource;
  return fake;
}

/** The CompatibilityError `attempt` throws. */
function compatibilityErrorOf(attempt: () => unknown): CompatibilityError {
  try {
    attempt();
  } catch (error) {
    expect(error).toBeInstanceOf(CompatibilityError);
    expect(error).toBeInstanceOf(TransactionalError);
    expect((error as Error).name).toBe('CompatibilityError');
    return error as CompatibilityError;
  }
  throw new Error('expected a CompatibilityError, nothing was thrown');
}

/** One private part taken away, and the name the error must give it. */
interface Removal {
  shape: string;
  remove: (fake: Fake) => void;
  /** Every shape the error names, when the removal takes away more than `shape`. Default: `[shape]`. */
  named?: string[];
}

const typeormRemovals = (runner: string, driver: string): Removal[] => [
  {
    shape: `${driver}.obtainMasterConnection()`,
    remove: (f) => delete (f.driver as Partial<PostgresDriver>).obtainMasterConnection,
  },
  {
    shape: `${driver}.obtainSlaveConnection()`,
    remove: (f) => delete (f.driver as Partial<PostgresDriver>).obtainSlaveConnection,
  },
  {
    shape: 'DataSource.relationLoader.load(relation, entities, queryRunner)',
    remove: (f) => delete (f.dataSource as unknown as { relationLoader?: unknown }).relationLoader,
  },
  {
    shape: `${runner}.isTransactionActive, .transactionDepth, .isReleased, .broadcaster`,
    remove: (f) => (f.alterRunner = (r) => delete r.transactionDepth),
  },
  {
    shape: `${runner}.isTransactionActive, .transactionDepth, .isReleased, .broadcaster`,
    remove: (f) => (f.alterRunner = (r) => (r.broadcaster = {})),
  },
  {
    // A TypeORM that kept the connection under another name would take one from the pool on connect().
    shape: `${runner}.databaseConnection`,
    remove: (f) =>
      (f.alterRunner = (r) => {
        r.connect = function (this: FakeQueryRunner) {
          return this.driver.obtainMasterConnection();
        };
      }),
  },
];

const removals: Record<Engine, Removal[]> = {
  postgres: [
    ...typeormRemovals('PostgresQueryRunner', 'PostgresDriver'),
    {
      shape: 'PostgresQueryRunner.releasePostgresConnection()',
      remove: (f) => (f.alterRunner = (r) => (r.releasePostgresConnection = undefined)),
    },
    {
      shape: "PostgresDriver.master (pg-pool's Pool: totalCount, idleCount, waitingCount, options.max)",
      remove: (f) => delete f.driver.master.waitingCount,
    },
    {
      shape: "PostgresDriver.master (pg-pool's Pool: totalCount, idleCount, waitingCount, options.max)",
      remove: (f) => (f.driver.master = undefined as never),
    },
    {
      shape: 'pg Client._queryable, Client._ending',
      remove: (f) =>
        (f.driver.postgres = {
          ...pg,
          Client: class Client {
            queryable = true;
          },
        }),
    },
  ],
  mysql: [
    ...typeormRemovals('MysqlQueryRunner', 'MysqlDriver'),
    {
      shape: "MysqlDriver.mysql is mysql2 (its Connection and ConnectionConfig), not the older 'mysql' package",
      // The mysql package has no Connection class among its exports; its connections are built by createConnection().
      remove: (f) => (f.driver.mysql = { ...mysql2, Connection: undefined, ConnectionConfig: undefined }),
      named: [
        "MysqlDriver.mysql is mysql2 (its Connection and ConnectionConfig), not the older 'mysql' package",
        'mysql2 Connection._closing',
      ],
    },
    {
      shape: 'mysql2 Connection._closing',
      remove: (f) =>
        (f.driver.mysql = {
          ...mysql2,
          Connection: class Connection {
            _handshakePacket = null;
            destroy(): void {}
          },
        }),
    },
    {
      shape: 'mysql2 Connection._handshakePacket.serverVersion',
      remove: (f) => (f.driver.pool._allConnections = queue([{ _handshake: { serverVersion: '10.11.6-MariaDB' } }])),
    },
    {
      shape: 'mysql2 Pool._allConnections, ._freeConnections, ._connectionQueue, .config.connectionLimit',
      remove: (f) => delete f.driver.pool._connectionQueue,
    },
    {
      shape: 'mysql2 Pool._allConnections, ._freeConnections, ._connectionQueue, .config.connectionLimit',
      remove: (f) => (f.driver.pool.config = {}),
    },
  ],
};

beforeEach(() => {
  pool.acquisitions = 0;
});

describe.each(['postgres', 'mysql'] as const)('checkCompatibility() on %s', (type) => {
  it('passes when every shape is there, and takes no connection', () => {
    const { dataSource } = fakeDataSource(type);

    expect(() => checkCompatibility(dataSource, 'TransactionalModule.forRoot()')).not.toThrow();
    expect(pool.acquisitions).toBe(0);
  });

  it('checks every shape listed for it (each removal below names one of them)', () => {
    const names = new Set(compatibilityShapes(fakeDataSource(type).dataSource).map((shape) => shape.name));
    expect([...names].sort()).toEqual([...new Set(removals[type].map((removal) => removal.shape))].sort());
  });

  it.each(removals[type].map((removal, index) => [index, removal.shape, removal] as const))(
    'fails when a part is missing (#%i): %s',
    (_index, shape, { remove, named }) => {
      const fake = fakeDataSource(type);
      remove(fake);

      const error = compatibilityErrorOf(() => checkCompatibility(fake.dataSource, 'TransactionalModule.forRoot()'));

      expect(error.shapes).toEqual(named ?? [shape]);
      expect(error.message).toContain(`TransactionalModule.forRoot() cannot work with the installed `);
      expect(error.message).toContain(`- ${shape} (`);
      expect(error.message).toMatch(/written against (TypeORM 0\.3\.20 to 0\.3\.28 and 1\.1|pg 8\.16|mysql2 3\.15)/);
      expect(error.message).toMatch(/Install a version the library supports .* or report an issue/);
      // Taking no connection even then: a renamed field must not make the check use the pool.
      expect(pool.acquisitions).toBe(0);
    },
  );

  it('names every missing part in one error', () => {
    const fake = fakeDataSource(type);
    delete (fake.driver as Partial<PostgresDriver>).obtainMasterConnection;
    delete (fake.dataSource as unknown as { relationLoader?: unknown }).relationLoader;

    const error = compatibilityErrorOf(() => checkCompatibility(fake.dataSource, 'TransactionalModule.forRoot()'));

    expect(error.shapes).toEqual([
      `${type === 'postgres' ? 'PostgresDriver' : 'MysqlDriver'}.obtainMasterConnection()`,
      'DataSource.relationLoader.load(relation, entities, queryRunner)',
    ]);
  });
});

describe('ConnectionAudit.attach()', () => {
  it('fails with a CompatibilityError when TypeORM has no acquisition method to record', () => {
    const fake = fakeDataSource('postgres');
    delete (fake.driver as Partial<PostgresDriver>).obtainSlaveConnection;

    const error = compatibilityErrorOf(() => ConnectionAudit.attach(fake.dataSource));

    expect(error.shapes).toEqual(['PostgresDriver.obtainSlaveConnection()']);
    expect(error.message).toMatch(/^ConnectionAudit\.attach\(\) cannot work with the installed typeorm/);
    // Nothing was replaced: the driver is as it was.
    expect(fake.driver.obtainMasterConnection).toBe(acquire);
  });
});

describe('the accessors, on the real driver libraries', () => {
  it('pg: a client that ended is broken, a new one is not', async () => {
    const client = new pg.Client();
    expect(pgClientBroken(client)).toBe(false);
    await client.end();
    expect(pgClientBroken(client)).toBe(true);
  });

  it('mysql2: a destroyed connection is closing, and the server version is read from its greeting', () => {
    // Over a stream that goes nowhere: nothing connects.
    // mysql2's typings declare Connection as a type only; the library exports the class.
    const { Connection, ConnectionConfig } = mysql2 as unknown as {
      Connection: new (options: { config: unknown }) => { destroy(): void };
      ConnectionConfig: new (options: object) => unknown;
    };
    const connection = new Connection({ config: new ConnectionConfig({ stream: new PassThrough() }) });
    expect(mysqlConnectionClosing(connection)).toBe(false);
    expect(mysqlServerVersion(connection)).toBe('');
    connection.destroy();
    expect(mysqlConnectionClosing(connection)).toBe(true);
    expect(mysqlServerVersion({ _handshakePacket: { serverVersion: '5.5.5-10.11.6-MariaDB' } })).toBe('5.5.5-10.11.6-MariaDB');
  });
});
