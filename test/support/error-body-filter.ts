/** An exception filter that answers with the error itself, so a test can tell which error failed a request. */
import { type ArgumentsHost, Catch, type ExceptionFilter, HttpException, Injectable } from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';

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
