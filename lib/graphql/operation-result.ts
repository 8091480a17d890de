import { Logger } from '@nestjs/common';
import { TransactionalError } from '../errors';
import type { GraphQLOperation } from './graphql-operation';
import { clientSafe } from './resolver-call';

/** A GraphQL result as both servers hold it before they send it: errors already formatted for the client. */
export interface MutableResult {
  data?: unknown;
  errors?: readonly unknown[];
}

const logger = new Logger('TransactionalModule');

/**
 * Ends `operation` from its result, and makes the result say what the database did: a rolled-back
 * mutation answers `data: null` (its data described writes that were undone), a failed COMMIT adds its
 * error and drops the data. Returns whether the COMMIT failed, for the server's HTTP status.
 */
export async function settleResult(operation: GraphQLOperation, result: MutableResult): Promise<boolean> {
  const failed = result.errors !== undefined && result.errors.length > 0;
  const outcome = await operation.end({ failed });
  if (outcome.error !== undefined) {
    result.data = null;
    result.errors = [...(result.errors ?? []), formatCommitError(outcome.error, operation.describe())];
    return true;
  }
  if (!outcome.committed && operation.type === 'mutation') result.data = null;
  return false;
}

function formatCommitError(error: unknown, label: string): { message: string; extensions: { code: string } } {
  const wrapped =
    error instanceof TransactionalError
      ? error
      : new TransactionalError(`The COMMIT of ${label} failed: ${String((error as Error)?.message ?? error)}`, { cause: error });
  const safe = clientSafe(wrapped, label);
  if (safe === wrapped) logger.error(wrapped.message);
  return { message: safe.message, extensions: { code: 'INTERNAL_SERVER_ERROR' } };
}
