import { createConnection, type Connection, type RowDataPacket } from 'mysql2/promise';
import { Client } from 'pg';
import { CONNECT_TIMEOUT_MS, envValue } from './database-urls';
import { engineOf, postgresUrl, type EngineName, type EngineRef } from './databases';

export { DEFAULT_WAIT_MS, waitFor, type WaitForOptions } from './wait-for';

/**
 * A raw connection (pg / mysql2, not TypeORM) that looks at the database from outside the app
 * under test: rows written, connections held, transactions left open.
 */
export interface Observer {
  readonly engine: EngineName;
  /** Runs SQL with `$1` (PostgreSQL) or `?` (MariaDB) placeholders and returns the rows. */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  close(): Promise<void>;
}

/** A PostgreSQL server process serving one client connection, from `pg_stat_activity`. */
export interface Backend {
  pid: number;
  /** `active`, `idle`, `idle in transaction`, `idle in transaction (aborted)`, … */
  state: string | null;
  /** The last statement the connection ran. */
  query: string;
  /** When its current transaction started; null outside a transaction. */
  xactStart: Date | null;
  /** What it waits for, e.g. `Lock` for a row or table lock; null when it waits for nothing. */
  waitEventType: string | null;
}

/**
 * Observer of PostgreSQL, able to see the app's connections by `application_name` in the observer's
 * own database: other test runs on the same server use other databases, and may run the same suites,
 * with the same application names, at the same moment.
 */
export interface PostgresObserver extends Observer {
  readonly engine: 'postgres';
  /** The connections to this database tagged with `applicationName` (see `typeormOptions`), this observer excluded. */
  backends(applicationName: string): Promise<Backend[]>;
  /** How many of them sit in an open transaction without running anything (a leaked transaction). */
  idleInTransactionCount(applicationName: string): Promise<number>;
}

/** Which MariaDB connections to look at; both default to the user and database of `MYSQL_URL`. */
export interface ProcesslistFilter {
  user?: string;
  db?: string;
}

/** A MariaDB connection, from `information_schema.PROCESSLIST`. */
export interface MariadbProcess {
  id: number;
  user: string;
  db: string | null;
  /** `Sleep`, `Query`, … */
  command: string;
  state: string | null;
  /** The statement running now, null when idle. */
  info: string | null;
}

/**
 * Observer of MariaDB. MariaDB has no `application_name` it shows (the `program_name` connect attribute
 * is only visible with performance_schema, which is off by default): connections are told apart by user
 * and database here, and by the thread ids of the app's pool where only the app's own may count (see
 * `test/support/app-connections.ts`).
 */
export interface MariadbObserver extends Observer {
  readonly engine: 'mariadb';
  /** The connections of `filter`'s user and database, this observer excluded. */
  processlist(filter?: ProcesslistFilter): Promise<MariadbProcess[]>;
  /**
   * How many of them have an open InnoDB transaction (`information_schema.INNODB_TRX`). A
   * transaction shows only once it has touched an InnoDB table (`SELECT 1` alone does not count).
   * Each call waits until the server's INNODB_TRX cache may refresh (see `freshInnodbTrx`): ~0.1 s.
   */
  inTransactionCount(filter?: ProcesslistFilter): Promise<number>;
}

/** The observer of `E`. */
export type ObserverOf<E extends EngineName> = E extends 'postgres' ? PostgresObserver : MariadbObserver;

/** Either observer; `engine` tells which. */
export type AnyObserver = PostgresObserver | MariadbObserver;

/**
 * Opens an observer connection to `engine`. Close it in `afterAll`.
 *
 * @example
 * const db = await observer('postgres');
 * await waitFor(async () => expect(await db.idleInTransactionCount('transfers-spec')).toBe(0));
 */
export async function observer<E extends EngineName>(engine: EngineRef<E>): Promise<ObserverOf<E>> {
  const { name, url } = engineOf(engine);
  const opened = name === 'postgres' ? await postgresObserver(url) : await mariadbObserver(url);
  return opened as ObserverOf<E>;
}

/**
 * Where an observer of the app's PostgreSQL connects, and how it finds the app's connections. In the
 * PgBouncer run (see `test/support/pgbouncer-global-setup.ts`) the app connects to PgBouncer
 * (`DATABASE_URL`), while an observer connects to the server itself (`DATABASE_DIRECT_URL`): through
 * PgBouncer its own statements would run on the very server connections it inspects. The app's
 * connections are then PgBouncer's clients of that `application_name` (`PGBOUNCER_ADMIN_URL`).
 */
function postgresRoute(url: string): { url: string; pgbouncerAdminUrl?: string } {
  const direct = envValue('DATABASE_DIRECT_URL');
  if (direct === undefined || url !== postgresUrl()) return { url };
  return { url: direct, pgbouncerAdminUrl: envValue('PGBOUNCER_ADMIN_URL') };
}

/** The `application_name` of observer connections, so that they never count as the app's. */
export const OBSERVER_APPLICATION_NAME = 'test-observer';

