import globalTeardown from './global-teardown';
import type { PgBouncer } from './pgbouncer';
import { PGBOUNCER_HANDLE } from './pgbouncer-global-setup';

/** Jest global teardown of the PgBouncer run: stops PgBouncer, then what the normal teardown stops. */
export default async function pgbouncerGlobalTeardown(): Promise<void> {
  const holder = globalThis as typeof globalThis & { [PGBOUNCER_HANDLE]?: PgBouncer };
  const bouncer = holder[PGBOUNCER_HANDLE];
  delete holder[PGBOUNCER_HANDLE];
  try {
    if (bouncer !== undefined) {
      await bouncer.stop();
      process.stdout.write(`PgBouncer: stopped (port ${bouncer.port})\n`);
    }
  } finally {
    await globalTeardown();
  }
}
