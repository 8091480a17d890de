// PgBouncer in front of a PostgreSQL server, for the tests that run the library through it.
// No Jest in here: the PgBouncer global setup imports it.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { freePort } from './embedded-postgres';

/** Where Debian's `pgbouncer` package installs the binary, when it is not on `PATH`. */
const DEBIAN_BINARY = '/usr/sbin/pgbouncer';

/** Options of {@link startPgBouncer}. */
export interface PgBouncerOptions {
  /** The PostgreSQL server PgBouncer connects to, as a URL; its user and password log PgBouncer in. */
  upstreamUrl: string;
  /** `transaction` (the mode this library must work in) or `session`. Default: `transaction`. */
  poolMode?: 'transaction' | 'session';
  /** Server connections per database and user. Default: 20. */
  poolSize?: number;
  /** Client connections accepted. Default: 1000. */
  maxClients?: number;
}

/** A running PgBouncer and the way to get rid of it. */
export interface PgBouncer {
  /** URL of `database` through PgBouncer (any user and password are accepted). */
  url(database?: string): string;
  /** URL of PgBouncer's admin console (the `pgbouncer` database: `SHOW CLIENTS`, `SHOW SERVERS`, …). */
  adminUrl: string;
  port: number;
  /** Stops PgBouncer (closing every client connection) and deletes its files. Safe to call twice. */
  stop(): Promise<void>;
}

/** The `pgbouncer` binary: on `PATH`, or Debian's; undefined when there is none. */
export function findPgbouncerBinary(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir !== '' && existsSync(join(dir, 'pgbouncer'))) return join(dir, 'pgbouncer');
  }
  return existsSync(DEBIAN_BINARY) ? DEBIAN_BINARY : undefined;
}

/** What to tell someone whose machine has no PgBouncer. */
export const PGBOUNCER_MISSING = 'pgbouncer is not installed: apt-get install -y pgbouncer (.ci/run installs it)';

/** The `pgbouncer` binary. Throws how to install it when there is none. */
export function pgbouncerBinary(): string {
  const binary = findPgbouncerBinary();
  if (binary === undefined) throw new Error(`${PGBOUNCER_MISSING}.`);
  return binary;
}

const START_TIMEOUT_MS = 10_000;

/**
 * Starts PgBouncer on a free 127.0.0.1 port in front of `upstreamUrl`, with its config in a
 * temporary directory, clients accepted without a password (`auth_type = any`: PgBouncer logs in to
 * the server with the upstream URL's user and password), and resolves once a query goes through it.
 *
 * @example
 * const bouncer = await startPgBouncer({ upstreamUrl: postgresUrl() });
 * const url = bouncer.url('test');
 * // …
 * await bouncer.stop();
 */
export async function startPgBouncer(options: PgBouncerOptions): Promise<PgBouncer> {
  const binary = pgbouncerBinary();
  const upstream = new URL(options.upstreamUrl);
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'nestjs-request-transaction-pgbouncer-'));
  // PgBouncer refuses to run as root: it then runs as another user (-u), which must read its config.
  await chmod(dir, 0o755);
  const server = [
    `host=${upstream.hostname}`,
    `port=${upstream.port || '5432'}`,
    `user=${decodeURIComponent(upstream.username || 'postgres')}`,
    ...(upstream.password ? [`password=${decodeURIComponent(upstream.password)}`] : []),
  ].join(' ');
  const config = [
    '[databases]',
    // Every database name a client asks for, on the upstream server, as the upstream user.
    `* = ${server}`,
    '',
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    // TCP only: no socket file in /tmp to collide with another PgBouncer's.
    'unix_socket_dir =',
    'auth_type = any',
    `admin_users = ${decodeURIComponent(upstream.username || 'postgres')}`,
    `pool_mode = ${options.poolMode ?? 'transaction'}`,
    `default_pool_size = ${options.poolSize ?? 20}`,
    `max_client_conn = ${options.maxClients ?? 1000}`,
    // node-postgres sends none of the parameters PgBouncer rejects; other clients (psql, JDBC) might.
    'ignore_startup_parameters = extra_float_digits',
    // After a failed server login (the server restarting), try again after 1 s rather than 15.
    'server_login_retry = 1',
    '',
  ].join('\n');
  const configFile = join(dir, 'pgbouncer.ini');
  await writeFile(configFile, config, { mode: 0o644 });

  const args = userInfo().uid === 0 ? ['-u', runAsUser(), configFile] : [configFile];
  const output: string[] = [];
  const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const keep = (chunk: Buffer) => {
    output.push(chunk.toString('utf8'));
    if (output.length > 200) output.shift();
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    try {
      await terminate(child, exited);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };

  const url = (database = 'test') => `postgres://postgres@127.0.0.1:${port}/${database}`;
  try {
    await answers(url(upstream.pathname.slice(1) || 'postgres'), exited);
  } catch (error) {
    await stop().catch(() => undefined);
    throw new Error(
      `PgBouncer (${binary}, port ${port}) did not start: ${(error as Error).message}\n` +
        `Its output:\n${output.join('').trim() || '(none)'}`,
      { cause: error },
    );
  }
  return { url, adminUrl: `postgres://postgres@127.0.0.1:${port}/pgbouncer`, port, stop };
}

/** The unprivileged user PgBouncer runs as when started by root. */
function runAsUser(): string {
  try {
    if (/^postgres:/m.test(readFileSync('/etc/passwd', 'utf8'))) return 'postgres';
  } catch {
    // No /etc/passwd to read: nobody exists everywhere.
  }
  return 'nobody';
}

/** Resolves once `SELECT 1` goes through PgBouncer to the server; rejects if PgBouncer exits. */
async function answers(url: string, exited: Promise<void>): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  let gone = false;
  void exited.then(() => {
    gone = true;
  });
  let last: unknown;
  while (Date.now() < deadline) {
    if (gone) throw new Error('the process exited');
    const client = new Client({ connectionString: url, connectionTimeoutMillis: 1000, application_name: 'test-probe' });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      return;
    } catch (error) {
      last = error;
    } finally {
      await client.end().catch(() => undefined);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`no query went through within ${START_TIMEOUT_MS} ms (${(last as Error)?.message ?? 'no attempt'})`);
}

/** SIGTERM (PgBouncer's immediate shutdown), then SIGKILL if it is still there after 5 s. */
async function terminate(child: ChildProcess, exited: Promise<void>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const killed = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      child.kill('SIGKILL');
      resolve();
    }, 5000);
  });
  try {
    await Promise.race([exited, killed.then(() => exited)]);
  } finally {
    clearTimeout(timer);
  }
}
