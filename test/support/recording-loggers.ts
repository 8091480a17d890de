/**
 * Loggers that keep what they are given, for the suites to read: the SQL a data source sent
 * (a TypeORM `Logger`) and what Nest and the library logged (a Nest `LoggerService`).
 */
import type { LoggerService } from '@nestjs/common';
import type { QueryRunner, Logger as TypeormLogger } from 'typeorm';

// ---------------------------------------------------------------------------------------------
// SQL

/** One statement TypeORM (or the library, for its BEGIN) reported to the data source's logger. */
export interface LoggedQuery {
  sql: string;
  /** Its parameters; empty when it had none. */
  parameters: unknown[];
  /** The query runner that ran it: one per unit of work. */
  queryRunner?: QueryRunner;
  /** Set when the statement failed (it was then reported twice: sent, then failed). */
  error?: string;
}

/** Options of {@link RecordingSqlLogger.transactionControl}. */
export interface TransactionControlOptions {
  /** Also the statements that shape a transaction: SET TRANSACTION / SET SESSION / SET LOCAL. Default: false. */
  settings?: boolean;
}

/**
 * A TypeORM `Logger` that records every statement in the order the data source sent it. TypeORM
 * calls `logQuery` unconditionally for a custom logger, and the library reports its own BEGIN through it.
 * Pass it as `typeormOptions(engine, { logger })`.
 */
export class RecordingSqlLogger implements TypeormLogger {
  /** Everything reported, in order: each statement once, plus once more for each failure. */
  readonly entries: LoggedQuery[] = [];

  logQuery(query: string, parameters?: unknown[] | object, queryRunner?: QueryRunner): void {
    this.entries.push({ sql: query, parameters: Array.isArray(parameters) ? parameters : [], queryRunner });
  }

  logQueryError(error: string | Error, query: string, parameters?: unknown[] | object, queryRunner?: QueryRunner): void {
    this.entries.push({
      sql: query,
      parameters: Array.isArray(parameters) ? parameters : [],
      queryRunner,
      error: String(error),
    });
  }

  logQuerySlow(): void {}
  logSchemaBuild(): void {}
  logMigration(): void {}
  log(): void {}

  /** Forgets what was recorded (call before the request under test). */
  clear(): void {
    this.entries.length = 0;
  }

  /** The statements sent, failed ones included but listed once. */
  sent(): LoggedQuery[] {
    return this.entries.filter((entry) => entry.error === undefined);
  }

  /** The SQL of {@link sent}. */
  statements(): string[] {
    return this.sent().map((entry) => entry.sql);
  }

  /** The SQL of the statements the database rejected. */
  failures(): string[] {
    return this.entries.filter((entry) => entry.error !== undefined).map((entry) => entry.sql);
  }

  /** The statements sent through one query runner, in order. */
  of(queryRunner: QueryRunner | undefined): string[] {
    return this.sent()
      .filter((entry) => entry.queryRunner === queryRunner)
      .map((entry) => entry.sql);
  }

  /** The statements that open or end a transaction or a savepoint, in order (see {@link isTransactionControl}). */
  transactionControl({ settings = false }: TransactionControlOptions = {}): string[] {
    return this.statements().filter((sql) => isTransactionControl(sql) || (settings && isTransactionSetting(sql)));
  }
}

/** BEGIN / START TRANSACTION / COMMIT / ROLLBACK (and savepoint forms), whatever follows them. */
export function isTransactionControl(sql: string): boolean {
  return /^\s*(BEGIN|START TRANSACTION|COMMIT|ROLLBACK|SAVEPOINT|RELEASE SAVEPOINT)\b/i.test(sql);
}

/** SET TRANSACTION / SET SESSION / SET LOCAL: what shapes a transaction (isolation level, timeouts). */
export function isTransactionSetting(sql: string): boolean {
  return /^\s*SET (TRANSACTION|SESSION|LOCAL)\b/i.test(sql);
}

/** The first keyword of a statement, upper-cased, with `START TRANSACTION` kept whole: `INSERT`, `SELECT`, … */
export function statementKind(sql: string): string {
  const trimmed = sql.trim().toUpperCase();
  if (trimmed.startsWith('START TRANSACTION')) return 'START TRANSACTION';
  return trimmed.split(/\s+/)[0];
}

/** The statement that opens a plain read-write transaction on `engine`. */
export function beginStatement(engine: 'postgres' | 'mariadb'): string {
  return engine === 'postgres' ? 'BEGIN' : 'START TRANSACTION';
}

// ---------------------------------------------------------------------------------------------
// Nest

/** One Nest log entry. */
export interface LogEntry {
  level: 'log' | 'error' | 'warn' | 'debug' | 'verbose' | 'fatal';
  message: string;
  /** Nest passes the logger's context as the last parameter. */
  context: string | undefined;
  /** The parameters after the message, context included. */
  params: unknown[];
}

/** The context the library logs with. */
const LIBRARY_CONTEXT = 'TransactionalModule';

/**
 * A Nest `LoggerService` that keeps every entry, for `createApp({ logger })`, `app.useLogger()` or
 * `Test.createTestingModule().setLogger()`.
 */
export class RecordingNestLogger implements LoggerService {
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

  /** Entries logged with `context`, e.g. 'ExceptionsHandler'. */
  of(context: string): LogEntry[] {
    return this.entries.filter((entry) => entry.context === context);
  }

  /** Entries the library logged (context `TransactionalModule`), optionally of one level. */
  library(level?: LogEntry['level']): LogEntry[] {
    return this.of(LIBRARY_CONTEXT).filter((entry) => level === undefined || entry.level === level);
  }

  /** The messages of the library's warnings, in order. */
  warnings(): string[] {
    return this.library('warn').map((entry) => entry.message);
  }

  clear(): void {
    this.entries.length = 0;
  }

  private record(level: LogEntry['level'], message: unknown, params: unknown[]): void {
    const last = params[params.length - 1];
    this.entries.push({ level, message: String(message), context: typeof last === 'string' ? last : undefined, params });
  }
}
