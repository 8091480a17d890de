// mysql2 parts the library reaches, written against mysql2 3.15, through TypeORM's MysqlDriver
// (`driver.pool`, `driver.mysql`; TypeORM 0.3.20 to 0.3.28 and 1.1). mysql2 has no public pool
// counters, no public "is this connection closed", and no public server version: the pool's queues,
// a connection's `_closing` and `_handshakePacket` are private (TypeORM 1.1's `driver.version` drops
// the "-MariaDB" suffix, so it cannot tell MariaDB from MySQL).
// TODO: use a public interface if mysql2 exposes one. Checked at bootstrap by `checkCompatibility()`.
import { PassThrough } from 'node:stream';
import type { DataSource } from 'typeorm';
import { MYSQL2_VERSIONS, type Shape, TYPEORM_VERSIONS } from './shape';

/** mysql2's pool queues (denque instances). */
interface Mysql2Queue {
  readonly length: number;
  get(index: number): unknown;
}

/** What the library reads or replaces on mysql2's `Pool`. */
export interface Mysql2Pool {
  readonly _allConnections: Mysql2Queue;
  readonly _freeConnections: Mysql2Queue;
  /** Callers waiting for a connection. */
  readonly _connectionQueue: Mysql2Queue;
  readonly config: { readonly connectionLimit: number };
  getConnection(callback: (err: unknown, connection?: unknown) => void): void;
}

/** `MysqlDriver.pool`: the data source's pool; undefined with replication (TypeORM uses a pool cluster then). */
export function mysqlPoolOf(dataSource: DataSource): Mysql2Pool | undefined {
  return (dataSource.driver as unknown as { pool?: Mysql2Pool }).pool;
}

/** A mysql2 connection as the library uses it. */
export interface Mysql2Connection {
  query(sql: string, callback: (err: unknown, result?: unknown) => void): void;
  /** Public: closes the connection; a pool connection leaves its pool. */
  destroy(): void;
  /** Set once mysql2 closes the connection; it refuses commands from then on. */
  _closing?: boolean;
  /** The server's greeting, null until it arrived. */
  _handshakePacket?: { serverVersion?: string } | null;
}

/** mysql2 closed the connection (it refuses further commands: "Can't add new command when connection is in closed state"). */
export function mysqlConnectionClosing(connection: unknown): boolean {
  return (connection as Mysql2Connection)._closing === true;
}

/** The version the server announced when the connection opened, e.g. `5.5.5-10.11.6-MariaDB-…`; '' if unknown. */
export function mysqlServerVersion(connection: unknown): string {
  return (connection as Mysql2Connection)._handshakePacket?.serverVersion ?? '';
}

interface Mysql2Library {
  Connection: new (options: { config: unknown }) => Mysql2Connection;
  ConnectionConfig: new (options: object) => unknown;
}

/**
 * A connection of the driver's own mysql2 library over a stream that goes nowhere: constructing it
 * connects nothing (the stream stands in for the socket), and nothing is written before the server's
 * greeting, which never comes.
 */
function unconnected(dataSource: DataSource): Mysql2Connection {
  const mysql = (dataSource.driver as unknown as { mysql: Mysql2Library }).mysql;
  return new mysql.Connection({ config: new mysql.ConnectionConfig({ stream: new PassThrough() }) });
}

/** Everything of mysql2 the library reaches on `dataSource`. */
export function mysql2Shapes(dataSource: DataSource): Shape[] {
  const shapes: Shape[] = [
    {
      package: 'mysql2',
      writtenFor: `${MYSQL2_VERSIONS}, reached as MysqlDriver.mysql (${TYPEORM_VERSIONS})`,
      name: "MysqlDriver.mysql is mysql2 (its Connection and ConnectionConfig), not the older 'mysql' package",
      use: "every mysql2 part below belongs to mysql2; TypeORM 0.3 loads the 'mysql' package first when it is installed (set connectorPackage: 'mysql2').",
      present: () => {
        const mysql = (dataSource.driver as unknown as { mysql?: Partial<Mysql2Library> }).mysql;
        return typeof mysql?.Connection === 'function' && typeof mysql.ConnectionConfig === 'function';
      },
    },
    {
      package: 'mysql2',
      writtenFor: MYSQL2_VERSIONS,
      name: 'mysql2 Connection._closing',
      use: 'a connection that broke between the pool and BEGIN fails with a clear error and is discarded.',
      present: () => {
        const connection = unconnected(dataSource);
        connection.destroy();
        return connection._closing === true;
      },
    },
    {
      package: 'mysql2',
      writtenFor: MYSQL2_VERSIONS,
      name: 'mysql2 Connection._handshakePacket.serverVersion',
      use: "timeoutMs sets MariaDB's max_statement_time, or MySQL's max_execution_time, by the server's version.",
      present: () => {
        // TypeORM's initialisation left a connection in the pool (it read the server's version): its greeting
        // must carry the version. With replication there is no single pool; the field must exist at least.
        const all = mysqlPoolOf(dataSource)?._allConnections;
        const live = (typeof all?.get === 'function' ? all.get(0) : undefined) as Mysql2Connection | undefined;
        if (live === undefined) return '_handshakePacket' in unconnected(dataSource);
        return typeof live._handshakePacket?.serverVersion === 'string';
      },
    },
  ];
  // With replication TypeORM uses a pool cluster: no single pool, and the counters read 0.
  if ((dataSource.options as { replication?: unknown }).replication === undefined) {
    shapes.push({
      package: 'mysql2',
      writtenFor: `${MYSQL2_VERSIONS}, reached as MysqlDriver.pool (${TYPEORM_VERSIONS})`,
      name: 'mysql2 Pool._allConnections, ._freeConnections, ._connectionQueue, .config.connectionLimit',
      use: "TransactionHost.stats(), the metrics and the messages report the pool's counters.",
      present: () => {
        const pool = mysqlPoolOf(dataSource);
        return (
          pool !== undefined &&
          [pool._allConnections, pool._freeConnections, pool._connectionQueue].every(
            (queue) => typeof queue?.length === 'number' && typeof queue.get === 'function',
          ) &&
          typeof pool.config?.connectionLimit === 'number'
        );
      },
    });
  }
  return shapes;
}

/** For the testing kit's rollback-per-test, which hands one connection to every `pool.getConnection()`. */
export function mysqlPoolGetConnectionShape(dataSource: DataSource): Shape {
  return {
    package: 'typeorm',
    writtenFor: TYPEORM_VERSIONS,
    name: 'MysqlDriver.pool.getConnection()',
    use: "rollbackPerTest() hands the test's connection to every acquisition by replacing the pool's getConnection().",
    present: () => typeof mysqlPoolOf(dataSource)?.getConnection === 'function',
  };
}
