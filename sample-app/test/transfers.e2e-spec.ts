import { engines, postgresEngine } from '../../test/support/databases';
import { call } from '../../test/support/http';
import { mariadbTransactionsOfApp } from '../../test/support/app-connections';
import { type MariadbObserver, observer, waitFor, type Observer } from '../../test/support/observer';
import {
  type AppUnderTest,
  tablesOf,
  balances,
  countRows,
  emptyTables,
  expectAppLeakedNothing,
  openAccount,
  startApp,
} from './harness';

describe('POST /transfers', () => {
  const engine = postgresEngine;
  const tables = tablesOf('sa_transfer_');
  let db: Observer;
  let library: AppUnderTest;

  beforeAll(async () => {
    library = await startApp(engine, tables, { variant: 'library', poolSize: 2, applicationName: 'wallet-transfers' });
    db = await observer(engine);
  });

  afterAll(async () => {
    await Promise.all([library?.close(), db?.close()]);
  });

  beforeEach(() => emptyTables(db, tables));

  afterEach(() => expectAppLeakedNothing(library, db));

  describe('a valid transfer', () => {
    it('debits the sender, credits the receiver and records one ledger entry', async () => {
      const alice = await openAccount(library, 'alice', 10_000);
      const bob = await openAccount(library, 'bob', 500);

      const reply = await call('POST', `${library.url}/transfers`, { from: alice, to: bob, amount: 2_500 });

      expect(reply).toMatchObject({ status: 201 });
      expect(reply.body).toMatchObject({ from: { id: alice, balance: 7_500 }, to: { id: bob, balance: 3_000 }, amount: 2_500 });
      expect(await balances(db, tables)).toEqual(
        new Map([
          [alice, 7_500],
          [bob, 3_000],
        ]),
      );
      const entries = await db.query<Record<string, unknown>>(`SELECT * FROM ${tables.ledgerEntries}`);
      expect(entries).toHaveLength(1);
      expect(entries[0]).toMatchObject({ fromAccountId: alice, toAccountId: bob, amount: 2_500 });
    });
  });

  describe('when the input is bad', () => {
    it.each([
      ['a negative amount', { from: 1, to: 2, amount: -5 }, 'amount must not be less than 1'],
      ['an amount over the limit', { from: 1, to: 2, amount: 100_000_001 }, 'amount must not be greater than 100000000'],
      ['an amount as a string', { from: 1, to: 2, amount: '5' }, 'amount must be a whole number (cents)'],
      ['a fractional amount', { from: 1, to: 2, amount: 1.5 }, 'amount must be a whole number (cents)'],
      ['a missing receiver', { from: 1, amount: 5 }, 'to must be a whole number'],
      ['the same account twice', { from: 1, to: 1, amount: 5 }, 'from and to must be different accounts, got 1 twice'],
      ['an unknown field', { from: 1, to: 2, amount: 5, currency: 'EUR' }, 'property currency should not exist'],
    ])('answers 400 to %s, naming the problem, and writes nothing', async (_case, body, problem) => {
      const alice = await openAccount(library, 'alice', 1_000);
      const bob = await openAccount(library, 'bob', 1_000);
      expect([alice, bob]).toEqual([1, 2]);

      const reply = await call('POST', `${library.url}/transfers`, body);

      expect(reply.status).toBe(400);
      expect(reply.body).toEqual({ statusCode: 400, error: 'Bad Request', message: [problem] });
      expect(await balances(db, tables)).toEqual(
        new Map([
          [alice, 1_000],
          [bob, 1_000],
        ]),
      );
      expect(await countRows(db, tables.ledgerEntries)).toBe(0);
    });

    it('answers 400 to a body that is not an object, and writes nothing', async () => {
      const reply = await call('POST', `${library.url}/transfers`, '[1,2]');

      expect(reply.status).toBe(400);
      expect(await countRows(db, tables.ledgerEntries)).toBe(0);
    });

    it('answers 404 for an account that does not exist, and writes nothing', async () => {
      const alice = await openAccount(library, 'alice', 1_000);

      const reply = await call('POST', `${library.url}/transfers`, { from: alice, to: 999, amount: 100 });

      expect(reply.status).toBe(404);
      expect(reply.body.message).toBe('Account 999 does not exist.');
      expect(await balances(db, tables)).toEqual(new Map([[alice, 1_000]]));
      expect(await countRows(db, tables.ledgerEntries)).toBe(0);
    });

    it('answers 422 when the sender cannot cover the amount, and rolls back', async () => {
      const alice = await openAccount(library, 'alice', 100);
      const bob = await openAccount(library, 'bob', 0);

      const reply = await call('POST', `${library.url}/transfers`, { from: alice, to: bob, amount: 101 });

      expect(reply.status).toBe(422);
      expect(reply.body.message).toBe(`Account ${alice} holds 100 cents and cannot send 101; nothing was transferred.`);
      expect(await balances(db, tables)).toEqual(
        new Map([
          [alice, 100],
          [bob, 0],
        ]),
      );
      expect(await countRows(db, tables.ledgerEntries)).toBe(0);
    });
  });
});

