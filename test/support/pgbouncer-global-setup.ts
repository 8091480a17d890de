import { redactUrl } from './database-urls';
import globalSetup from './global-setup';
import { startPgBouncer, type PgBouncer } from './pgbouncer';

/** Where this setup leaves PgBouncer for the PgBouncer global teardown (same process). */
export const PGBOUNCER_HANDLE = Symbol.for('nestjs-request-transaction.test.pgbouncer');

type GlobalWithHandle = typeof globalThis & { [PGBOUNCER_HANDLE]?: PgBouncer };

/**
 * Jest global setup of the PgBouncer run (`jest.pgbouncer.config.ts`): finds PostgreSQL as the
 * normal run does (or starts an embedded one), starts PgBouncer in transaction-pooling mode in front
 * of it, and points the suites at PgBouncer:
 *
 * - `DATABASE_URL`: PgBouncer; every data source of every suite connects through it.
 * - `DATABASE_DIRECT_URL`: the server itself; observers connect there (see `test/support/observer.ts`).
 * - `PGBOUNCER_ADMIN_URL`: PgBouncer's admin console, where observers find the app's client connections.
 * - `TEST_ENGINES=postgres`: MariaDB has no PgBouncer; its side of the suites ran in the normal run.
 */
export default async function pgbouncerGlobalSetup(): Promise<void> {
  process.env.TEST_ENGINES = 'postgres';
  await globalSetup();
  const direct = process.env.DATABASE_URL as string;
  const bouncer = await startPgBouncer({ upstreamUrl: direct, poolMode: 'transaction', poolSize: 20 });
  (globalThis as GlobalWithHandle)[PGBOUNCER_HANDLE] = bouncer;
  const database = new URL(direct).pathname.slice(1) || 'test';
  process.env.DATABASE_DIRECT_URL = direct;
  process.env.DATABASE_URL = bouncer.url(database);
  process.env.PGBOUNCER_ADMIN_URL = bouncer.adminUrl;
  process.stdout.write(
    `PgBouncer: transaction pooling on port ${bouncer.port} in front of ${redactUrl(direct)}; ` +
      `the PostgreSQL suites run through DATABASE_URL=${redactUrl(process.env.DATABASE_URL)}\n`,
  );
}
