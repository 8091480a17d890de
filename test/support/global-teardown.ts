import { EMBEDDED_POSTGRES_HANDLE } from './global-setup';
import type { EmbeddedPostgres } from './embedded-postgres';

/** Jest global teardown: stops the embedded PostgreSQL if the global setup started one. */
export default async function globalTeardown(): Promise<void> {
  const holder = globalThis as typeof globalThis & { [EMBEDDED_POSTGRES_HANDLE]?: EmbeddedPostgres };
  const embedded = holder[EMBEDDED_POSTGRES_HANDLE];
  if (embedded === undefined) return;
  delete holder[EMBEDDED_POSTGRES_HANDLE];
  await embedded.stop();
  process.stdout.write(`PostgreSQL: embedded PostgreSQL on port ${embedded.port} stopped\n`);
}
