// Shared helpers of the runner, hooks, route-options, bootstrap-errors and named-data-sources suites.
import {
  type ArgumentsHost,
  Catch,
  type ExceptionFilter,
  HttpException,
  Injectable,
  type LoggerService,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { DataSource, Logger as TypeormLogger } from 'typeorm';
import { dialectOf } from '../../lib/core/dialect';
import type { EngineName } from '../support/databases';
import { waitFor, type Observer, type MariadbObserver, type PostgresObserver } from '../support/observer';

/** A promise the test settles from outside: a latch a handler or hook waits on, or a signal it gives. */
export interface Deferred<T = void> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A TypeORM logger that records every statement the data source sends, in order. */
export class SqlLog implements TypeormLogger {
  readonly queries: string[] = [];
  readonly failed: string[] = [];

  logQuery(query: string): void {
    this.queries.push(query);
  }

  logQueryError(_error: string | Error, query: string): void {
    this.failed.push(query);
  }

  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}

  clear(): void {
    this.queries.length = 0;
    this.failed.length = 0;
  }

  /** Only the statements that open, end or shape transactions and savepoints. */
  control(): string[] {
    return this.queries.filter((sql) =>
      /^(BEGIN|START TRANSACTION|COMMIT|ROLLBACK|SAVEPOINT|RELEASE SAVEPOINT|SET (TRANSACTION|SESSION|LOCAL))\b/i.test(sql),
    );
  }
}

export interface LogEntry {
  level: 'log' | 'error' | 'warn' | 'debug' | 'verbose' | 'fatal';
  message: string;
  /** Nest passes the logger's context as the last parameter. */
  context: string | undefined;
  params: unknown[];
}

/** A Nest logger that keeps what it is given, for `createApp({ logger })` / `app.useLogger()`. */
export class RecordingLogger implements LoggerService {
  readonly entries: LogEntry[] = [];

  log(message: unknown, ...params: unknown[]): void {
    this.record('log', message, params);
  }
  error(message: unknown, ...params: unknown[]): void {
    this.record('error', message, params);
  }
  warn(message: unknown, ...params: unknown[]): void {
    this.record('warn', message, params);
  }
  debug(message: unknown, ...params: unknown[]): void {
    this.record('debug', message, params);
  }
  verbose(message: unknown, ...params: unknown[]): void {
    this.record('verbose', message, params);
  }
  fatal(message: unknown, ...params: unknown[]): void {
    this.record('fatal', message, params);
  }

  /** Entries logged with `context`, e.g. 'TransactionalModule'. */
  of(context: string): LogEntry[] {
    return this.entries.filter((entry) => entry.context === context);
  }

  clear(): void {
    this.entries.length = 0;
  }

  private record(level: LogEntry['level'], message: unknown, params: unknown[]): void {
    const last = params[params.length - 1];
    this.entries.push({ level, message: String(message), context: typeof last === 'string' ? last : undefined, params });
  }
}

/** What {@link ErrorBodyFilter} answers: the error's class and, for driver errors, the database's code. */
export interface ErrorBody {
  name: string;
  message: string;
  code?: string;
  errno?: number;
  cause?: { name: string; code?: string; errno?: number };
}

/**
 * Answers every error with its class, message and database error code (HTTP status kept for
 * HttpExceptions, 500 otherwise), so a test can tell *which* error failed the request.
 */
@Catch()
@Injectable()
export class ErrorBodyFilter implements ExceptionFilter {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(exception: unknown, host: ArgumentsHost): void {
    const status = exception instanceof HttpException ? exception.getStatus() : 500;
    const error = exception as { name?: string; message?: string; cause?: unknown };
    const body: ErrorBody = { name: String(error?.name), message: String(error?.message), ...codesOf(exception) };
    if (error?.cause !== undefined) {
      body.cause = { name: String((error.cause as { name?: string }).name), ...codesOf(error.cause) };
    }
    this.adapterHost.httpAdapter.reply(host.switchToHttp().getResponse(), body, status);
  }
}

