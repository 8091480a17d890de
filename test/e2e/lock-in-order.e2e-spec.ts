import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, type EntityManager, type QueryRunner } from 'typeorm';
import { lockInOrder, TransactionalError, TransactionalModule, TransactionFinishedError, TransactionRunner } from '../../lib';
import { mariadbThreadIds } from '../support/app-connections';
import { isDeadlock } from '../support/database-errors';
import { type Engine, engines, typeormOptions } from '../support/databases';
import { Account, AccountPair, tableOf } from '../support/entities';
import { barrier, latch } from '../support/latch';
import { type MariadbObserver, type PostgresObserver, waitFor } from '../support/observer';
import { RecordingSqlLogger } from '../support/recording-loggers';
import { suiteApp, suiteObserver } from '../support/suite';

const ACCOUNTS_TABLE = tableOf(Account);
const PAIRS_TABLE = tableOf(AccountPair);

const applicationName = 'lock-in-order-e2e';
const POOL_SIZE = 10;
const ACCOUNTS = 10;
const START_BALANCE = 100;

/** The accounts' `SELECT … FOR UPDATE` (or shared lock) statements of one query runner, with their id. */
function lockStatements(log: RecordingSqlLogger, queryRunner: QueryRunner | undefined): Array<{ sql: string; id: unknown }> {
  return log
    .sent()
    .filter((q) => q.queryRunner === queryRunner && q.sql.includes(ACCOUNTS_TABLE) && /^\s*SELECT/i.test(q.sql))
    .map((q) => ({ sql: q.sql, id: q.parameters[0] }));
}

