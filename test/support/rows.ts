/** Rows as another connection sees them, read through an observer, with each engine's placeholders. */
import type { EngineName } from './databases';
import type { Observer } from './observer';

/** `$n` on PostgreSQL, `?` on MariaDB. */
export function placeholder(engine: EngineName, n: number): string {
  return engine === 'postgres' ? `$${n}` : '?';
}

/** Rows of `table` whose `column` equals `value`. */
export async function rowsWhere(db: Observer, table: string, column: string, value: string): Promise<unknown[]> {
  return db.query(`SELECT * FROM ${table} WHERE ${column} = ${placeholder(db.engine, 1)}`, [value]);
}

/** Labels of the rows of `table`, sorted. */
export async function labelsIn(db: Observer, table: string): Promise<string[]> {
  const rows = await db.query<{ label: string }>(`SELECT label FROM ${table} ORDER BY label`);
  return rows.map((row) => row.label);
}
