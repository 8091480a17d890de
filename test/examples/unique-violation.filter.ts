import { type ArgumentsHost, Catch, ConflictException } from '@nestjs/common';
import { APP_FILTER, BaseExceptionFilter } from '@nestjs/core';
import { TransactionAbortedError } from 'nestjs-request-transaction';
import { QueryFailedError } from 'typeorm';

/** A unique violation is a 409 Conflict. The request's transaction was rolled back before this runs. */
@Catch(QueryFailedError, TransactionAbortedError)
export class UniqueViolationFilter extends BaseExceptionFilter {
  override catch(exception: Error, host: ArgumentsHost): void {
    const failure = exception instanceof TransactionAbortedError ? exception.cause : exception;
    const driver = (failure as { driverError?: { code?: string; errno?: number } }).driverError;
    // PostgreSQL 23505 unique_violation; MySQL/MariaDB 1062 ER_DUP_ENTRY.
    if (driver?.code === '23505' || driver?.errno === 1062) {
      return super.catch(new ConflictException('It exists already.'), host);
    }
    return super.catch(exception, host);
  }
}

// In a module's providers:
export const uniqueViolationFilter = { provide: APP_FILTER, useClass: UniqueViolationFilter };
