import { describeValue, TransactionalOptionsError } from '../errors';
import { MAX_DURATION_MS } from './dialect';

/**
 * `idleInTransactionMs` outside production. Above the event-loop stalls of a busy test machine and the
 * in-process work between two statements of a request (mapping, validation: well under 50 ms), so that
 * a report means something; below the slow end of a call to another service and any exchange with a
 * mail server, so that such a call made while the connection is held is reported.
 */
export const DEFAULT_IDLE_IN_TRANSACTION_MS = 200;

/** The module-wide default for this process: off in production, where the per-route figures of `stats()` show the same. */
export function defaultIdleInTransactionMs(): number | undefined {
  return process.env.NODE_ENV === 'production' ? undefined : DEFAULT_IDLE_IN_TRANSACTION_MS;
}

/** Throws `TransactionalOptionsError` unless `value` is left out, `false`, or a whole number of ms from 0 to the ceiling. */
export function checkIdleInTransactionMs(value: unknown, where: string): void {
  if (value === undefined || value === false) return;
  if (!(Number.isInteger(value) && (value as number) >= 0)) {
    throw new TransactionalOptionsError(
      `${where}: idleInTransactionMs must be a whole number of milliseconds, or 0 or false to turn the report off; got ${describeValue(value)}.`,
    );
  }
  if ((value as number) > MAX_DURATION_MS) {
    throw new TransactionalOptionsError(
      `${where}: idleInTransactionMs ${value as number} is above the limit of ${MAX_DURATION_MS} ms (about 24.8 days): ` +
        `no gap between two statements of a transaction would ever be reported. Use at most ${MAX_DURATION_MS}, or false to turn the report off.`,
    );
  }
}

/** The threshold in force, from a checked value: `0` and `false` turn it off, `undefined` keeps `fallback`. */
export function resolveIdleInTransactionMs(value: number | false | undefined, fallback: number | undefined): number | undefined {
  if (value === undefined) return fallback;
  return value === false || value === 0 ? undefined : value;
}
