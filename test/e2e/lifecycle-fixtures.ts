/**
 * Shared by the request-lifecycle, client-abort, concurrency and statement-ordering suites (and only by
 * them): probes of the connection a unit of work runs on, and outcomes of work raced against a deadline.
 * Latches, SQL recording and the leak check are in test/support/.
 */
import type { EntityManager } from 'typeorm';
import { DEFAULT_WAIT_MS, type MariadbObserver, type PostgresObserver } from '../support/observer';

/** Either observer; `engine` tells which. */
export type AnyObserver = PostgresObserver | MariadbObserver;

/** The server-side id of the connection a manager's queries run on (PostgreSQL backend pid, MariaDB connection id). */
export async function connectionIdOf(tx: EntityManager, engine: 'postgres' | 'mariadb'): Promise<number> {
  const sql = engine === 'postgres' ? 'SELECT pg_backend_pid() AS id' : 'SELECT CONNECTION_ID() AS id';
  const [row] = await tx.query<Array<{ id: number | string }>>(sql);
  return Number(row.id);
}

/** Rows of `table` whose `column` equals `value`, read through the observer. */
export async function rowsWhere(db: AnyObserver, table: string, column: string, value: string): Promise<unknown[]> {
  const placeholder = db.engine === 'postgres' ? '$1' : '?';
  return db.query(`SELECT * FROM ${table} WHERE ${column} = ${placeholder}`, [value]);
}

/**
 * Whether the server connection `connectionId` (see {@link connectionIdOf}) is inside a transaction.
 * PostgreSQL: its `xact_start`. MariaDB: `information_schema.INNODB_TRX`, which lists a transaction once
 * it touched an InnoDB table and is served from a cache InnoDB refreshes only when the previous read is
 * over 100 ms old: poll it with {@link INNODB_TRX_POLL}.
 */
export async function inTransaction(db: AnyObserver, connectionId: number): Promise<boolean> {
  if (db.engine === 'postgres') {
    const rows = await db.query<{ open: boolean }>('SELECT xact_start IS NOT NULL AS open FROM pg_stat_activity WHERE pid = $1', [
      connectionId,
    ]);
    return rows[0]?.open === true;
  }
  const [row] = await db.query<{ count: number | string }>(
    'SELECT COUNT(*) AS count FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ?',
    [connectionId],
  );
  return Number(row.count) > 0;
}

/** `waitFor` options for probes that read INNODB_TRX: slower than its 100 ms cache. */
export const INNODB_TRX_POLL = { intervalMs: 150, timeoutMs: DEFAULT_WAIT_MS } as const;

/** `promise`, or a failure naming `what` if it has not settled within `ms` (instead of Jest's silent test timeout). */
export async function within<T>(promise: Promise<T>, what: string, ms = DEFAULT_WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** An outcome as a short name for `toEqual` diffs: the error's class, or `resolved`. */
export function outcomeName(outcome: unknown): string {
  if (outcome instanceof Error) return outcome.constructor.name;
  return typeof outcome === 'object' && outcome !== null && 'resolved' in outcome ? 'resolved' : String(outcome);
}

/** The error `work` failed with, or `{ resolved: value }`. */
export async function outcomeOf(work: () => Promise<unknown>): Promise<unknown> {
  try {
    return { resolved: await work() };
  } catch (error) {
    return error;
  }
}
