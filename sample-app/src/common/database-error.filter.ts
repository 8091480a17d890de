import { type ArgumentsHost, Catch, HttpStatus } from '@nestjs/common';
import { BaseExceptionFilter } from '@nestjs/core';
import { ConnectionAcquisitionError } from 'nestjs-request-transaction';

/** Why a request failed on the database side, in a response body. */
export type DatabaseFailure = 'deadlock' | 'serialization-failure' | 'pool-timeout';

/** The body of a response the filter writes. */
export interface DatabaseErrorBody {
  statusCode: number;
  error: string;
  reason: DatabaseFailure;
  /** The driver's code: `40P01`, `40001`, `ER_LOCK_DEADLOCK`; absent for a pool timeout. */
  driverCode?: string;
  message: string;
}

/**
 * Turns the database failures a client can do something about into clear responses: a deadlock or
 * serialization failure is a 409 (the transaction was rolled back: retry it), an exhausted connection
 * pool a 503. Everything else goes to Nest's own handling; GraphQL resolvers' errors, to GraphQL.
 */
@Catch()
export class DatabaseErrorFilter extends BaseExceptionFilter {
  override catch(exception: unknown, host: ArgumentsHost): unknown {
    // A resolver's error goes back to GraphQL, which puts it in the result: there is no HTTP response to write.
    if (host.getType<string>() === 'graphql') return exception;
    const body = host.getType() === 'http' ? describe(exception) : undefined;
    if (body === undefined) return super.catch(exception, host);
    const adapter = this.httpAdapterHost?.httpAdapter ?? this.applicationRef;
    adapter?.reply(host.switchToHttp().getResponse(), body, body.statusCode);
  }
}

function describe(exception: unknown): DatabaseErrorBody | undefined {
  const driver = driverError(exception);
  const code = typeof driver?.code === 'string' ? driver.code : undefined;
  if (code === '40P01' || code === 'ER_LOCK_DEADLOCK' || driver?.errno === 1213) {
    return conflict(
      'deadlock',
      code,
      'The transaction deadlocked with a concurrent one and was rolled back; nothing was written. Retry the request.',
    );
  }
  if (code === '40001') {
    return conflict(
      'serialization-failure',
      code,
      'The transaction conflicted with a concurrent one and was rolled back; nothing was written. Retry the request.',
    );
  }
  const message = exception instanceof Error ? exception.message : '';
  // A unit of work's own connection, or (in the naive variants) node-postgres' own timeout on a second
  // connection taken around the library.
  if (exception instanceof ConnectionAcquisitionError || /timeout exceeded when trying to connect/.test(message)) {
    return {
      statusCode: HttpStatus.SERVICE_UNAVAILABLE,
      error: 'Service Unavailable',
      reason: 'pool-timeout',
      message: 'No database connection came free in time; nothing was written. Retry later.',
    };
  }
  return undefined;
}

function conflict(reason: DatabaseFailure, driverCode: string | undefined, message: string): DatabaseErrorBody {
  return { statusCode: HttpStatus.CONFLICT, error: 'Conflict', reason, driverCode, message };
}

function driverError(error: unknown): { code?: unknown; errno?: unknown } | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const inner = (error as { driverError?: unknown }).driverError;
  return typeof inner === 'object' && inner !== null ? inner : error;
}
