import { DataSource } from 'typeorm';
import { describeMysql, engines, mysqlAvailable, postgresOnlyRun, typeormOptions } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { waitFor } from '../support/observer';
import { suiteObserver } from '../support/suite';

const ITEMS = tableOf(Item);
const applicationName = 'databases-e2e';

describe('the test databases', () => {
  it('include MariaDB whenever it is available (always on CI), except in the PostgreSQL-only PgBouncer run', () => {
    if (postgresOnlyRun()) {
      expect(engines.map((engine) => engine.name)).toEqual(['postgres']);
      return;
    }
    expect(engines.map((engine) => engine.name)).toEqual(mysqlAvailable() ? ['postgres', 'mariadb'] : ['postgres']);
    if (process.env.CI !== undefined && process.env.CI !== '') expect(mysqlAvailable()).toBe(true);
  });

  describe('PostgreSQL', () => {
    const db = suiteObserver('postgres');
    let dataSource: DataSource;

    beforeAll(async () => {
      dataSource = await new DataSource(
        typeormOptions('postgres', { poolSize: 1, applicationName, entities: [Item] }),
      ).initialize();
      // The table is shared: rows another suite left.
      await db.query(`DELETE FROM ${ITEMS}`);
    });

    afterEach(async () => {
      await db.query(`DELETE FROM ${ITEMS}`);
    });

    afterAll(async () => {
      if (dataSource?.isInitialized) await dataSource.destroy();
    });

    it('answers through the observer', async () => {
      const [row] = await db.query<{ answer: number }>('SELECT 40 + $1::int AS answer', [2]);

      expect(row.answer).toBe(42);
    });

    it("sees the app's connections by application_name, and the transaction each holds", async () => {
      expect(await db.backends(applicationName)).toHaveLength(1);

      const runner = dataSource.createQueryRunner();
      await runner.startTransaction();
      await runner.manager.insert(Item, { label: 'in a transaction' });

      expect(await db.idleInTransactionCount(applicationName)).toBe(1);
      expect(await db.query(`SELECT * FROM ${ITEMS}`)).toEqual([]);

      await runner.commitTransaction();
      await runner.release();

      expect(await db.idleInTransactionCount(applicationName)).toBe(0);
      expect(await db.query(`SELECT label FROM ${ITEMS}`)).toEqual([{ label: 'in a transaction' }]);
    });

    it('sees the connections go when the data source is destroyed', async () => {
      await dataSource.destroy();

      await waitFor(async () => expect(await db.backends(applicationName)).toEqual([]));
    });
  });

  describeMysql('MariaDB', () => {
    const db = suiteObserver('mariadb');
    let dataSource: DataSource;
    let before: number;

    beforeAll(async () => {
      before = (await db.processlist()).length;
      dataSource = await new DataSource(
        typeormOptions('mariadb', { poolSize: 1, applicationName, entities: [Item] }),
      ).initialize();
      await db.query(`DELETE FROM ${ITEMS}`);
    });

    afterEach(async () => {
      await db.query(`DELETE FROM ${ITEMS}`);
    });

    afterAll(async () => {
      if (dataSource?.isInitialized) await dataSource.destroy();
    });

    it('answers through the observer', async () => {
      const [row] = await db.query<{ answer: number }>('SELECT 40 + ? AS answer', [2]);

      expect(Number(row.answer)).toBe(42);
    });

    it("sees the app's connection and the transaction it holds", async () => {
      expect(await db.processlist()).toHaveLength(before + 1);

      const runner = dataSource.createQueryRunner();
      await runner.startTransaction();
      await runner.manager.insert(Item, { label: 'in a transaction' });

      // INNODB_TRX is a cache any reader of the server can keep stale (see test/support/observer.ts): polled.
      await waitFor(async () => expect(await db.inTransactionCount()).toBe(1));
      expect(await db.query(`SELECT * FROM ${ITEMS}`)).toEqual([]);

      await runner.commitTransaction();
      await runner.release();

      await waitFor(async () => expect(await db.inTransactionCount()).toBe(0));
      expect(await db.query(`SELECT label FROM ${ITEMS}`)).toEqual([{ label: 'in a transaction' }]);
    });

    it('sees the connection go when the data source is destroyed', async () => {
      await dataSource.destroy();

      await waitFor(async () => expect(await db.processlist()).toHaveLength(before));
    });
  });
});