async function postgresObserver(appUrl: string): Promise<PostgresObserver> {
  const { url, pgbouncerAdminUrl } = postgresRoute(appUrl);
  const client = new Client({
    connectionString: url,
    application_name: OBSERVER_APPLICATION_NAME,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
  });
  await client.connect();
  const admin = pgbouncerAdminUrl === undefined ? undefined : new Client({ connectionString: pgbouncerAdminUrl });
  try {
    await admin?.connect();
  } catch (error) {
    await client.end();
    throw error;
  }
  const query = async <T>(sql: string, params?: unknown[]): Promise<T[]> => (await client.query(sql, params)).rows as T[];
  const backends = async (applicationName: string): Promise<Backend[]> =>
    admin === undefined
      ? query<Backend>(
          `SELECT pid, state, query, xact_start AS "xactStart", wait_event_type AS "waitEventType"
             FROM pg_stat_activity
            WHERE application_name = $1 AND datname = current_database() AND pid <> pg_backend_pid()
            ORDER BY pid`,
          [applicationName],
        )
      : pgbouncerClients(admin, query, applicationName);
  return {
    engine: 'postgres',
    query,
    close: async () => {
      await admin?.end();
      await client.end();
    },
    backends,
    async idleInTransactionCount(applicationName) {
      const all = await backends(applicationName);
      return all.filter((backend) => backend.state?.startsWith('idle in transaction')).length;
    },
  };
}

/**
 * The app's connections through PgBouncer: its client connections of `applicationName`. One that is
 * inside a transaction is linked to a server connection, whose `pg_stat_activity` row says what it
 * does; one that is not is idle, with no server connection (`pid` 0): in transaction pooling, its
 * next transaction may run on any of them.
 */
async function pgbouncerClients(
  admin: Client,
  query: <T>(sql: string, params?: unknown[]) => Promise<T[]>,
  applicationName: string,
): Promise<Backend[]> {
  // The admin console speaks the simple query protocol only: no parameters.
  const clients = (await admin.query('SHOW CLIENTS')).rows as Array<{
    database: string;
    state: string;
    link: string | null;
    application_name: string;
  }>;
  const servers = (await admin.query('SHOW SERVERS')).rows as Array<{ ptr: string; remote_pid: number | string }>;
  const serverPid = new Map(servers.map((server) => [server.ptr, Number(server.remote_pid)]));
  const mine = clients
    .filter((c) => c.application_name === applicationName && c.database !== 'pgbouncer')
    .map((c) => ({ waiting: c.state === 'waiting', pid: (c.link === null ? undefined : serverPid.get(c.link)) ?? 0 }));
  const linked = mine.map((c) => c.pid).filter((pid) => pid !== 0);
  const rows =
    linked.length === 0
      ? []
      : await query<Backend>(
          `SELECT pid, state, query, xact_start AS "xactStart", wait_event_type AS "waitEventType"
             FROM pg_stat_activity WHERE pid = ANY($1::int[])`,
          [linked],
        );
  const byPid = new Map(rows.map((row) => [row.pid, row]));
  return mine
    .map((c): Backend => {
      const row = byPid.get(c.pid);
      if (row !== undefined) return row;
      return {
        pid: 0,
        state: c.waiting ? 'waiting for a server connection' : 'idle',
        query: '',
        xactStart: null,
        waitEventType: null,
      };
    })
    .sort((a, b) => a.pid - b.pid);
}

async function mariadbObserver(url: string): Promise<MariadbObserver> {
  const connection: Connection = await createConnection({ uri: url, connectTimeout: CONNECT_TIMEOUT_MS });
  const defaults = new URL(url);
  const scope = (filter: ProcesslistFilter = {}): [string, string] => [
    filter.user ?? decodeURIComponent(defaults.username),
    filter.db ?? decodeURIComponent(defaults.pathname.slice(1)),
  ];
  const query = async <T>(sql: string, params?: unknown[]): Promise<T[]> => {
    const [rows] = await connection.query(sql, params);
    return rows as T[];
  };
  return {
    engine: 'mariadb',
    query,
    close: () => connection.end(),
    processlist: (filter) =>
      query<MariadbProcess & RowDataPacket>(
        `SELECT ID AS id, USER AS user, DB AS db, COMMAND AS command, STATE AS state, INFO AS info
           FROM information_schema.PROCESSLIST
          WHERE USER = ? AND DB <=> ? AND ID <> CONNECTION_ID()
          ORDER BY ID`,
        scope(filter),
      ),
    inTransactionCount: (filter) =>
      freshInnodbTrx(async () => {
        const [row] = await query<{ count: number | string }>(
          `SELECT COUNT(*) AS count
             FROM information_schema.INNODB_TRX t
             JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
            WHERE p.USER = ? AND p.DB <=> ? AND p.ID <> CONNECTION_ID()`,
          scope(filter),
        );
        return Number(row.count);
      }),
  };
}

// InnoDB serves information_schema.INNODB_TRX from a cache that it refreshes only when the previous
// read of it is more than 100 ms old, and every read restarts that clock: polled faster, the table
// never changes (measured on MariaDB 10.11: a committed transaction stayed listed for a whole second
// of reads 20 ms or 60 ms apart). So reads of it from this process are serialised and kept
// 120 ms apart, which makes each one current.
const INNODB_TRX_CACHE_MS = 120;
let innodbTrxQueue: Promise<unknown> = Promise.resolve();
let innodbTrxLastRead = 0;

function freshInnodbTrx<T>(read: () => Promise<T>): Promise<T> {
  const next = innodbTrxQueue.then(async () => {
    const wait = innodbTrxLastRead + INNODB_TRX_CACHE_MS - Date.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    try {
      return await read();
    } finally {
      innodbTrxLastRead = Date.now();
    }
  });
  innodbTrxQueue = next.catch(() => undefined);
  return next;
}
