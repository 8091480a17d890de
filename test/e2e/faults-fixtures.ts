// Shared by the faults-* suites: server connections killed from outside, and the checks around them.
// Latches, the leak check and the observers are in test/support/.
import type { EngineName } from '../support/databases';
import { DEFAULT_WAIT_MS, type Observer, waitFor } from '../support/observer';

/**
 * Ends a server connection from outside, as an administrator or a failover would: PostgreSQL
 * `pg_terminate_backend(pid)`, MariaDB `KILL id`. Resolves once the server no longer lists it.
 */
export async function killConnection(db: Observer, id: number): Promise<void> {
  if (db.engine === 'postgres') {
    const [row] = await db.query<{ killed: boolean }>('SELECT pg_terminate_backend($1) AS killed', [id]);
    if (row?.killed !== true) throw new Error(`pg_terminate_backend(${id}) found no such backend`);
  } else {
    await db.query(`KILL ${Number(id)}`);
  }
  await waitFor(async () => !(await connectionListed(db, id)), { intervalMs: 10 }).catch((error: unknown) => {
    throw new Error(`connection ${id} was still listed ${DEFAULT_WAIT_MS} ms after it was killed`, { cause: error });
  });
}

/** Whether the server still lists connection `id` (pg_stat_activity / PROCESSLIST). */
export async function connectionListed(db: Observer, id: number): Promise<boolean> {
  const rows =
    db.engine === 'postgres'
      ? await db.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [id])
      : await db.query('SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = ?', [id]);
  return rows.length > 0;
}

/** What the statement running on connection `id` is, or null when it runs none (or is gone). */
export async function runningStatement(db: Observer, id: number): Promise<string | null> {
  if (db.engine === 'postgres') {
    const [row] = await db.query<{ state: string; query: string }>('SELECT state, query FROM pg_stat_activity WHERE pid = $1', [
      id,
    ]);
    return row?.state === 'active' ? row.query : null;
  }
  const [row] = await db.query<{ info: string | null }>('SELECT INFO AS info FROM information_schema.PROCESSLIST WHERE ID = ?', [
    id,
  ]);
  return row?.info ?? null;
}

/** The error a killed connection's running statement fails with: PostgreSQL 57P01; MariaDB 1927 (or the lost socket). */
export function killedStatementError(engine: EngineName): RegExp {
  return engine === 'postgres'
    ? /terminating connection due to administrator command/
    : /Connection was killed|Connection lost|closed state|server closed the connection/i;
}
