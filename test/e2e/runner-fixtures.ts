// Shared helpers of the runner, hooks, route-options and named-data-sources suites. Latches, recording
// loggers and the leak check are in test/support/.
import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Injectable } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import type { EngineName } from '../support/databases';
import type { Observer } from '../support/observer';

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
    code: typeof driver.code === 'string' || typeof driver.code === 'number' ? String(driver.code) : undefined,
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

/** The raw Node response under an Express response or a Fastify reply. */
export function rawResponse(response: unknown): { headersSent: boolean; writableEnded: boolean } {
  const reply = response as { raw?: { headersSent: boolean; writableEnded: boolean } };
  return reply.raw ?? (response as { headersSent: boolean; writableEnded: boolean });
}
