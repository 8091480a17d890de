/**
 * The test cases of the two established libraries for the same job, restated against this package's
 * API: typeorm-transactional (tests/simple.test.ts, tests/nest.test.ts) and @nestjs-cls/transactional
 * (packages/transactional/test, the TypeORM adapter's spec). Where this package differs on purpose
 * (a second connection inside a unit of work, a transactional repository outside one, work that
 * outlives its unit), the case says what it does instead, and the test proves that.
 */
import { Body, Controller, Injectable, Post } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { type Repository } from 'typeorm';
import {
  InjectTxRepository,
  NestedConnectionError,
  NoTransactionError,
  Transactional,
  TransactionalModule,
  TransactionFinishedError,
  TransactionHost,
  TransactionRunner,
} from '../../lib';
import { connectionIdOf } from '../support/connections';
import { type Engine, engines, typeormOptions } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { call } from '../support/http';
import { latch } from '../support/latch';
import { RecordingSqlLogger } from '../support/recording-loggers';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(Item);

/** typeorm-transactional's UserWriterService / nestjs-cls's service under test. */
@Injectable()
class UserService {
  constructor(
    @InjectTxRepository(Item) readonly users: Repository<Item>,
    private readonly host: TransactionHost,
  ) {}

  @Transactional()
  async create(label: string, fail = false): Promise<Item> {
    const user = await this.users.save({ label });
    if (fail) throw new Error(`creating ${label} failed`);
    return user;
  }

  @Transactional({ propagation: 'nested' })
  async createNested(label: string, fail: boolean): Promise<void> {
    await this.users.save({ label });
    if (fail) throw new Error(`creating ${label} failed`);
  }

  /** The connection the current unit of work runs on. */
  connection(): Promise<number> {
    return connectionIdOf(this.host.manager());
  }
}

@Controller('peer-users')
class UsersController {
  constructor(private readonly users: UserService) {}

  @Post()
  create(@Body() body: { label: string; fail?: boolean }) {
    return this.users.create(body.label, body.fail);
  }
}