describe.each(engines)('concurrent transfers on $name', (engine) => {
  const tables = tablesOf('sa_race_');
  let db: Observer;
  let holderOfA: Observer;
  let holderOfB: Observer;
  let library: AppUnderTest;
  let naive: AppUnderTest;

  beforeAll(async () => {
    // One after the other: both create the tables (synchronize).
    library = await startApp(engine, tables, { variant: 'library', poolSize: 6, applicationName: 'wallet-transfers-library' });
    naive = await startApp(engine, tables, { variant: 'naive', poolSize: 6, applicationName: 'wallet-transfers-naive' });
    db = await observer(engine);
    holderOfA = await observer(engine);
    holderOfB = await observer(engine);
  });

  afterAll(async () => {
    await Promise.all([library?.close(), naive?.close(), db?.close(), holderOfA?.close(), holderOfB?.close()]);
  });

  beforeEach(() => emptyTables(db, tables));

  afterEach(async () => {
    // A test that failed half-way must not leave its locks behind for the next one.
    await Promise.all([holderOfA.query('ROLLBACK'), holderOfB.query('ROLLBACK')]);
    await expectAppLeakedNothing(library, db);
    await expectAppLeakedNothing(naive, db);
  });

  describe('when transfers A→B and B→A start at the same moment', () => {
    const PAIRS = 3;
    const START_BALANCE = 1_000;
    // INNODB_TRX is refreshed at most every 100 ms (see test/support/observer.ts).
    const poll = { intervalMs: engine.name === 'postgres' ? 20 : 150 };

    /**
     * Opens PAIRS pairs of accounts and starts A→B and B→A for each pair, in a controlled interleaving:
     * two outside transactions hold the A rows and the B rows; once every transfer waits for its first
     * lock, the B rows are let go (B→A takes B, then waits for A), then the A rows (A→B takes A, then
     * asks for B). Written naively, every pair is now a cycle; with lockInOrder there is none.
     */
    async function raceOppositeTransfers(app: AppUnderTest) {
      const pairs: Array<[number, number]> = [];
      for (let i = 0; i < PAIRS; i++) {
        pairs.push([await openAccount(library, `a${i}`, START_BALANCE), await openAccount(library, `b${i}`, START_BALANCE)]);
      }
      await lock(
        holderOfA,
        pairs.map(([a]) => a),
      );
      await lock(
        holderOfB,
        pairs.map(([, b]) => b),
      );

      const replies = Promise.all(
        pairs.flatMap(([a, b]) => [
          call('POST', `${app.url}/transfers`, { from: a, to: b, amount: 100 }),
          call('POST', `${app.url}/transfers`, { from: b, to: a, amount: 200 }),
        ]),
      );
      await waitFor(async () => expect(await lockWaits(app)).toEqual({ waiting: 2 * PAIRS, holdingARow: 0 }), poll);
      await holderOfB.query('COMMIT');
      // Naive: each B→A now holds its B and waits for A. lockInOrder: the B→A transfers lock the lower
      // id (their A) first, so they wait for it, holding nothing.
      const holding = app === naive ? PAIRS : 0;
      await waitFor(async () => expect(await lockWaits(app)).toEqual({ waiting: 2 * PAIRS, holdingARow: holding }), poll);
      await holderOfA.query('COMMIT');
      return { replies: await replies, ids: pairs.flat() };
    }

    async function lock(holder: Observer, ids: number[]): Promise<void> {
      await holder.query(engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION');
      // One primary-key lookup per row: a locking scan would lock (InnoDB) every row it reads.
      for (const id of ids) await holder.query(`SELECT id FROM ${tables.accounts} WHERE id = ${id} FOR UPDATE`);
    }

    /**
     * Transactions of `app` waiting for a row lock, and how many of those hold a row lock already. Only
     * the app's own connections count: other clients of the same server (other suites, other test runs
     * on other databases) wait for locks of their own at the same time.
     */
    async function lockWaits(app: AppUnderTest): Promise<{ waiting: number; holdingARow: number }> {
      if (engine.name === 'postgres') {
        // A transaction gets an xid when it first locks (or writes) a row.
        const [row] = await db.query<{ waiting: string; holding: string }>(
          `SELECT COUNT(*) AS waiting, COUNT(backend_xid) AS holding
             FROM pg_stat_activity
            WHERE application_name = $1 AND datname = current_database() AND wait_event_type = 'Lock'`,
          [app.applicationName],
        );
        return { waiting: Number(row.waiting), holdingARow: Number(row.holding) };
      }
      // INNODB_TRX does not name the application: the app's pooled connections are known by thread id.
      // trx_rows_locked counts the lock waited for too: above 1, the transaction holds one.
      const waiting = (await mariadbTransactionsOfApp(db as MariadbObserver, app.dataSource)).filter(
        (transaction) => transaction.state === 'LOCK WAIT',
      );
      return { waiting: waiting.length, holdingARow: waiting.filter((transaction) => transaction.rowsLocked > 1).length };
    }

    it('deadlocks when each transfer locks its sender first (naive variant)', async () => {
      const { replies, ids } = await raceOppositeTransfers(naive);

      const deadlocks = replies.filter((r) => r.status === 409 && r.body.reason === 'deadlock');
      const done = replies.filter((r) => r.status === 201);
      expect(deadlocks.length).toBeGreaterThan(0);
      expect(deadlocks.length + done.length).toBe(replies.length);
      for (const reply of deadlocks)
        expect(reply.body.driverCode).toBe(engine.name === 'postgres' ? '40P01' : 'ER_LOCK_DEADLOCK');
      // The database chose a victim in every pair: each pair's cycle is broken by one rollback.
      expect(deadlocks).toHaveLength(PAIRS);
      // A deadlocked transfer was rolled back whole; money is conserved.
      const after = await balances(db, tables);
      expect([...after.values()].reduce((sum, b) => sum + b, 0)).toBe(ids.length * START_BALANCE);
      expect(await countRows(db, tables.ledgerEntries)).toBe(done.length);
    });

    it('never deadlocks with lockInOrder, and conserves money', async () => {
      const { replies, ids } = await raceOppositeTransfers(library);

      expect(replies.map((r) => r.status)).toEqual(Array(2 * PAIRS).fill(201));
      const after = await balances(db, tables);
      expect([...after.values()].reduce((sum, b) => sum + b, 0)).toBe(ids.length * START_BALANCE);
      for (let i = 0; i < ids.length; i += 2) {
        // a→b 100, b→a 200: a gains 100, b loses 100.
        expect([after.get(ids[i]), after.get(ids[i + 1])]).toEqual([START_BALANCE + 100, START_BALANCE - 100]);
      }
      expect(await countRows(db, tables.ledgerEntries)).toBe(2 * PAIRS);
    });
  });
});
