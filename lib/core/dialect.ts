import type { DataSource, QueryRunner } from 'typeorm';
import { mysqlConnectionClosing, mysqlPoolOf, mysqlServerVersion, type Mysql2Connection } from '../compat/mysql2';
import { pgClientBroken, pgPoolOf } from '../compat/pg';
import { releasePostgresConnection, runnerInternals } from '../compat/typeorm';

/** Isolation levels both PostgreSQL and MySQL/MariaDB accept. */
export const ISOLATION_LEVELS = ['READ UNCOMMITTED', 'READ COMMITTED', 'REPEATABLE READ', 'SERIALIZABLE'] as const;
export type IsolationLevel = (typeof ISOLATION_LEVELS)[number];

/** What a BEGIN must establish for one transaction. */
export interface BeginSpec {
  isolationLevel?: IsolationLevel;
  readOnly?: boolean;
  timeoutMs?: number;
}

/** See `Dialect.afterFailure()`. */
export type FailureScope = 'statement' | 'level' | 'transaction';

/**
 * The longest duration any `…Ms` option takes, in milliseconds: 2^31 - 1 (about 24.8 days). PostgreSQL
 * rejects a longer `statement_timeout`, and Node.js fires a longer timer after 1 ms.
 */
export const MAX_DURATION_MS = 2_147_483_647;

/**
 * A validated value for SQL text: BEGIN options are checked where they are declared, and checked
 * again here, so nothing but a whole number of milliseconds and a known isolation level reaches SQL.
 */
function sqlMs(value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0 || value > MAX_DURATION_MS) {
    throw new TypeError(`timeoutMs must be a whole number of milliseconds from 1 to ${MAX_DURATION_MS}, got ${String(value)}`);
  }
  return value;
}

function sqlIsolation(level: IsolationLevel): IsolationLevel {
  if (!(ISOLATION_LEVELS as readonly unknown[]).includes(level)) {
    throw new TypeError(`isolationLevel must be one of ${ISOLATION_LEVELS.join(', ')}, got ${String(level)}`);
  }
  return level;
}

/** Pool counters, as the driver's pool reports them. */
export interface PoolStats {
  /** Connections open (or opening). */
  total: number;
  idle: number;
  /** Requests waiting for a connection. */
  waiting: number;
  /** The most connections the pool opens (`poolSize`). */
  max: number;
}

/**
 * Everything that differs between PostgreSQL and MySQL/MariaDB lives here: how a transaction is
 * opened on a raw driver connection, which errors are worth a retry, how pool counters are read.
 */
export interface Dialect {
  readonly name: 'postgres' | 'mysql';
  /** Statements that open a transaction; as few as the database allows (PostgreSQL: one). */
  beginStatements(connection: unknown, spec: BeginSpec): string[];
  /** Statements that undo session state the BEGIN had to set outside the transaction (MySQL timeouts). */
  endStatements(connection: unknown, spec: BeginSpec): string[];
  /** Sends one statement on the raw driver connection, bypassing TypeORM's query runner; resolves with the driver's result. */
  send(connection: unknown, sql: string): Promise<unknown>;
  /** Deadlock or serialization failure: the whole transaction may succeed if run again. */
  isRetryable(error: unknown): boolean;
  /** A statement or idle-in-transaction timeout fired. */
  isTimeout(error: unknown): boolean;
  /**
   * What a failed statement did to the transaction, by the database's own word: `'statement'` (only
   * the statement was undone: MySQL/MariaDB's duplicate key, say), `'level'` (PostgreSQL: the
   * transaction, or the savepoint it ran in, is aborted until rolled back), or `'transaction'` (the
   * server rolled the whole transaction back: MySQL/MariaDB's deadlock; later statements would run
   * in autocommit). Called with the connection still reserved for the failed statement.
   */
  afterFailure(connection: unknown, error: unknown): Promise<FailureScope>;
  /** The answer to COMMIT says the database rolled back instead (PostgreSQL's `ROLLBACK` tag). */
  commitRefused(result: unknown): boolean;
  /** The driver already knows the connection is dead (it broke after the pool handed it out). */
  isBroken(connection: unknown): boolean;
  poolStats(dataSource: DataSource): PoolStats;
  /** Releases a query runner whose connection may be mid-transaction: the pool must not reuse it. */
  destroy(queryRunner: QueryRunner, cause: unknown): Promise<void>;
}

function driverError(error: unknown): Record<string, unknown> | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const inner = (error as { driverError?: unknown }).driverError;
  return (typeof inner === 'object' && inner !== null ? inner : error) as Record<string, unknown>;
}

interface PgClient {
  query(sql: string): Promise<unknown>;
}