describe.each(engines)("the peers' test cases on $name", (engine: Engine) => {
  const applicationName = `peer-cases-e2e-${engine.name}`;
  const sql = new RecordingSqlLogger();
  const begin = engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION';
  const db = suiteObserver(engine);
  const testApp = suiteApp(db, {
    applicationName,
    tables: [Item],
    app: () => ({
      adapter: 'express',
      imports: [
        // A pool of 1: a case that took a second connection would wait for its own and fail.
        TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item], logger: sql })),
        TransactionalModule.forRoot(),
        TransactionalModule.forFeature([Item]),
      ],
      controllers: [UsersController],
      providers: [UserService],
    }),
  });
  let runner: TransactionRunner;
  let host: TransactionHost;
  let service: UserService;

  beforeAll(() => {
    runner = testApp.get(TransactionRunner);
    host = testApp.get(TransactionHost);
    service = testApp.get(UserService);
  });

  beforeEach(() => sql.clear());

  describe('typeorm-transactional', () => {
    it('supports basic transactions: one BEGIN, the work, one COMMIT; nothing open afterwards', async () => {
      await runner.run(() => service.users.save({ label: 'John Doe' }));

      expect(sql.transactionControl()).toEqual([begin, 'COMMIT']);
      expect(await labelsIn(db, TABLE)).toEqual(['John Doe']);
      expect(host.current()).toBeUndefined();
    });

    it('supports nested transactions: the inner run() joins the outer one, on the same connection', async () => {
      const [outer, inner] = await runner.run(async () => {
        const before = await service.connection();
        const after = await runner.run(() => service.connection());
        return [before, after];
      });

      expect(inner).toBe(outer);
      expect(sql.transactionControl()).toEqual([begin, 'COMMIT']);
    });

    it('supports several concurrent transactions: each its own, none sees uncommitted work of another', async () => {
      const labels = Array.from({ length: 12 }, (_, i) => `user ${String(i).padStart(2, '0')}`);
      const commitOrder: string[] = [];

      const seen = await Promise.all(
        labels.map((label) =>
          runner.run(async () => {
            host.afterCommit(() => commitOrder.push(label));
            await service.users.save({ label });
            return (await service.users.find()).map((user) => user.label).sort();
          }),
        ),
      );

      // Each unit of work saw its own row and exactly the rows committed before it.
      seen.forEach((rows, i) => {
        const committedBefore = commitOrder.slice(0, commitOrder.indexOf(labels[i]));
        expect(rows).toEqual([...committedBefore, labels[i]].sort());
      });
      expect(sql.transactionControl().filter((statement) => statement === begin)).toHaveLength(labels.length);
      expect(await labelsIn(db, TABLE)).toEqual(labels);
    });

    it("does not create intermediate transactions: a repository's save() runs inside the unit's own", async () => {
      await runner.run(async () => {
        await service.users.save({ label: 'John Doe' });
        await service.users.save([{ label: 'Bob Smith' }, { label: 'Alice Watson' }]);
      });

      expect(sql.transactionControl()).toEqual([begin, 'COMMIT']);
    });

    it('rolls the transaction back if an error is thrown', async () => {
      await expect(service.create('John Doe', true)).rejects.toThrow('creating John Doe failed');

      expect(sql.transactionControl()).toEqual([begin, 'ROLLBACK']);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it("doesn't leak the transaction to the outer scope while it is open", async () => {
      const inside = latch();
      const release = latch();
      const run = runner.run(async () => {
        await service.users.save({ label: 'inside' });
        inside.resolve();
        await release.promise;
        return host.current()?.state;
      });

      await inside.promise;
      expect(host.current()).toBeUndefined();
      await expect(service.users.find()).rejects.toBeInstanceOf(NoTransactionError);
      release.resolve();
      expect(await run).toBe('open');
    });

    it("propagation REQUIRED (the default) joins; 'nested' is a savepoint that a failure rolls back alone", async () => {
      await runner.run(async () => {
        await service.create('required');
        await service.createNested('nested kept', false);
        await service.createNested('nested undone', true).catch(() => undefined);
      });

      expect(sql.transactionControl()).toEqual(
        expect.arrayContaining([begin, 'SAVEPOINT typeorm_1', 'ROLLBACK TO SAVEPOINT typeorm_1', 'COMMIT']),
      );
      expect(sql.transactionControl().filter((statement) => statement === begin)).toHaveLength(1);
      expect(await labelsIn(db, TABLE)).toEqual(['nested kept', 'required']);
    });

    it('propagation REQUIRES_NEW is a second connection while one is held: refused at its cause', async () => {
      const run = runner.run(async () => {
        await service.users.save({ label: 'outer' });
        await testApp.dataSource.transaction((manager) => manager.save(Item, { label: 'inner' }));
      });

      await expect(run).rejects.toBeInstanceOf(NestedConnectionError);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it('propagation MANDATORY is what a transactional repository does: NoTransactionError outside a unit', async () => {
      await expect(service.users.find()).rejects.toBeInstanceOf(NoTransactionError);
      expect(sql.statements()).toEqual([]);
    });

    it('runs the commit hook once after COMMIT, and not the rollback hook', async () => {
      const events: string[] = [];
      await runner.run(async () => {
        host.afterCommit(() => events.push(`commit after ${sql.transactionControl().join(', ')}`));
        host.afterRollback(() => events.push('rollback'));
        await service.users.save({ label: 'hooked' });
      });

      expect(events).toEqual([`commit after ${begin}, COMMIT`]);
    });

    it('runs the rollback hook once after ROLLBACK, and not the commit hook', async () => {
      const events: string[] = [];
      const run = runner.run(async () => {
        host.afterCommit(() => events.push('commit'));
        host.afterRollback(() => events.push('rollback'));
        await service.users.save({ label: 'hooked' });
        throw new Error('undo');
      });

      await expect(run).rejects.toThrow('undo');
      expect(events).toEqual(['rollback']);
    });

    it.each([
      ['READ COMMITTED', ['committed meanwhile']],
      ['REPEATABLE READ', []],
    ] as const)(
      'under %s reads %j of a row committed by another client after its first read',
      async (isolationLevel, expected) => {
        const seen = await runner.run(
          async () => {
            expect(await service.users.count()).toBe(0);
            // Another client, not a second connection of this unit of work (typeorm-transactional's own
            // case opens `dataSource.transaction()` here, which this package refuses: see REQUIRES_NEW).
            await db.query(`INSERT INTO ${TABLE} (label) VALUES ('committed meanwhile')`);
            return (await service.users.find()).map((user) => user.label);
          },
          { isolationLevel },
        );

        expect(seen).toEqual(expected);
      },
    );

    it('Nest: a user created through a service when the request succeeds', async () => {
      const reply = await call('POST', `${testApp.url}/peer-users`, { label: 'John Doe' });

      expect(reply.status).toBe(201);
      expect(await labelsIn(db, TABLE)).toEqual(['John Doe']);
    });

    it('Nest: no user when the service throws', async () => {
      const reply = await call('POST', `${testApp.url}/peer-users`, { label: 'John Doe', fail: true });

      expect(reply.status).toBe(500);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });
  });

  describe('@nestjs-cls/transactional', () => {
    it('without an active transaction, a transactional repository refuses (nestjs-cls falls back to autocommit)', async () => {
      await expect(service.users.save({ label: 'autocommit' })).rejects.toBeInstanceOf(NoTransactionError);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it('starts two transactions in parallel from the decorator', async () => {
      await Promise.all([service.create('first'), service.create('second')]);

      expect(sql.transactionControl()).toEqual([begin, 'COMMIT', begin, 'COMMIT']);
      expect(await labelsIn(db, TABLE)).toEqual(['first', 'second']);
    });

    it('rolls back to the savepoint if a NESTED transaction throws, keeping the outer work', async () => {
      const run = runner.run(async () => {
        await service.users.save({ label: 'outer' });
        await expect(service.createNested('inner', true)).rejects.toThrow('creating inner failed');
        return (await service.users.find()).map((user) => user.label);
      });

      expect(await run).toEqual(['outer']);
      expect(await labelsIn(db, TABLE)).toEqual(['outer']);
    });

    it('a non-awaited function that uses the transaction after its parent ended fails loudly, not in autocommit', async () => {
      const used = latch<unknown>();
      const later = latch();
      await runner.run(async () => {
        await service.users.save({ label: 'parent' });
        void later.promise.then(() => service.users.save({ label: 'child' })).then(used.resolve, used.resolve);
      });
      later.resolve();

      expect(await used.promise).toBeInstanceOf(TransactionFinishedError);
      expect(await labelsIn(db, TABLE)).toEqual(['parent']);
    });
  });
});
