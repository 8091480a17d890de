/**
 * Shared by the request-lifecycle, client-abort and concurrency suites (and only by them): latches,
 * a recording TypeORM logger, and the "nothing leaked" check every test of those suites ends with.
 */
import type { DataSource, EntityManager, Logger as TypeormLogger, QueryRunner } from 'typeorm';
import { dialectOf, type PoolStats } from '../../lib/core/dialect';
import type { MariadbObserver, PostgresObserver } from '../support/observer';
import { waitFor } from '../support/observer';

/** Either observer; `engine` tells which. */
export type AnyObserver = PostgresObserver | MariadbObserver;

/** A promise with its resolve function outside: the test (or the handler) steps the other side through. */
export interface Latch<T = void> {
  readonly promise: Promise<T>;
  /** True once resolve() was called. */
  readonly settled: boolean;
  resolve(value: T): void;
}

/** A fresh {@link Latch}. */
export function latch<T = void>(): Latch<T> {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((done) => (resolve = done));
  const handle = {
    promise,
    settled: false,
    resolve(value: T) {
      handle.settled = true;
      resolve(value);
    },
  };
  return handle;
}

/** One statement TypeORM (or the library, for its BEGIN) reported to the data source's logger. */
export interface LoggedQuery {
  sql: string;
  parameters?: unknown[];
  /** The query runner that ran it: one per unit of work. */
  runner?: QueryRunner;
  /** Set when the statement failed. */
  error?: string;
}

/**
 * A TypeORM `Logger` that records every statement in the order it was sent. TypeORM calls
 * `logQuery` unconditionally for a custom logger, and the library reports its own BEGIN through it.
 */
export class RecordingLogger implements TypeormLogger {
  readonly entries: LoggedQuery[] = [];

  logQuery(query: string, parameters?: unknown[] | object, queryRunner?: QueryRunner): void {
    this.entries.push({
      sql: query,
      parameters: Array.isArray(parameters) ? parameters : undefined,
      runner: queryRunner,
    });
  }

  logQueryError(error: string | Error, query: string, parameters?: unknown[] | object, queryRunner?: QueryRunner): void {
    this.entries.push({
      sql: query,
      parameters: Array.isArray(parameters) ? parameters : undefined,
      runner: queryRunner,
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

  /** The statements sent (failed ones excluded, so each appears once). */
  statements(): string[] {
    return this.entries.filter((e) => e.error === undefined).map((e) => e.sql);
  }

  /** Statements that open or end a transaction, in order. */
  transactionControl(): string[] {
    return this.statements().filter(isTransactionControl);
  }
}

/** BEGIN / START TRANSACTION / COMMIT / ROLLBACK (and savepoint forms), whatever follows them. */
export function isTransactionControl(sql: string): boolean {
  return /^\s*(BEGIN|START TRANSACTION|COMMIT|ROLLBACK|SAVEPOINT|RELEASE SAVEPOINT)\b/i.test(sql);
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

/** The pool counters of `dataSource` (see `lib/core/dialect.ts`). */
export function poolStats(dataSource: DataSource): PoolStats {
  const dialect = dialectOf(dataSource);
  if (dialect === undefined) throw new Error(`no dialect for ${dataSource.options.type}`);
  return dialect.poolStats(dataSource);
}

/** The server-side id of the connection a manager's queries run on (PostgreSQL backend pid, MariaDB connection id). */
export async function connectionIdOf(tx: EntityManager, engine: 'postgres' | 'mariadb'): Promise<number> {
  const sql = engine === 'postgres' ? 'SELECT pg_backend_pid() AS id' : 'SELECT CONNECTION_ID() AS id';
  const [row] = (await tx.query(sql)) as Array<{ id: number | string }>;
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
    const rows = await db.query<{ open: boolean }>(
      'SELECT xact_start IS NOT NULL AS open FROM pg_stat_activity WHERE pid = $1',
      [connectionId],
    );
    return rows[0]?.open === true;
  }
  const [row] = await db.query<{ count: number | string }>(
    'SELECT COUNT(*) AS count FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id = ?',
    [connectionId],
  );
  return Number(row.count) > 0;
}

/** `waitFor` options for probes that read INNODB_TRX: slower than its 100 ms cache. */
export const INNODB_TRX_POLL = { intervalMs: 150, timeoutMs: 5000 } as const;

/** What {@link expectNothingLeaked} looks at. */
export interface LeakScope {
  dataSource: DataSource;
  db: AnyObserver;
  applicationName: string;
}

/**
 * Waits until the app's pool is back to idle (every connection it holds is idle, nobody waits) and
 * no connection of the app is left inside a transaction: on PostgreSQL no `idle in transaction`
 * backend of the app's application_name (nor any other of its backends inside a transaction); on
 * MariaDB `@@in_transaction` is 0 on each of the app's pooled connections.
 *
 * Why not the MariaDB observer's `inTransactionCount()`: MariaDB has no application_name, so it counts
 * every connection of the same user and database, and other suites run against the same server at the
 * same time (they did while these suites were written, and made it fail); `@@in_transaction` asked on
 * the app's own connections is scoped and has no cache. The pool must be idle for that, which is
 * checked first.
 */
export async function expectNothingLeaked({ dataSource, db, applicationName }: LeakScope): Promise<void> {
  await waitFor(
    async () => {
      const stats = poolStats(dataSource);
      expect({ idle: stats.idle, waiting: stats.waiting }).toEqual({ idle: stats.total, waiting: 0 });
      if (db.engine === 'postgres') {
        expect(await db.idleInTransactionCount(applicationName)).toBe(0);
        const backends = await db.backends(applicationName);
        expect(backends.filter((backend) => backend.xactStart !== null)).toEqual([]);
      } else {
        // Concurrent acquisitions of every idle connection: each is asked once.
        const answers = await Promise.all(
          Array.from({ length: stats.total }, () =>
            dataSource.query<Array<{ open: number | string }>>('SELECT @@in_transaction AS open'),
          ),
        );
        expect(answers.map(([row]) => Number(row.open))).toEqual(answers.map(() => 0));
      }
    },
    { timeoutMs: 5000 },
  );
}

/** POSTs `body` as JSON. */
export async function post(url: string, body: unknown = {}, init: RequestInit = {}): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    ...init,
  });
}

/** `promise`, or a failure naming `what` if it has not settled within `ms` (instead of Jest's silent test timeout). */
export async function within<T>(promise: Promise<T>, what: string, ms = 5000): Promise<T> {
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
