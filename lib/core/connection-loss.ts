import type { EventEmitter } from 'node:events';
import { TransactionalError, TransactionTimeoutError } from '../errors';
import type { BeginSpec, Dialect } from './dialect';

/** On a driver connection the library took: the watch of the transaction holding it now, null between two. */
const WATCH = Symbol('nestjs-request-transaction:connection-watch');
type Watched = EventEmitter & { [WATCH]?: ConnectionLossWatch | null };

function onConnectionLost(this: Watched, error?: unknown): void {
  this[WATCH]?.noteLost(error);
}

/**
 * Notes the server closing a data-source transaction's connection (an idle timeout, a killed backend,
 * a restart) while the transaction holds it. The listeners go on a connection once, the first time the
 * library takes it, and report to whichever transaction holds it then: a request adds and removes none.
 */
export class ConnectionLossWatch {
  /** Set when the server closed the connection under the open transaction. */
  lost?: unknown;
  /** Called when the connection is lost: `whenLost()` resolves then. */
  private onLost?: () => void;
  private watched?: Watched;

  watch(connection: unknown): void {
    const watched = connection as Watched;
    if (typeof watched?.on !== 'function') return;
    if (watched[WATCH] === undefined) {
      watched.on('error', onConnectionLost);
      watched.on('end', onConnectionLost);
    }
    watched[WATCH] = this;
    this.watched = watched;
  }

  /** The connection went back to the pool, or was discarded: later events are another holder's. */
  unwatch(): void {
    const watched = this.watched;
    if (watched === undefined) return;
    this.watched = undefined;
    if (watched[WATCH] === this) watched[WATCH] = null;
  }

  /** Called by the connection's listeners. */
  noteLost(error: unknown): void {
    this.lost ??= error ?? new Error('the connection ended');
    this.onLost?.();
  }

  /** Resolves when the connection is lost; `stopWaiting()` forgets the waiter. */
  whenLost(): Promise<void> {
    return new Promise<void>((resolve) => (this.onLost = resolve));
  }

  stopWaiting(): void {
    this.onLost = undefined;
  }

  /**
   * Whether `error` failed a statement of this transaction whose connection has ended since (the
   * server or a proxy between closed it): the error alone may not say so (PgBouncer's own message, a
   * driver's refusal). A timeout is explained as a timeout instead.
   */
  explains(error: unknown, dialect: Dialect): boolean {
    if (this.lost === undefined) return false;
    if (dialect.isTimeout(error) || dialect.isTimeout(this.lost)) return false;
    // The statement's failure carries the server's reason; the end of the connection that followed, seldom.
    this.lost = error;
    return true;
  }
}

/** The error for a lost connection of `label`'s transaction; `endSent`: the end statement already on its way. */
export function lostConnectionError(
  label: string,
  cause: unknown,
  dialect: Dialect,
  spec: BeginSpec,
  endSent: 'COMMIT' | 'ROLLBACK' | undefined,
): Error {
  const reason = cause instanceof Error ? cause.message : String(cause);
  const { timeoutMs } = spec;
  // PostgreSQL names its idle timeout (25P03); MySQL/MariaDB just close the connection.
  if (timeoutMs !== undefined && (dialect.isTimeout(cause) || dialect.name === 'mysql')) {
    return new TransactionTimeoutError(
      `The database closed the connection of ${label} (${reason}): its transaction sat idle longer than ` +
        `timeoutMs (${timeoutMs} ms), and was rolled back. Do slow non-database work before the first query or ` +
        `after the response (an afterCommit hook), or raise @Transactional({ timeoutMs }).`,
      { cause },
    );
  }
  if (endSent === 'COMMIT') {
    return new TransactionalError(
      `The connection of ${label} was lost while its COMMIT was on the way (${reason}): the database ` +
        `may or may not have committed the transaction. Check what was written before retrying the request.`,
      { cause },
    );
  }
  return new TransactionalError(
    `The connection of ${label} was lost while its transaction was open (${reason}); the database ` +
      `rolled the transaction back. The request can be retried once the database is reachable.`,
    { cause },
  );
}

/** The error for a connection that broke between the pool and its BEGIN. */
export function brokenConnectionError(label: string, cause: unknown): TransactionalError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new TransactionalError(
    `The connection of ${label} had broken before its transaction began (${reason}): none of its work ` +
      `reached the database, and the connection was discarded. The request can be retried once the database is reachable.`,
    { cause },
  );
}
