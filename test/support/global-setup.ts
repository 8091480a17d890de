import { DEFAULT_POSTGRES_URL, envValue, mysqlUrl, probeMysql, probePostgres, reasonOf, redactUrl } from './database-urls';
import { startEmbeddedPostgres, type EmbeddedPostgres } from './embedded-postgres';
import { runSeed, seedLine } from './random';

/** Where the global setup leaves the embedded server for the global teardown (same process). */
export const EMBEDDED_POSTGRES_HANDLE = Symbol.for('nestjs-request-transaction.test.embedded-postgres');

type GlobalWithHandle = typeof globalThis & { [EMBEDDED_POSTGRES_HANDLE]?: EmbeddedPostgres };

/**
 * Jest global setup: finds PostgreSQL (or starts an embedded one) and MariaDB, and publishes
 * them through `process.env` (`DATABASE_URL`, `MYSQL_URL`, `MYSQL_AVAILABLE`), which the test
 * files (in band or in workers started after this) read through `test/support/databases.ts`.
 *
 * `EMBEDDED_POSTGRES=1` skips the local server and always starts an embedded one.
 *
 * It also fixes the seed of the random tests (`TEST_SEED`, drawn here when unset) and prints it.
 */
export default async function globalSetup(): Promise<void> {
  // Jest prints its first line without a trailing newline.
  process.stdout.write('\n');
  log(seedLine(runSeed()));
  const embedded = await setUpPostgres();
  // The PgBouncer run (TEST_ENGINES=postgres) repeats the PostgreSQL side only.
  if (envValue('TEST_ENGINES') === 'postgres') return;
  try {
    await setUpMysql();
  } catch (error) {
    // Jest skips the global teardown when the setup fails.
    await embedded?.stop();
    throw error;
  }
}

async function setUpPostgres(): Promise<EmbeddedPostgres | undefined> {
  const explicitUrl = envValue('DATABASE_URL');
  const forceEmbedded = envValue('EMBEDDED_POSTGRES') === '1';

  if (forceEmbedded && explicitUrl !== undefined) {
    throw new Error(
      `EMBEDDED_POSTGRES=1 and DATABASE_URL=${redactUrl(explicitUrl)} are both set. ` +
        'Unset one: EMBEDDED_POSTGRES=1 starts a throwaway server, DATABASE_URL uses yours.',
    );
  }

  if (!forceEmbedded) {
    const url = explicitUrl ?? DEFAULT_POSTGRES_URL;
    try {
      const version = await probePostgres(url);
      process.env.DATABASE_URL = url;
      log(`PostgreSQL: using DATABASE_URL=${redactUrl(url)} (server ${version})`);
      return undefined;
    } catch (error) {
      if (explicitUrl !== undefined) {
        throw new Error(
          `PostgreSQL at DATABASE_URL=${redactUrl(url)} does not answer: ${reasonOf(error)}. ` +
            'Start it, fix DATABASE_URL, or unset DATABASE_URL to use an embedded PostgreSQL.',
          { cause: error },
        );
      }
      log(`PostgreSQL: nothing answers at ${redactUrl(url)} (${reasonOf(error)}); starting an embedded one`);
    }
  }

  const embedded = await startEmbeddedPostgres();
  (globalThis as GlobalWithHandle)[EMBEDDED_POSTGRES_HANDLE] = embedded;
  process.env.DATABASE_URL = embedded.url;
  log(`PostgreSQL: embedded PostgreSQL started on port ${embedded.port} (DATABASE_URL=${redactUrl(embedded.url)})`);
  return embedded;
}

async function setUpMysql(): Promise<void> {
  const url = mysqlUrl();
  process.env.MYSQL_URL = url;
  try {
    const version = await probeMysql(url);
    process.env.MYSQL_AVAILABLE = '1';
    log(`MariaDB: using MYSQL_URL=${redactUrl(url)} (server ${version})`);
  } catch (error) {
    process.env.MYSQL_AVAILABLE = '0';
    const reason = `MariaDB at MYSQL_URL=${redactUrl(url)} does not answer: ${reasonOf(error)}`;
    if (envValue('CI') !== undefined) {
      throw new Error(`${reason}. CI must run the MariaDB tests: start MariaDB before the tests (.ci/run does).`, {
        cause: error,
      });
    }
    log('');
    log('!'.repeat(100));
    log(`!!! ${reason}.`);
    log('!!! THE MARIADB TESTS ARE SKIPPED. Start MariaDB or set MYSQL_URL to run them (CI always does).');
    log('!'.repeat(100));
    log('');
  }
}

function log(line: string): void {
  process.stdout.write(`${line}\n`);
}
