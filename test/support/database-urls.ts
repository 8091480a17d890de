// Where the test databases are, and probes that tell whether they answer.
// No Jest in here: Jest's global setup and the sample app import it.
import { createConnection, type RowDataPacket } from 'mysql2/promise';
import { Client } from 'pg';

/** PostgreSQL used when `DATABASE_URL` is not set (the machine's own server). */
export const DEFAULT_POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/test';

/** MariaDB/MySQL used when `MYSQL_URL` is not set (the machine's own server). */
export const DEFAULT_MYSQL_URL = 'mysql://root@127.0.0.1:3306/test';

/**
 * Probes give up after this long: a missing server must not stall the test run. A refused connection
 * fails at once; this bounds a server that does not answer, and leaves a busy machine, where setting
 * up a connection took seconds, the time it needs.
 */
export const PROBE_TIMEOUT_MS = 10_000;

/**
 * Longest setup of a connection the tests open themselves (observers, lock holders): far above what it
 * takes on an idle machine, as on a busy one it took seconds.
 */
export const CONNECT_TIMEOUT_MS = 20_000;

/** The value of an environment variable, with empty meaning unset (`DATABASE_URL= npm test`). */
export function envValue(name: string): string | undefined {
  const value = process.env[name];
  return value === undefined || value === '' ? undefined : value;
}

/** PostgreSQL URL of this run: `DATABASE_URL` (the global setup sets it, also to an embedded server), else the default. */
export function postgresUrl(): string {
  return envValue('DATABASE_URL') ?? DEFAULT_POSTGRES_URL;
}

/** MariaDB/MySQL URL of this run: `MYSQL_URL`, else the default. */
export function mysqlUrl(): string {
  return envValue('MYSQL_URL') ?? DEFAULT_MYSQL_URL;
}

/** The URL with its password replaced by `***`, for printing. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable URL)';
  }
}

/** Connects to PostgreSQL once and returns the server version, or throws why it could not. */
export async function probePostgres(url: string): Promise<string> {
  const client = new Client({
    connectionString: url,
    connectionTimeoutMillis: PROBE_TIMEOUT_MS,
    query_timeout: PROBE_TIMEOUT_MS,
    application_name: 'test-probe',
  });
  // A server that drops the connection after connect() emits 'error'; don't let it crash the run.
  client.on('error', () => undefined);
  try {
    await client.connect();
    const { rows } = await client.query<{ server_version: string }>('SHOW server_version');
    return rows[0].server_version;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Connects to MariaDB/MySQL once and returns the server version, or throws why it could not. */
export async function probeMysql(url: string): Promise<string> {
  const connection = await createConnection({ uri: url, connectTimeout: PROBE_TIMEOUT_MS });
  connection.on('error', () => undefined);
  try {
    const [rows] = await connection.query<Array<{ version: string } & RowDataPacket>>('SELECT VERSION() AS version');
    return rows[0].version;
  } finally {
    await connection.end().catch(() => undefined);
  }
}

/** The message of an unknown thrown value, for one-line reports. */
export function reasonOf(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) {
    // net.connect with several addresses reports an AggregateError with an empty message.
    return error.errors.map(reasonOf).join('; ');
  }
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    return error.message || code || error.name;
  }
  return String(error);
}
