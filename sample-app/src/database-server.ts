import { startEmbeddedPostgres } from '../../test/support/embedded-postgres';
import { redactUrl } from './database';

/** The database the app runs on: `DATABASE_URL`'s, or an embedded PostgreSQL started for it. */
export interface DatabaseServer {
  url: string;
  /** For printing: the URL without its password, or "embedded PostgreSQL on port N". */
  label: string;
  /** Stops the embedded server and deletes its files; nothing for `DATABASE_URL`'s. Safe to call twice. */
  stop(): Promise<void>;
}

/** Signals on which the caller stops the server (see {@link startDatabaseServer}). */
export const STOP_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/**
 * `DATABASE_URL` when set (and not empty); otherwise starts an embedded PostgreSQL (real server
 * binaries from the `embedded-postgres` package, a fresh data directory, a free port).
 *
 * The caller owns the signals: embedded-postgres stops its servers on SIGINT/SIGTERM/SIGHUP by itself and
 * exits the process as soon as they are down, racing the caller's own orderly stop (app first, files
 * deleted). Its listeners are removed here; install yours before calling this, and call `stop()`.
 */
export async function startDatabaseServer(): Promise<DatabaseServer> {
  const url = process.env.DATABASE_URL || undefined;
  if (url !== undefined) return { url, label: redactUrl(url), stop: async () => undefined };

  const ours = new Map(STOP_SIGNALS.map((signal) => [signal, process.listeners(signal)]));
  const embedded = await startEmbeddedPostgres();
  for (const signal of STOP_SIGNALS) {
    for (const listener of process.listeners(signal)) {
      if (!ours.get(signal)?.includes(listener)) process.removeListener(signal, listener);
    }
  }
  return { url: embedded.url, label: `embedded PostgreSQL on port ${embedded.port}`, stop: () => embedded.stop() };
}