const postgres: Dialect = {
  name: 'postgres',
  beginStatements(_connection, spec) {
    let sql = 'BEGIN';
    if (spec.isolationLevel) sql += ` ISOLATION LEVEL ${sqlIsolation(spec.isolationLevel)}`;
    if (spec.readOnly === true) sql += ' READ ONLY';
    if (spec.timeoutMs !== undefined) {
      const ms = sqlMs(spec.timeoutMs);
      // Transaction-local: the settings vanish at COMMIT/ROLLBACK, so a pooled connection keeps nothing.
      // Simple-protocol multi-statement: still one round trip.
      sql += `; SET LOCAL statement_timeout = ${ms}; SET LOCAL idle_in_transaction_session_timeout = ${ms}`;
    }
    return [sql];
  },
  endStatements() {
    // SET LOCAL ends with the transaction.
    return [];
  },
  send(connection, sql) {
    return (connection as PgClient).query(sql);
  },
  isRetryable(error) {
    const code = driverError(error)?.code;
    return code === '40P01' || code === '40001';
  },
  afterFailure(_connection, error) {
    // Any error the server raised inside a transaction block aborts it (or the savepoint it ran in);
    // FATAL ones end the session, which the lost-connection watch reports.
    return Promise.resolve(driverError(error)?.severity === 'ERROR' ? 'level' : 'statement');
  },
  commitRefused(result) {
    return (result as { command?: unknown } | undefined)?.command === 'ROLLBACK';
  },
  isTimeout(error) {
    const e = driverError(error);
    if (e?.code === '25P03') return true;
    return e?.code === '57014' && /statement timeout/.test(String(e.message));
  },
  isBroken(connection) {
    return pgClientBroken(connection);
  },
  poolStats(dataSource) {
    const pool = pgPoolOf(dataSource);
    return {
      total: pool?.totalCount ?? 0,
      idle: pool?.idleCount ?? 0,
      waiting: pool?.waitingCount ?? 0,
      max: pool?.options.max ?? 0,
    };
  },
  async destroy(queryRunner, cause) {
    // pg-pool destroys a client released with an error instead of returning it to the idle list.
    await releasePostgresConnection(queryRunner, cause instanceof Error ? cause : new Error(String(cause)));
  },
};

const SERVER_STATUS_IN_TRANS = 1;

function isMariaDb(connection: unknown): boolean {
  return /mariadb/i.test(mysqlServerVersion(connection));
}

const mysql: Dialect = {
  name: 'mysql',
  beginStatements(connection, spec) {
    const statements: string[] = [];
    if (spec.timeoutMs !== undefined) {
      const ms = sqlMs(spec.timeoutMs);
      // MySQL/MariaDB have no transaction-local settings: set them on the session and reset them after the transaction.
      statements.push(
        isMariaDb(connection)
          ? `SET SESSION max_statement_time = ${ms / 1000}, SESSION idle_transaction_timeout = ${Math.max(1, Math.ceil(ms / 1000))}`
          : `SET SESSION max_execution_time = ${ms}`,
      );
    }
    // SET TRANSACTION (without SESSION) applies to the next transaction only.
    if (spec.isolationLevel) statements.push(`SET TRANSACTION ISOLATION LEVEL ${sqlIsolation(spec.isolationLevel)}`);
    statements.push(spec.readOnly === true ? 'START TRANSACTION READ ONLY' : 'START TRANSACTION');
    return statements;
  },
  endStatements(connection, spec) {
    if (spec.timeoutMs === undefined) return [];
    return [
      isMariaDb(connection)
        ? 'SET SESSION max_statement_time = DEFAULT, SESSION idle_transaction_timeout = DEFAULT'
        : 'SET SESSION max_execution_time = DEFAULT',
    ];
  },
  send(connection, sql) {
    return new Promise<unknown>((resolve, reject) =>
      // The driver's own error, as a statement through TypeORM would reject with it.
      // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors
      (connection as Mysql2Connection).query(sql, (err, result) => (err ? reject(err) : resolve(result))),
    );
  },
  isRetryable(error) {
    const e = driverError(error);
    return e?.errno === 1213 || e?.code === 'ER_LOCK_DEADLOCK';
  },
  async afterFailure(connection) {
    // Which errors end the transaction depends on the error and on server settings (a lock wait
    // timeout does with innodb_rollback_on_timeout): ask the server. `DO 0` answers with an OK
    // packet whose status flags say whether a transaction is open (SERVER_STATUS_IN_TRANS).
    try {
      const status = (await this.send(connection, 'DO 0')) as { serverStatus?: number };
      return ((status.serverStatus ?? 0) & SERVER_STATUS_IN_TRANS) === 0 ? 'transaction' : 'statement';
    } catch {
      // The connection broke: the lost-connection watch reports that.
      return 'statement';
    }
  },
  commitRefused() {
    return false;
  },
  isTimeout(error) {
    const errno = driverError(error)?.errno;
    // 1969: MariaDB max_statement_time; 3024: MySQL max_execution_time.
    return errno === 1969 || errno === 3024;
  },
  isBroken(connection) {
    // mysql2 refuses commands once it closes the connection ("Can't add new command when connection is in closed state").
    return mysqlConnectionClosing(connection);
  },
  poolStats(dataSource) {
    const pool = mysqlPoolOf(dataSource);
    return {
      total: pool?._allConnections.length ?? 0,
      idle: pool?._freeConnections.length ?? 0,
      waiting: pool?._connectionQueue.length ?? 0,
      max: pool?.config.connectionLimit ?? 0,
    };
  },
  async destroy(queryRunner) {
    const qr = runnerInternals(queryRunner);
    // A destroyed mysql2 pool connection leaves the pool; releasing it as well would put it back.
    (qr.databaseConnection as Mysql2Connection | undefined)?.destroy();
    qr.isReleased = true;
  },
};

/** The dialect of a data source, or undefined where the library does not support its driver. */
export function dialectOf(dataSource: DataSource): Dialect | undefined {
  switch (dataSource.options.type) {
    case 'postgres':
      return postgres;
    case 'mysql':
    case 'mariadb':
      return mysql;
    default:
      return undefined;
  }
}
