import { findPgbouncerBinary, PGBOUNCER_MISSING } from './pgbouncer';

/**
 * `describe` for suites that start a PgBouncer: skipped, loudly, on a machine without one, unless
 * `CI` is set (CI must run them: there the suite fails on the missing binary instead).
 */
export const describePgBouncer: jest.Describe =
  findPgbouncerBinary() !== undefined || process.env.CI !== undefined ? describe : describe.skip;

if (findPgbouncerBinary() === undefined && process.env.CI === undefined) {
  console.warn(`${PGBOUNCER_MISSING}: the PgBouncer suites are SKIPPED.`);
}