describe.each(engines)('lockInOrder on $name', (engine: Engine) => {
  const sqlLog = new RecordingSqlLogger();
  const db = suiteObserver(engine);
  const testApp = suiteApp(db, {
    applicationName,
    tables: [Account, AccountPair],
    app: () => ({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(
          typeormOptions(engine, { poolSize: POOL_SIZE, applicationName, entities: [Account, AccountPair], logger: sqlLog }),
        ),
        TransactionalModule.forRoot(),
      ],
    }),
  });
  let runner: TransactionRunner;
  let dataSource: DataSource;

  /** Table rows as the observer sees them, by id. */
  async function balances(): Promise<Map<number, number>> {
    const rows = await db.query<{ id: number; balance: number }>(`SELECT id, balance FROM ${ACCOUNTS_TABLE} ORDER BY id`);
    return new Map(rows.map((row) => [Number(row.id), Number(row.balance)]));
  }

  /** True once a connection of this app (no other client's) waits for a row lock on the accounts table. */
  async function someoneWaitsForARowLock(): Promise<boolean> {
    if (engine.name === 'postgres') {
      const waiting = (await (db as PostgresObserver).backends(applicationName)).filter(
        (b) => b.state === 'active' && b.waitEventType === 'Lock' && b.query.includes(ACCOUNTS_TABLE),
      );
      return waiting.length === 1;
    }
    // MariaDB shows a statement waiting for a row lock as still running it.
    const ours = new Set(mariadbThreadIds(dataSource));
    const waiting = (await (db as MariadbObserver).processlist()).filter(
      (p) =>
        ours.has(Number(p.id)) &&
        p.command === 'Query' &&
        p.info !== null &&
        p.info.includes(ACCOUNTS_TABLE) &&
        /FOR UPDATE/.test(p.info),
    );
    return waiting.length === 1;
  }

  beforeAll(() => {
    runner = testApp.get(TransactionRunner);
    dataSource = testApp.dataSource;
  });

  beforeEach(async () => {
    const values = Array.from({ length: ACCOUNTS }, (_, i) => `(${i + 1}, ${START_BALANCE})`).join(', ');
    await db.query(`INSERT INTO ${ACCOUNTS_TABLE} (id, balance) VALUES ${values}`);
    sqlLog.clear();
  });

  describe('given ids in any order, with duplicates and ids without a row', () => {
    it('returns each existing row once, keyed by id in ascending order, and leaves missing ids out', async () => {
      const rows = await runner.run((tx) => lockInOrder(tx, Account, [7, 3, 999, 3, 1, 7]));

      expect(rows).toBeInstanceOf(Map);
      expect([...rows.keys()]).toEqual([1, 3, 7]);
      expect(rows.has(999)).toBe(false);
      expect(rows.get(3)).toBeInstanceOf(Account);
      expect(rows.get(3)).toEqual({ id: 3, balance: START_BALANCE });
    });

    it.each([{ given: [5, 3, 1, 2] }, { given: [2, 5, 1, 3, 3, 5] }, { given: [10, 9, 8, 7, 6, 5, 4, 3, 2, 1] }])(
      'locks one row per statement in ascending id order inside the transaction, given $given',
      async ({ given }) => {
        let queryRunner: QueryRunner | undefined;

        await runner.run(async (tx) => {
          queryRunner = tx.queryRunner;
          await lockInOrder(tx, Account, given);
        });

        const expected = [...new Set(given)].sort((a, b) => a - b);
        const locks = lockStatements(sqlLog, queryRunner);
        expect(locks.map((lock) => Number(lock.id))).toEqual(expected);
        for (const lock of locks) expect(lock.sql).toMatch(/ FOR UPDATE$/);
        // All of them between the unit of work's BEGIN and its COMMIT, on its one connection.
        const statements = sqlLog.of(queryRunner);
        const begin = statements.findIndex((sql) => /^(BEGIN|START TRANSACTION)/.test(sql));
        const commit = statements.indexOf('COMMIT');
        const lockIndexes = statements.flatMap((sql, index) => (/FOR UPDATE/.test(sql) ? [index] : []));
        expect(begin).toBeGreaterThanOrEqual(0);
        expect(commit).toBeGreaterThan(begin);
        expect(lockIndexes).toHaveLength(expected.length);
        for (const index of lockIndexes) {
          expect(index).toBeGreaterThan(begin);
          expect(index).toBeLessThan(commit);
        }
      },
    );
  });

  describe('when a second transaction locks one of the rows', () => {
    it('waits until the first commits, then sees its write', async () => {
      const firstLocked = latch();
      const releaseFirst = latch();
      const first = runner.run(
        async (tx) => {
          const rows = await lockInOrder(tx, Account, [2, 1]);
          await tx.update(Account, { id: 1 }, { balance: rows.get(1)!.balance + 50 });
          firstLocked.resolve();
          await releaseFirst.promise;
        },
        { name: 'first locker' },
      );
      await firstLocked.promise;

      let secondLocked = false;
      const second = runner.run(
        async (tx) => {
          const rows = await lockInOrder(tx, Account, [1]);
          secondLocked = true;
          return rows.get(1)!.balance;
        },
        { name: 'second locker' },
      );

      // The database itself shows the second one waiting for the row lock while the first holds it.
      await waitFor(someoneWaitsForARowLock);
      expect(secondLocked).toBe(false);

      releaseFirst.resolve();
      await first;

      expect(await second).toBe(START_BALANCE + 50);
      expect(secondLocked).toBe(true);
      expect((await balances()).get(1)).toBe(START_BALANCE + 50);
    });
  });

  describe("with mode: 'share'", () => {
    it('takes shared locks (FOR SHARE on PostgreSQL, LOCK IN SHARE MODE on MariaDB), still in ascending order', async () => {
      let queryRunner: QueryRunner | undefined;

      const rows = await runner.run(async (tx) => {
        queryRunner = tx.queryRunner;
        return lockInOrder(tx, Account, [4, 2], { mode: 'share' });
      });

      expect([...rows.keys()]).toEqual([2, 4]);
      const locks = lockStatements(sqlLog, queryRunner);
      expect(locks.map((lock) => Number(lock.id))).toEqual([2, 4]);
      for (const lock of locks) {
        expect(lock.sql).toMatch(engine.name === 'postgres' ? / FOR SHARE$/ : / (LOCK IN SHARE MODE|FOR SHARE)$/);
        expect(lock.sql).not.toMatch(/FOR UPDATE/);
      }
    });

    it('lets another shared locker through while the first still holds its locks', async () => {
      const firstLocked = latch();
      const releaseFirst = latch();
      const first = runner.run(async (tx) => {
        await lockInOrder(tx, Account, [1, 2], { mode: 'share' });
        firstLocked.resolve();
        await releaseFirst.promise;
      });
      await firstLocked.promise;

      // Awaited while the first transaction is still open: shared locks do not wait for each other.
      const second = await runner.run((tx) => lockInOrder(tx, Account, [2, 3], { mode: 'share' }));

      expect([...second.keys()]).toEqual([2, 3]);
      releaseFirst.resolve();
      await first;
    });
  });

  describe('given a manager outside a transaction', () => {
    it('rejects with TransactionalError naming the entity and the fix, and sends no query', async () => {
      const attempt = lockInOrder(dataSource.manager, Account, [1, 2]);

      await expect(attempt).rejects.toThrow(TransactionalError);
      await expect(attempt).rejects.toThrow(
        /lockInOrder\(Account\) was given a manager outside a transaction.*Pass the manager from @Tx\(\), TransactionHost\.manager\(\) or TransactionRunner\.run\(\)/s,
      );
      expect(sqlLog.sent().filter((q) => q.sql.includes(ACCOUNTS_TABLE))).toEqual([]);
    });

    it('rejects the manager of a query runner that has no transaction open', async () => {
      const queryRunner = dataSource.createQueryRunner();
      try {
        await expect(lockInOrder(queryRunner.manager, Account, [1])).rejects.toThrow(
          /lockInOrder\(Account\) was given a manager outside a transaction/,
        );
      } finally {
        await queryRunner.release();
      }
    });
  });

  describe('given the manager of a unit of work that already ended', () => {
    it.each([
      { what: 'after it ran queries', queried: true },
      { what: 'before it ran any query', queried: false },
    ])('rejects with TransactionFinishedError, like any use of that manager ($what)', async ({ queried }) => {
      let kept: EntityManager | undefined;
      await runner.run(async (tx) => {
        kept = tx;
        if (queried) await tx.query('SELECT 1');
      });
      sqlLog.clear();

      const attempt = lockInOrder(kept!, Account, [1]);

      await expect(attempt).rejects.toThrow(TransactionFinishedError);
      await expect(attempt).rejects.toThrow(/already committed/);
      expect(sqlLog.sent()).toEqual([]);
    });
  });

  describe('given the manager of a savepoint (tx.transaction)', () => {
    it("locks on the unit of work's one connection, inside the savepoint", async () => {
      let outer: QueryRunner | undefined;
      let inner: QueryRunner | undefined;

      const rows = await runner.run((tx) => {
        outer = tx.queryRunner;
        return tx.transaction((savepoint) => {
          inner = savepoint.queryRunner;
          return lockInOrder(savepoint, Account, [2, 1]);
        });
      });

      expect([...rows.keys()]).toEqual([1, 2]);
      expect(inner).toBe(outer);
      const statements = sqlLog.of(outer);
      const savepoint = statements.findIndex((sql) => /^SAVEPOINT/.test(sql));
      const locks = statements.flatMap((sql, index) => (/FOR UPDATE/.test(sql) ? [index] : []));
      expect(savepoint).toBeGreaterThanOrEqual(0);
      expect(locks).toHaveLength(2);
      expect(Math.min(...locks)).toBeGreaterThan(savepoint);
    });
  });

  describe('given an entity with a composite primary key', () => {
    it('rejects with TransactionalError before locking anything', async () => {
      let caught: unknown;
      await runner.run(async (tx: EntityManager) => {
        caught = await lockInOrder(tx, AccountPair, [1]).catch((error: unknown) => error);
      });

      expect(caught).toBeInstanceOf(TransactionalError);
      expect(String((caught as Error).message)).toMatch(/lockInOrder\(AccountPair\): the entity has 2 primary columns/);
      expect(sqlLog.sent().filter((q) => q.sql.includes(PAIRS_TABLE))).toEqual([]);
    });
  });

  describe('when transfers A→B and B→A run concurrently', () => {
    const PAIRS = POOL_SIZE / 2;

    /** Pair i moves money between accounts 2i+1 and 2i+2, once in each direction. */
    function transfersOf(pair: number): Array<{ from: number; to: number; amount: number }> {
      const a = 2 * pair + 1;
      const b = 2 * pair + 2;
      return [
        { from: a, to: b, amount: 10 },
        { from: b, to: a, amount: 3 },
      ];
    }

    async function move(tx: EntityManager, from: Account, to: Account, amount: number): Promise<void> {
      await tx.update(Account, { id: from.id }, { balance: from.balance - amount });
      await tx.update(Account, { id: to.id }, { balance: to.balance + amount });
    }

    function lockOne(tx: EntityManager, id: number): Promise<Account> {
      return tx
        .createQueryBuilder(Account, 'account')
        .setLock('pessimistic_write')
        .where('account.id = :id', { id })
        .getOneOrFail();
    }

    it('deadlocks when each transfer locks its "from" row, then its "to" row', async () => {
      const results = await Promise.allSettled(
        Array.from({ length: PAIRS }, (_, pair) => {
          // Both transfers of a pair hold their first lock before either asks for its second.
          const bothHoldTheirFirstLock = barrier(2);
          return transfersOf(pair).map(({ from, to, amount }) =>
            runner.run(async (tx) => {
              const source = await lockOne(tx, from);
              await bothHoldTheirFirstLock.arrive();
              const target = await lockOne(tx, to);
              await move(tx, source, target, amount);
            }),
          );
        }).flat(),
      );

      const failures = results.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : []));
      // One victim per pair: the database breaks each A→B / B→A cycle by aborting one side.
      expect(failures.length).toBeGreaterThanOrEqual(1);
      expect(failures.filter(isDeadlock)).toHaveLength(failures.length);
      expect(failures).toHaveLength(PAIRS);
      const total = [...(await balances()).values()].reduce((sum, balance) => sum + balance, 0);
      expect(total).toBe(ACCOUNTS * START_BALANCE);
    });

    it('never deadlocks when both lock through lockInOrder, and every transfer commits with the total unchanged', async () => {
      const results = await Promise.allSettled(
        Array.from({ length: PAIRS }, (_, pair) => {
          // Both transfers of a pair have their transaction open before either starts locking.
          const bothStarted = barrier(2);
          return transfersOf(pair).map(({ from, to, amount }) =>
            runner.run(async (tx) => {
              await tx.query('SELECT 1');
              await bothStarted.arrive();
              const accounts = await lockInOrder(tx, Account, [from, to]);
              await move(tx, accounts.get(from)!, accounts.get(to)!, amount);
            }),
          );
        }).flat(),
      );

      const failures = results.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : []));
      expect(failures).toEqual([]);
      const after = await balances();
      for (let pair = 0; pair < PAIRS; pair++) {
        // +10 one way, -3 the other: both transfers of every pair applied.
        expect(after.get(2 * pair + 1)).toBe(START_BALANCE - 10 + 3);
        expect(after.get(2 * pair + 2)).toBe(START_BALANCE + 10 - 3);
      }
      expect([...after.values()].reduce((sum, balance) => sum + balance, 0)).toBe(ACCOUNTS * START_BALANCE);
    });
  });
});