function codesOf(error: unknown): { code?: string; errno?: number } {
  const driver = (error as { driverError?: { code?: unknown; errno?: unknown } })?.driverError;
  if (driver === undefined) return {};
  return {
    code: driver.code === undefined ? undefined : String(driver.code),
    errno: typeof driver.errno === 'number' ? driver.errno : undefined,
  };
}

/** The SQL that returns the server-side id of the connection it runs on, as column `id`. */
export function connectionIdSql(engine: EngineName): string {
  return engine === 'postgres' ? 'SELECT pg_backend_pid() AS id' : 'SELECT CONNECTION_ID() AS id';
}

/** The id of the connection `rows` (from {@link connectionIdSql}) came from, as a number. */
export function connectionIdOf(rows: Array<{ id: unknown }>): number {
  return Number(rows[0].id);
}

/** A statement that runs `seconds` unless something stops it. */
export function sleepSql(engine: EngineName, seconds: number): string {
  return engine === 'postgres' ? `SELECT pg_sleep(${seconds})` : `SELECT SLEEP(${seconds})`;
}

/** `$n` on PostgreSQL, `?` on MariaDB. */
export function placeholder(engine: EngineName, n: number): string {
  return engine === 'postgres' ? `$${n}` : '?';
}

/** Labels of the rows of `table`, sorted, as the observer sees them. */
export async function labelsIn(db: Observer, table: string): Promise<string[]> {
  const rows = await db.query<{ label: string }>(`SELECT label FROM ${table} ORDER BY label`);
  return rows.map((row) => row.label);
}

/**
 * Nothing leaked: the pool is back to idle, nobody waits for it, and no connection of the app sits
 * in an open transaction (PostgreSQL: its backends by application_name; MariaDB: the InnoDB
 * transactions of the pool's own connections).
 */
export async function expectNothingLeaked(
  dataSource: DataSource,
  db: PostgresObserver | MariadbObserver,
  applicationName: string,
): Promise<void> {
  await waitFor(
    () => {
      const stats = dialectOf(dataSource)!.poolStats(dataSource);
      expect(stats.waiting).toBe(0);
      expect(stats.idle).toBe(stats.total);
    },
    { timeoutMs: 3000 },
  );
  if (db.engine === 'postgres') {
    await waitFor(async () => expect(await db.idleInTransactionCount(applicationName)).toBe(0), { timeoutMs: 3000 });
  } else {
    // Scoped to this pool's connections, like application_name on PostgreSQL: `inTransactionCount()`
    // counts every connection of the test user, so another suite running against the same server
    // at the same time would fail this one.
    await waitFor(async () => expect(await mariadbTransactionsOf(db, dataSource)).toEqual([]), {
      timeoutMs: 3000,
      // INNODB_TRX is served from a cache refreshed at most every 100 ms.
      intervalMs: 150,
    });
  }
}

/** Thread ids of the MariaDB connections of `dataSource`'s pool that have an open InnoDB transaction. */
export async function mariadbTransactionsOf(db: MariadbObserver, dataSource: DataSource): Promise<number[]> {
  const pool = (dataSource.driver as unknown as { pool: { _allConnections: { toArray(): Array<{ threadId: number | null }> } } })
    .pool;
  const ids = pool._allConnections
    .toArray()
    .map((connection) => connection.threadId)
    .filter((id): id is number => id !== null);
  if (ids.length === 0) return [];
  const rows = await db.query<{ id: unknown }>(
    `SELECT trx_mysql_thread_id AS id FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id IN (${ids.map(() => '?').join(', ')})`,
    ids,
  );
  return rows.map((row) => Number(row.id));
}

/** The raw Node response under an Express response or a Fastify reply. */
export function rawResponse(response: unknown): { headersSent: boolean; writableEnded: boolean } {
  const reply = response as { raw?: { headersSent: boolean; writableEnded: boolean } };
  return reply.raw ?? (response as { headersSent: boolean; writableEnded: boolean });
}
