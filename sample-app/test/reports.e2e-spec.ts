import { postgresEngine } from '../../test/support/databases';
import { call } from '../../test/support/http';
import { latch } from '../../test/support/latch';
import { observer, type Observer } from '../../test/support/observer';
import type { BalanceReport } from '../src/reports/reports.service';
import { ReportsService } from '../src/reports/reports.service';
import { type AppUnderTest, balances, tablesOf, emptyTables, expectAppLeakedNothing, openAccount, startApp } from './harness';

describe('GET /reports/balances while transfers commit', () => {
  const engine = postgresEngine;
  const tables = tablesOf('sa_report_');
  let db: Observer;
  let library: AppUnderTest;
  let naive: AppUnderTest;

  beforeAll(async () => {
    library = await startApp(engine, tables, { variant: 'library', poolSize: 4, applicationName: 'wallet-reports-library' });
    naive = await startApp(engine, tables, { variant: 'naive', poolSize: 4, applicationName: 'wallet-reports-naive' });
    db = await observer(engine);
  });

  afterAll(async () => {
    await Promise.all([library?.close(), naive?.close(), db?.close()]);
  });

  beforeEach(() => emptyTables(db, tables));

  afterEach(async () => {
    for (const sample of [library, naive]) sample.app.get(ReportsService).betweenReads = async () => undefined;
    await expectAppLeakedNothing(library, db);
    await expectAppLeakedNothing(naive, db);
  });

  /**
   * Reads the report of accounts A and B on `app`, holding it after its first read while a transfer
   * of 300 from A to B commits; returns the report and the balances the database holds afterwards.
   */
  async function reportAcrossATransfer(app: AppUnderTest) {
    const a = await openAccount(app, 'a', 1_000);
    const b = await openAccount(app, 'b', 1_000);
    const firstReadDone = latch();
    const transferCommitted = latch();
    app.app.get(ReportsService).betweenReads = async () => {
      firstReadDone.resolve();
      await transferCommitted.promise;
    };

    const report = call<BalanceReport>('GET', `${app.url}/reports/balances?accounts=${a},${b}`);
    await firstReadDone.promise;
    const transfer = await call('POST', `${app.url}/transfers`, { from: a, to: b, amount: 300 });
    expect(transfer.status).toBe(201);
    transferCommitted.resolve();

    const reply = await report;
    expect(reply.status).toBe(200);
    return { a, b, report: reply.body, stored: await balances(db, tables) };
  }

  describe('in a snapshot (REPEATABLE READ, read only)', () => {
    it('adds up: every read sees the database as of the first one', async () => {
      const { a, b, report, stored } = await reportAcrossATransfer(library);

      expect(stored).toEqual(
        new Map([
          [a, 700],
          [b, 1_300],
        ]),
      );
      expect(report.accounts.map((account) => account.balance)).toEqual([1_000, 1_000]);
      expect(report.total).toBe(2_000);
    });

    it('adds up in every report read while transfers run', async () => {
      const ids: number[] = [];
      for (let i = 0; i < 4; i++) ids.push(await openAccount(library, `owner${i}`, 1_000));

      const transfers = Array.from({ length: 40 }, (_, i) =>
        // Every direction between the four accounts (the step is 1 to 3, never 0).
        call('POST', `${library.url}/transfers`, { from: ids[i % 4], to: ids[(i + 1 + (i % 3)) % 4], amount: 10 + i }),
      );
      const reports = Array.from({ length: 20 }, () =>
        call<BalanceReport>('GET', `${library.url}/reports/balances?accounts=${ids.join(',')}`),
      );

      expect((await Promise.all(transfers)).map((r) => r.status)).toEqual(Array(40).fill(201));
      const totals = (await Promise.all(reports)).map((r) => r.body.total);
      expect(totals).toEqual(Array(20).fill(4_000));
      expect([...(await balances(db, tables)).values()].reduce((sum, balance) => sum + balance, 0)).toBe(4_000);
    });
  });

  describe('without a snapshot (READ COMMITTED, naive variant)', () => {
    it('shows a transfer committed between two reads half-done: the total is off', async () => {
      const { a, b, report, stored } = await reportAcrossATransfer(naive);

      expect(stored).toEqual(
        new Map([
          [a, 700],
          [b, 1_300],
        ]),
      );
      // A read before the transfer, B after it: 300 cents that exist twice.
      expect(report.accounts.map((account) => account.balance)).toEqual([1_000, 1_300]);
      expect(report.total).toBe(2_300);
    });
  });

  it('answers 400 to a malformed account list', async () => {
    const reply = await call('GET', `${library.url}/reports/balances?accounts=1,two`);

    expect(reply.status).toBe(400);
    expect(reply.body.message).toEqual([
      'accounts must be a comma-separated list of 1 to 100 account ids, e.g. ?accounts=1,2; got "1,two"',
    ]);
  });
});
