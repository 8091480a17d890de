/** The database errors the suites tell apart, whatever TypeORM or the library wrapped them in. */

/** Whether `error` (or an error it wraps) is the database's deadlock error: PostgreSQL 40P01, MariaDB 1213. */
export function isDeadlock(error: unknown): boolean {
  for (
    let e = error as { driverError?: unknown; cause?: unknown; code?: unknown; errno?: unknown } | undefined, i = 0;
    e && i < 5;
    i++
  ) {
    if (e.code === '40P01' || e.errno === 1213) return true;
    e = (e.driverError ?? e.cause) as typeof e;
  }
  return false;
}
