import { Controller, Post } from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import { TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, type DataSourceOptions, type EntityManager } from 'typeorm';
import {
  lockInOrder,
  Transactional,
  TransactionalError,
  TransactionalModule,
  TransactionalOptionsError,
  type TransactionOptions,
  TransactionRunner,
  Tx,
} from '../../lib';
import { type AdapterName, adapters } from '../support/app';
import { type Engine, type EngineName, engines, typeormOptions } from '../support/databases';
import { Account, Item, tableOf } from '../support/entities';
import { call } from '../support/http';
import { type Observer, type PostgresObserver, waitFor } from '../support/observer';
import { RecordingNestLogger, RecordingSqlLogger } from '../support/recording-loggers';
import { suiteApp, suiteObserver } from '../support/suite';

const ENTITIES = [Account, Item];
const ACCOUNTS = tableOf(Account);
const ITEMS = tableOf(Item);
/** A table the tampered options try to create: it must never exist. */
const INJECTED = 'bad_input_injected';
const MAX_MS = 2_147_483_647;
const REPORTS = 'bad_input_reports';

/** Changes every option of a `@Transactional()` options object to a value that would reach the SQL as it is. */
function tamper(options: TransactionOptions): void {
  const o = options as Record<string, unknown>;
  o.timeoutMs = `0; CREATE TABLE ${INJECTED} (id int)`;
  o.isolationLevel = `READ COMMITTED; CREATE TABLE ${INJECTED} (id int)`;
  o.readOnly = true;
  (o.retry as Record<string, unknown>).attempts = 'many';
}

async function tableExists(db: Observer, table: string): Promise<boolean> {
  const rows = await db.query<{ n: number | string }>(
    db.engine === 'postgres'
      ? 'SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_name = $1'
      : 'SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_name = ? AND table_schema = DATABASE()',
    [table],
  );
  return Number(rows[0].n) > 0;
}

/** The timeout the session runs with, inside the transaction, in milliseconds. */
async function sessionTimeoutMs(tx: EntityManager, engine: EngineName): Promise<number> {
  if (engine === 'postgres') {
    const [row] = await tx.query<Array<{ setting: string }>>(`SELECT setting FROM pg_settings WHERE name = 'statement_timeout'`);
    return Number(row.setting);
  }
  const [row] = await tx.query<Array<{ seconds: number | string }>>('SELECT @@max_statement_time AS seconds');
  return Math.round(Number(row.seconds) * 1000);
}

/** Expects `attempt` to reject with `type`, its message matching `message`. */
async function expectRejection(
  attempt: Promise<unknown>,
  type: new (...args: never[]) => Error,
  message: string | RegExp,
): Promise<Error> {
  const error = await attempt.then(
    () => undefined,
    (rejection: unknown) => rejection,
  );
  expect(error).toBeInstanceOf(type);
  if (typeof message === 'string') expect((error as Error).message).toBe(message);
  else expect((error as Error).message).toMatch(message);
  return error as Error;
}

