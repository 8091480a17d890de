// Shared by the sample app's e2e suites: boot it the way `npm start` does, look at its database from
// outside, and check that nothing leaked. HTTP calls and latches come from test/support/.
import { ACQUIRE_TIMEOUT_MS, type Engine } from '../../test/support/databases';
import { call } from '../../test/support/http';
import { expectNothingLeaked } from '../../test/support/leaks';
import type { Observer } from '../../test/support/observer';
import { bootstrap, type SampleApp } from '../src/bootstrap';
import { type Variant, VARIANT_MODULES } from '../demo/naive/variant';

/** The app's tables, under a suite's own prefix (`bootstrap({ tablePrefix })`). */
export interface Tables {
  prefix: string;
  accounts: string;
  ledgerEntries: string;
  webhooks: string;
  deliveries: string;
  people: string;
  auditLog: string;
}

/** The tables of an app started with `tablePrefix: prefix`. Each suite has its own prefix. */
export function tablesOf(prefix: string): Tables {
  const table = (name: string) => `${prefix}wallet_${name}`;
  return {
    prefix,
    accounts: table('accounts'),
    ledgerEntries: table('ledger_entries'),
    webhooks: table('webhooks'),
    deliveries: table('webhook_deliveries'),
    people: table('people'),
    auditLog: table('audit_log'),
  };
}

/** A sample app under test, and the name its connections carry. */
export interface AppUnderTest extends SampleApp {
  applicationName: string;
}

/** Starts the sample app through `bootstrap()`, silent, on `engine`, with the suite's tables. */
export async function startApp(
  engine: Engine,
  tables: Tables,
  options: { variant: Variant; poolSize: number; applicationName: string; acquireTimeoutMs?: number },
): Promise<AppUnderTest> {
  const sample = await bootstrap({
    databaseUrl: engine.url,
    module: VARIANT_MODULES[options.variant],
    poolSize: options.poolSize,
    acquireTimeoutMs: options.acquireTimeoutMs ?? ACQUIRE_TIMEOUT_MS,
    applicationName: options.applicationName,
    tablePrefix: tables.prefix,
    logger: false,
  });
  return { ...sample, applicationName: options.applicationName };
}

/** Deletes every row of the app's tables (and restarts the ids). */
export async function emptyTables(db: Observer, tables: Tables): Promise<void> {
  const { prefix: _prefix, ...names } = tables;
  if (db.engine === 'postgres') {
    await db.query(`TRUNCATE ${Object.values(names).join(', ')} RESTART IDENTITY`);
  } else {
    for (const table of Object.values(names)) await db.query(`TRUNCATE TABLE ${table}`);
  }
}

/**
 * Waits until the app holds no connection but idle pooled ones: pool back to idle, nobody waiting,
 * and no transaction left open on the database side (see `expectNothingLeaked` in test/support/leaks.ts).
 */
export async function expectAppLeakedNothing(sample: AppUnderTest, db: Observer): Promise<void> {
  await expectNothingLeaked({ dataSource: sample.dataSource, db, applicationName: sample.applicationName });
}

/** Opens an account through the app and returns its id. */
export async function openAccount(sample: SampleApp, owner: string, balance: number): Promise<number> {
  const reply = await call<{ id: number }>('POST', `${sample.url}/accounts`, { owner, balance });
  if (reply.status !== 201) throw new Error(`POST /accounts answered ${reply.status}: ${JSON.stringify(reply.body)}`);
  return reply.body.id;
}

/** Balances by account id, read by the observer. */
export async function balances(db: Observer, tables: Tables): Promise<Map<number, number>> {
  const rows = await db.query<{ id: number | string; balance: number | string }>(`SELECT id, balance FROM ${tables.accounts}`);
  return new Map(rows.map((row) => [Number(row.id), Number(row.balance)]));
}

/** Rows in `table`, counted by the observer. */
export async function countRows(db: Observer, table: string): Promise<number> {
  const [row] = await db.query<{ count: number | string }>(`SELECT COUNT(*) AS count FROM ${table}`);
  return Number(row.count);
}