describe.each(engines)('bad input gets a clear error, never SQL, on $name', (engine: Engine) => {
  const applicationName = `bad-input-e2e-${engine.name}`;
  // Declared before the observer: after-hooks run in the order they were declared, so it is still open.
  afterAll(async () => {
    // Only there if the options of a route reached the SQL.
    await db.query(`DROP TABLE IF EXISTS ${INJECTED}`);
  });
  const db = suiteObserver(engine);

  describe.each(adapters)('a @Transactional() options object changed after the declaration, on %s', (adapter: AdapterName) => {
    const sqlLog = new RecordingSqlLogger();
    const routeOptions: TransactionOptions = {
      timeoutMs: 1500,
      isolationLevel: 'READ COMMITTED',
      readOnly: false,
      retry: { attempts: 1 },
    };
    const testApp = suiteApp(db, {
      applicationName,
      tables: [Item],
      app: () => {
        @Controller('bad-input')
        class TamperedController {
          @Post('write')
          @Transactional(routeOptions)
          async write(@Tx() tx: EntityManager) {
            await tx.insert(Item, { label: `route on ${adapter}` });
            return { timeoutMs: await sessionTimeoutMs(tx, engine.name) };
          }
        }
        // Between the declaration and the bootstrap, where the routes read their options.
        tamper(routeOptions);
        return {
          adapter,
          controllers: [TamperedController],
          imports: [
            TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 2, applicationName, entities: ENTITIES, logger: sqlLog })),
            TransactionalModule.forRoot(),
          ],
        };
      },
    });

    beforeEach(() => {
      sqlLog.clear();
    });

    it('runs every request with the options as declared: the SQL carries the checked values only', async () => {
      const before = await call('POST', `${testApp.url}/bad-input/write`);
      // And after the bootstrap, between requests.
      tamper(routeOptions);
      const after = await call('POST', `${testApp.url}/bad-input/write`);

      for (const reply of [before, after]) {
        expect(reply.status).toBe(201);
        expect(reply.body).toEqual({ timeoutMs: 1500 });
      }
      // Written, so not read-only; the timeout and isolation level as declared, nothing else.
      expect(await db.query(`SELECT label FROM ${ITEMS}`)).toHaveLength(2);
      const settings = sqlLog.transactionControl({ settings: true }).filter((sql) => !/^(COMMIT|ROLLBACK)/.test(sql));
      expect(settings.join('\n')).not.toMatch(/CREATE|READ ONLY|NaN|many/);
      if (engine.name === 'postgres') {
        expect(settings).toEqual(
          Array(2).fill(
            'BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = 1500; SET LOCAL idle_in_transaction_session_timeout = 1500',
          ),
        );
      } else {
        expect(settings.filter((sql) => /max_statement_time = 1\.5\b/.test(sql))).toHaveLength(2);
        expect(settings.filter((sql) => sql === 'SET TRANSACTION ISOLATION LEVEL READ COMMITTED')).toHaveLength(2);
      }
      expect(sqlLog.statements().join('\n')).not.toContain(INJECTED);
      expect(await tableExists(db, INJECTED)).toBe(false);
    });
  });

  describe('TransactionRunner.run()', () => {
    const sqlLog = new RecordingSqlLogger();
    const testApp = suiteApp(db, {
      applicationName,
      tables: ENTITIES,
      app: () => ({
        adapter: 'express',
        imports: [
          TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 2, applicationName, entities: ENTITIES, logger: sqlLog })),
          TransactionalModule.forRoot(),
        ],
      }),
    });
    let runner: TransactionRunner;

    beforeAll(() => {
      runner = testApp.get(TransactionRunner);
    });

    beforeEach(async () => {
      await db.query(`INSERT INTO ${ACCOUNTS} (id, balance) VALUES (1, 100), (2, 100), (3, 100), (10, 100)`);
      sqlLog.clear();
    });

    describe('given a bad timeoutMs', () => {
      it.each([
        ['a string', '1000', "TransactionRunner.run(): timeoutMs must be a whole number of milliseconds above 0, got '1000'."],
        [
          'SQL',
          `0; CREATE TABLE ${INJECTED} (id int)`,
          `TransactionRunner.run(): timeoutMs must be a whole number of milliseconds above 0, got '0; CREATE TABLE ${INJECTED} (id int)'.`,
        ],
        [
          '2^31 ms',
          2 ** 31,
          "TransactionRunner.run(): timeoutMs 2147483648 is above the limit of 2147483647 ms (about 24.8 days): PostgreSQL's " +
            'statement_timeout takes no more, so every transaction would fail. Use at most 2147483647, or leave timeoutMs out for no timeout.',
        ],
      ])('rejects %s before running anything, and sends nothing', async (_what, timeoutMs, message) => {
        let ran = false;

        await expectRejection(
          runner.run(
            async (tx) => {
              ran = true;
              await tx.insert(Item, { label: 'never' });
            },
            { timeoutMs: timeoutMs as never },
          ),
          TransactionalOptionsError,
          message,
        );

        expect(ran).toBe(false);
        expect(sqlLog.sent()).toEqual([]);
        expect(await tableExists(db, INJECTED)).toBe(false);
      });

      it('rejects a slowTransactionMs and a retry delay of 2^31 ms the same way', async () => {
        await expectRejection(
          runner.run(() => 1, { slowTransactionMs: 2 ** 31 }),
          TransactionalOptionsError,
          /^TransactionRunner\.run\(\): slowTransactionMs 2147483648 is above the limit/,
        );
        await expectRejection(
          runner.run(() => 1, { retry: { maxDelayMs: 2 ** 31 } }),
          TransactionalOptionsError,
          /^TransactionRunner\.run\(\): retry\.maxDelayMs 2147483648 is above the limit/,
        );
        expect(sqlLog.sent()).toEqual([]);
      });
    });

    it('runs with the largest timeout the database accepts, 2147483647 ms, and commits', async () => {
      const seen = await runner.run(
        async (tx) => {
          await tx.insert(Item, { label: 'at the limit' });
          return sessionTimeoutMs(tx, engine.name);
        },
        { timeoutMs: MAX_MS, slowTransactionMs: MAX_MS },
      );

      // MariaDB keeps max_statement_time in seconds, to the microsecond.
      expect(seen).toBe(MAX_MS);
      expect(await db.query(`SELECT label FROM ${ITEMS}`)).toEqual([{ label: 'at the limit' }]);
    });

    it('opens the transaction with the options given at the call, even when the object changes before the first query', async () => {
      const options: TransactionOptions = { timeoutMs: 1500 };

      const seen = await runner.run(async (tx) => {
        (options as Record<string, unknown>).timeoutMs = `0; CREATE TABLE ${INJECTED} (id int)`;
        return sessionTimeoutMs(tx, engine.name);
      }, options);

      expect(seen).toBe(1500);
      expect(sqlLog.statements().join('\n')).not.toContain(INJECTED);
      expect(await tableExists(db, INJECTED)).toBe(false);
    });

    describe('lockInOrder given ids that are not an array of primary key values', () => {
      const account = Object.assign(new Account(), { id: 1, balance: 100 });
      // eslint-disable-next-line no-sparse-arrays
      const sparse = [1, , 3];
      const bad: Array<[string, unknown, RegExp]> = [
        [
          'a string',
          '12',
          /^lockInOrder\(Account\): ids must be an array of primary key values, got '12'\. Pass \[id\] for one row, or \[\.\.\.ids\] for another collection\.$/,
        ],
        ['undefined', undefined, /^lockInOrder\(Account\): ids must be an array of primary key values, got undefined\./],
        ['null', null, /^lockInOrder\(Account\): ids must be an array of primary key values, got null\./],
        ['a number', 12, /^lockInOrder\(Account\): ids must be an array of primary key values, got 12\./],
        ['a Set', new Set([1, 2]), /^lockInOrder\(Account\): ids must be an array of primary key values, got a Set\./],
        ['an array-like object', { 0: 1, length: 1 }, /ids must be an array of primary key values, got an object\./],
        [
          'null inside',
          [1, null],
          /^lockInOrder\(Account\): ids\[1\] is null; each id must be a primary key value: a string, a finite number or a bigint\. Nothing was locked\.$/,
        ],
        ['undefined inside', [2, undefined], /^lockInOrder\(Account\): ids\[1\] is undefined; /],
        ['a hole', sparse, /^lockInOrder\(Account\): ids\[1\] is undefined; /],
        ['NaN', [Number.NaN], /^lockInOrder\(Account\): ids\[0\] is NaN; /],
        ['Infinity', [1, Infinity], /^lockInOrder\(Account\): ids\[1\] is Infinity; /],
        ['an object', [{ id: 1 }], /^lockInOrder\(Account\): ids\[0\] is an object; /],
        ['an entity instead of its id', [account], /^lockInOrder\(Account\): ids\[0\] is an Account; /],
        ['a boolean', [true], /^lockInOrder\(Account\): ids\[0\] is true; /],
        [
          'an integer beyond 2^53',
          [2 ** 53 + 2],
          /^lockInOrder\(Account\): ids\[0\] is 9007199254740994, beyond Number\.MAX_SAFE_INTEGER.*Pass it as a string or a bigint\./,
        ],
        [
          'strings and numbers mixed',
          [2, '10'],
          /^lockInOrder\(Account\): ids mix strings \(ids\[1\] is '10'\) and numbers \(ids\[0\] is 2\)\. They sort differently/,
        ],
      ];

      it.each(bad)('rejects %s with TransactionalError naming it, and sends nothing', async (_what, ids, message) => {
        let caught: unknown;

        const attempt = runner.run(async (tx) => {
          caught = await lockInOrder(tx, Account, ids as never).catch((error: unknown) => error);
          throw caught;
        });

        const error = await expectRejection(attempt, TransactionalError, message);
        expect(error).toBe(caught);
        // The unit of work had sent nothing before, and sent nothing for it: not even a BEGIN.
        expect(sqlLog.sent()).toEqual([]);
      });

      it('sends no lock inside an open transaction either, which goes on and commits', async () => {
        const error = await runner.run(async (tx) => {
          await tx.insert(Item, { label: 'before the bad call' });
          const rejection = await lockInOrder(tx, Account, [1, null] as never).catch((e: unknown) => e);
          await tx.insert(Item, { label: 'after the bad call' });
          return rejection;
        });

        expect(error).toBeInstanceOf(TransactionalError);
        expect(sqlLog.statements().filter((sql) => sql.includes(ACCOUNTS))).toEqual([]);
        expect((await db.query<{ label: string }>(`SELECT label FROM ${ITEMS} ORDER BY id`)).map((row) => row.label)).toEqual([
          'before the bad call',
          'after the bad call',
        ]);
      });

      it.each([
        ['null', null, /^lockInOrder\(Account\): options must be an object such as \{ mode: 'share' \}, got null\.$/],
        ['a string', 'share', /^lockInOrder\(Account\): options must be an object such as \{ mode: 'share' \}, got 'share'\.$/],
        ['an unknown key', { lock: 'share' }, /^lockInOrder\(Account\): unknown option 'lock'\. Known options: mode\.$/],
        [
          'an unknown mode',
          { mode: 'exclusive' },
          /^lockInOrder\(Account\): mode must be 'update' or 'share', got 'exclusive'\.$/,
        ],
      ])('rejects %s as options, and sends nothing', async (_what, options, message) => {
        await expectRejection(
          runner.run((tx) => lockInOrder(tx, Account, [1], options as never)),
          TransactionalError,
          message,
        );
        expect(sqlLog.sent()).toEqual([]);
      });

      it('locks numbers and bigints together in ascending order of value', async () => {
        let locked: unknown[] = [];

        const rows = await runner.run(async (tx) => {
          const result = await lockInOrder(tx, Account, [3n, 1, 2n, 10]);
          locked = sqlLog
            .sent()
            .filter((q) => /FOR UPDATE/.test(q.sql))
            .map((q) => Number(q.parameters[0]));
          return result;
        });

        expect(locked).toEqual([1, 2, 3, 10]);
        expect([...rows.keys()]).toEqual([1, 2n, 3n, 10]);
      });
    });
  });

  describe('module bootstrap', () => {
    const created: DataSource[] = [];

    /** A data source of these tests, made through a factory so the test can always destroy it. */
    function typeorm(name?: string) {
      return TypeOrmModule.forRootAsync({
        name,
        useFactory: () => typeormOptions(engine, { poolSize: 1, applicationName, entities: ENTITIES, name }),
        dataSourceFactory: async (options) => {
          const dataSource = new DataSource(options as DataSourceOptions);
          created.push(dataSource);
          return dataSource.initialize();
        },
      });
    }

    /** Builds and initialises an application context of `imports()`, runs `use` in it, closes it. */
    async function bootstrap(
      imports: () => TestingModuleImports,
      use?: (moduleRef: TestingModule) => Promise<void>,
    ): Promise<void> {
      let moduleRef: TestingModule | undefined;
      try {
        moduleRef = await Test.createTestingModule({ imports: imports() }).setLogger(new RecordingNestLogger()).compile();
        await moduleRef.init();
        await use?.(moduleRef);
      } finally {
        await moduleRef?.close();
      }
    }

    afterEach(async () => {
      await Promise.all(
        created
          .splice(0)
          .filter((dataSource) => dataSource.isInitialized)
          .map((dataSource) => dataSource.destroy()),
      );
      if (engine.name === 'postgres') {
        await waitFor(async () => expect(await (db as PostgresObserver).backends(applicationName)).toEqual([]), {
          timeoutMs: 5000,
        });
      }
    });

    it('boots with forRoot() and no argument: every default', async () => {
      await expect(bootstrap(() => [typeorm(), TransactionalModule.forRoot()])).resolves.toBeUndefined();
    });

    it('rejects forRoot(null) with TransactionalOptionsError, not a TypeError', async () => {
      await expectRejection(
        bootstrap(() => [typeorm(), TransactionalModule.forRoot(null as never)]),
        TransactionalOptionsError,
        'TransactionalModule.forRoot(): options must be an object, got null. Leave them out for the defaults.',
      );
    });

    it('rejects a string or a 2^31 ms timeoutMs in forRoot()', async () => {
      await expectRejection(
        bootstrap(() => [typeorm(), TransactionalModule.forRoot({ timeoutMs: '1000' as never })]),
        TransactionalOptionsError,
        "TransactionalModule.forRoot(): timeoutMs must be a whole number of milliseconds above 0, got '1000'.",
      );
      await expectRejection(
        bootstrap(() => [typeorm(), TransactionalModule.forRoot({ timeoutMs: 2 ** 31 })]),
        TransactionalOptionsError,
        /^TransactionalModule\.forRoot\(\): timeoutMs 2147483648 is above the limit of 2147483647 ms/,
      );
    });

    it('rejects an options factory that returns dataSource, saying where it goes', async () => {
      await expectRejection(
        bootstrap(() => [
          typeorm(),
          typeorm(REPORTS),
          TransactionalModule.forRootAsync({ useFactory: () => ({ dataSource: REPORTS }) as never }),
        ]),
        TransactionalOptionsError,
        `TransactionalModule.forRootAsync(): the options factory returned dataSource '${REPORTS}', which would be ignored: ` +
          'the data source is chosen before the factory runs. Give it beside the factory: ' +
          `TransactionalModule.forRootAsync({ dataSource: '${REPORTS}', useFactory, inject }).`,
      );
    });

    it.each([
      ['null', null, 'null'],
      ['undefined', undefined, 'undefined'],
      ['a string', 'warn', "'warn'"],
      ['an array', [], 'an array of 0'],
    ])('rejects an options factory that returns %s', async (_what, returned, shown) => {
      await expectRejection(
        bootstrap(() => [typeorm(), TransactionalModule.forRootAsync({ useFactory: () => returned as never })]),
        TransactionalOptionsError,
        `TransactionalModule.forRootAsync(): the options factory returned ${shown}; it must return an options object ({} for all ` +
          'the defaults). An arrow function with a block body returns nothing: write () => ({ … }).',
      );
    });

    it('rejects a 2^31 ms timeoutMs from an options factory', async () => {
      await expectRejection(
        bootstrap(() => [typeorm(), TransactionalModule.forRootAsync({ useFactory: async () => ({ timeoutMs: 2 ** 31 }) })]),
        TransactionalOptionsError,
        /^TransactionalModule\.forRootAsync\(\): timeoutMs 2147483648 is above the limit of 2147483647 ms/,
      );
    });

    it.each([
      ['forRoot({ dataSource })', () => TransactionalModule.forRoot({ dataSource: REPORTS, timeoutMs: 1500 })],
      [
        'forRootAsync({ dataSource, useFactory })',
        () => TransactionalModule.forRootAsync({ dataSource: REPORTS, useFactory: () => ({ timeoutMs: 1500 }) }),
      ],
    ])('manages a named data source given by %s, with its options', async (_how, transactional) => {
      await bootstrap(
        () => [typeorm(), typeorm(REPORTS), transactional()],
        async (moduleRef) => {
          const runner = moduleRef.get(TransactionRunner);
          expect(await runner.run((tx) => sessionTimeoutMs(tx, engine.name), { dataSource: REPORTS })).toBe(1500);
          // Only that one: the default data source is not managed.
          await expectRejection(
            runner.run(() => 1),
            TransactionalOptionsError,
            /asked for data source 'default', which TransactionalModule does not manage/,
          );
        },
      );
    });
  });
});

type TestingModuleImports = NonNullable<Parameters<typeof Test.createTestingModule>[0]['imports']>;
