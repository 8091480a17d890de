import { ConflictException, Controller, Injectable, Param, Post } from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, EntityManager, type Repository } from 'typeorm';
import {
  InjectTxRepository,
  NoTransaction,
  NoTransactionError,
  TransactionalModule,
  TransactionFinishedError,
  TransactionHost,
  TransactionRunner,
  Tx,
  type UnitOfWorkInfo,
} from '../../lib';
import { ConnectionAudit } from '../../lib/testing';
import { adapters } from '../support/app';
import { connectionIdOf } from '../support/connections';
import { engines, typeormOptions } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { latch, type Latch } from '../support/latch';
import { expectNothingLeaked } from '../support/leaks';
import { RecordingSqlLogger } from '../support/recording-loggers';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(Item);

@Injectable()
class ItemsService {
  constructor(@InjectTxRepository(Item) readonly items: Repository<Item>) {}

  save(label: string): Promise<Item> {
    return this.items.save({ label });
  }
}

const boom = () => new Error('the work failed');

describe.each(engines)('TransactionRunner.run() outside HTTP on $name', (engine) => {
  const applicationName = `runner-e2e-ctx-${engine.name}`;
  const sql = new RecordingSqlLogger();
  const db = suiteObserver(engine);
  // A testing module, not an app: no HTTP server, as in a worker or a script.
  let moduleRef: TestingModule;
  let runner: TransactionRunner;
  let host: TransactionHost;
  let dataSource: DataSource;

  beforeAll(async () => {
    moduleRef = await Test.createTestingModule({
      imports: [
        // A pool of 2: a unit of work that wrongly took a second connection would get one (and a
        // different connection id) instead of waiting for its own.
        TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 2, applicationName, entities: [Item], logger: sql })),
        TransactionalModule.forRoot(),
        TransactionalModule.forFeature([Item]),
      ],
      providers: [ItemsService],
    }).compile();
    await moduleRef.init();
    runner = moduleRef.get(TransactionRunner);
    host = moduleRef.get(TransactionHost);
    dataSource = moduleRef.get<DataSource>(getDataSourceToken());
    await db.query(`DELETE FROM ${TABLE}`);
  });

  beforeEach(() => sql.clear());

  afterEach(async () => {
    await expectNothingLeaked({ dataSource, db, applicationName });
    await db.query(`DELETE FROM ${TABLE}`);
  });

  afterAll(async () => {
    await moduleRef?.close();
  });

  describe('when no unit of work is open', () => {
    it("commits fn's work before resolving with its value", async () => {
      const value = await runner.run(async (tx) => {
        await tx.insert(Item, { label: 'committed' });
        // Not visible outside before the commit.
        expect(await labelsIn(db, TABLE)).toEqual([]);
        return 'done';
      });

      expect(value).toBe('done');
      expect(await labelsIn(db, TABLE)).toEqual(['committed']);
      expect(sql.transactionControl({ settings: true })).toEqual([
        engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION',
        'COMMIT',
      ]);
    });

    it('rolls back and rethrows the very error fn threw', async () => {
      const error = boom();

      const run = runner.run(async (tx) => {
        await tx.insert(Item, { label: 'rolled back' });
        throw error;
      });

      await expect(run).rejects.toBe(error);
      expect(await labelsIn(db, TABLE)).toEqual([]);
      expect(sql.transactionControl({ settings: true })).toEqual([
        engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION',
        'ROLLBACK',
      ]);
    });

    it('takes no connection and sends nothing when fn runs no query', async () => {
      const audit = ConnectionAudit.attach(dataSource);
      try {
        const seen = await runner.run(
          (tx) => {
            expect(tx).toBeInstanceOf(EntityManager);
            return host.current();
          },
          { name: 'idle job' },
        );

        expect(seen).toEqual({ name: 'idle job', state: 'open' });
        expect(audit.units()).toEqual([]);
        expect(sql.statements()).toEqual([]);
      } finally {
        audit.detach();
      }
    });
  });

  describe('when a unit of work is already open', () => {
    it('joins it: the same connection and the same transaction', async () => {
      const error = boom();
      let outerId: number | undefined;
      let innerId: number | undefined;

      const run = runner.run(async (outer) => {
        outerId = await connectionIdOf(outer);
        await runner.run(async (inner) => {
          innerId = await connectionIdOf(inner);
          await inner.insert(Item, { label: 'written by the joined run' });
        });
        // The inner run did not commit on its own: the outer rollback takes its row too.
        throw error;
      });

      await expect(run).rejects.toBe(error);
      expect(innerId).toBe(outerId);
      expect(await labelsIn(db, TABLE)).toEqual([]);
      expect(sql.transactionControl({ settings: true })).toEqual([
        engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION',
        'ROLLBACK',
      ]);
    });

    it("with propagation 'nested' runs in a savepoint: the failed inner work is undone, the outer work commits", async () => {
      const error = boom();
      let outerId: number | undefined;
      let innerId: number | undefined;

      await runner.run(async (outer) => {
        outerId = await connectionIdOf(outer);
        await outer.insert(Item, { label: 'outer' });
        const nested = runner.run(
          async (inner) => {
            innerId = await connectionIdOf(inner);
            await inner.insert(Item, { label: 'inner' });
            throw error;
          },
          { propagation: 'nested' },
        );
        await expect(nested).rejects.toBe(error);
        await outer.insert(Item, { label: 'outer, after the savepoint' });
      });

      expect(innerId).toBe(outerId);
      expect(await labelsIn(db, TABLE)).toEqual(['outer', 'outer, after the savepoint']);
      expect(sql.transactionControl({ settings: true })).toEqual([
        engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION',
        'SAVEPOINT typeorm_1',
        'ROLLBACK TO SAVEPOINT typeorm_1',
        'COMMIT',
      ]);
    });

    it("with propagation 'nested' keeps the savepoint's work when it succeeds", async () => {
      await runner.run(async (outer) => {
        await outer.insert(Item, { label: 'outer' });
        await runner.run((inner) => inner.insert(Item, { label: 'inner' }), { propagation: 'nested' });
      });

      expect(await labelsIn(db, TABLE)).toEqual(['inner', 'outer']);
      expect(sql.transactionControl({ settings: true })).toEqual([
        engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION',
        'SAVEPOINT typeorm_1',
        'RELEASE SAVEPOINT typeorm_1',
        'COMMIT',
      ]);
    });
  });

  describe('when work outlives the unit of work that started it', () => {
    it('starts a fresh unit of work that commits on its own', async () => {
      const release = latch();
      let later: Promise<UnitOfWorkInfo | undefined> | undefined;

      await runner.run(
        async (tx) => {
          await tx.insert(Item, { label: 'first unit' });
          // Fire and forget: started inside the unit of work, runs after it committed.
          later = (async () => {
            await release.promise;
            return runner.run(
              async (fresh) => {
                await fresh.insert(Item, { label: 'fresh unit' });
                return host.current();
              },
              { name: 'follow-up job' },
            );
          })();
        },
        { name: 'first job' },
      );
      expect(await labelsIn(db, TABLE)).toEqual(['first unit']);

      release.resolve();

      await expect(later).resolves.toEqual({ name: 'follow-up job', state: 'open' });
      expect(await labelsIn(db, TABLE)).toEqual(['first unit', 'fresh unit']);
      const begin = engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION';
      expect(sql.transactionControl({ settings: true })).toEqual([begin, 'COMMIT', begin, 'COMMIT']);
    });
  });

  describe('a transactional repository used outside any unit of work', () => {
    it('throws NoTransactionError and writes nothing', async () => {
      const service = moduleRef.get(ItemsService);

      const saved = (async () => service.save('outside'))();

      await expect(saved).rejects.toBeInstanceOf(NoTransactionError);
      await expect(saved).rejects.toThrow(/^Repository<Item>\.save\(\) was used outside a unit of work/);
      expect(await labelsIn(db, TABLE)).toEqual([]);
      expect(sql.statements()).toEqual([]);
    });

    it('reports it as a rejected promise, as Repository.save() always does, so .catch() handlers see it', () => {
      const service = moduleRef.get(ItemsService);
      let thrown: unknown;
      let returned: unknown;

      try {
        returned = service.items.save({ label: 'outside' });
      } catch (error) {
        thrown = error;
      }

      // A synchronous throw escapes `repo.save(x).catch(log)` in fire-and-forget code: an uncaught exception.
      expect(thrown).toBeUndefined();
      expect(returned).toBeInstanceOf(Promise);
      return expect(returned).rejects.toBeInstanceOf(NoTransactionError);
    });
  });
});

/** Work a handler leaves behind, which the test starts after the response. */
interface LateWork {
  release: Latch;
  outcome?: Promise<unknown>;
}
let late: LateWork = { release: latch() };

type ManagerUse = (tx: EntityManager) => Promise<unknown>;
const managerUses: Record<string, ManagerUse> = {
  insert: (tx) => tx.insert(Item, { label: 'late' }),
  save: (tx) => tx.getRepository(Item).save({ label: 'late' }),
  find: (tx) => tx.find(Item),
  query: (tx) => tx.query(`INSERT INTO ${TABLE} (label) VALUES ('late')`),
  transaction: (tx) => tx.transaction((inner) => inner.insert(Item, { label: 'late' })),
};

/** Starts `work` after the test releases it, in the async context of the caller (the request). */
function leaveBehind(work: () => Promise<unknown>): void {
  late.outcome = (async () => {
    await late.release.promise;
    try {
      await work();
      return 'it ran';
    } catch (error) {
      return error;
    }
  })();
}

@Controller('runner')
class RunnerController {
  constructor(
    private readonly service: ItemsService,
    private readonly runner: TransactionRunner,
  ) {}

  @Post('savepoint')
  async savepoint(@Tx() tx: EntityManager) {
    const outer = await connectionIdOf(tx);
    await tx.insert(Item, { label: 'outer' });
    let inner: number | undefined;
    let caught: string | undefined;
    try {
      await tx.transaction(async (savepoint) => {
        inner = await connectionIdOf(savepoint);
        await savepoint.insert(Item, { label: 'inner' });
        throw new Error('undo the savepoint');
      });
    } catch (error) {
      caught = (error as Error).message;
    }
    return { outer, inner, caught };
  }

  @Post('late/manager/:use')
  async lateManager(@Tx() tx: EntityManager, @Param('use') use: string) {
    await tx.insert(Item, { label: 'in the request' });
    leaveBehind(() => managerUses[use](tx));
    return { scheduled: use };
  }

  @Post('late/repository')
  async lateRepository() {
    await this.service.save('in the request');
    leaveBehind(() => this.service.save('late'));
    return { scheduled: 'repository' };
  }

  @Post('late/repository-after-rollback')
  async lateRepositoryAfterRollback() {
    await this.service.save('in the request');
    leaveBehind(() => this.service.save('late'));
    throw new ConflictException('the handler failed');
  }

  @Post('late/runner')
  async lateRunner() {
    await this.service.save('in the request');
    leaveBehind(() => this.runner.run(() => this.service.save('late, in its own unit of work')));
    return { scheduled: 'runner' };
  }

  @Post('no-transaction')
  @NoTransaction()
  async noTransaction() {
    try {
      await this.service.save('outside');
      return { error: null };
    } catch (error) {
      return { error: (error as Error).name, message: (error as Error).message };
    }
  }
}

describe.each(engines)('units of work of HTTP requests on $name', (engine) => {
  const db = suiteObserver(engine);

  describe.each(adapters)('over %s', (adapter) => {
    const applicationName = `runner-e2e-http-${engine.name}`;
    const sql = new RecordingSqlLogger();
    // Before the leak check: whatever a failed test left behind must not hang, nor hold the connection.
    afterEach(async () => {
      late.release.resolve();
      await late.outcome;
    });
    const testApp = suiteApp(db, {
      applicationName,
      tables: [Item],
      app: () => ({
        adapter,
        imports: [
          TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item], logger: sql })),
          TransactionalModule.forRoot(),
          TransactionalModule.forFeature([Item]),
        ],
        controllers: [RunnerController],
        providers: [ItemsService],
      }),
    });

    beforeEach(() => {
      sql.clear();
      late = { release: latch() };
    });

    const post = (path: string) => fetch(`${testApp.url}${path}`, { method: 'POST' });

    describe('tx.transaction() inside a request', () => {
      it('runs in a savepoint on the same connection: its failure undoes only its own work', async () => {
        const response = await post('/runner/savepoint');

        expect(response.status).toBe(201);
        const body = (await response.json()) as { outer: number; inner: number; caught: string };
        expect(body.caught).toBe('undo the savepoint');
        expect(body.inner).toBe(body.outer);
        expect(await labelsIn(db, TABLE)).toEqual(['outer']);
        expect(sql.transactionControl({ settings: true })).toEqual([
          engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION',
          'SAVEPOINT typeorm_1',
          'ROLLBACK TO SAVEPOINT typeorm_1',
          'COMMIT',
        ]);
      });
    });

    describe('when work scheduled by a handler runs after the response', () => {
      it.each(Object.keys(managerUses))(
        'the request manager refuses tx.%s() with TransactionFinishedError naming the route',
        async (use) => {
          const response = await post(`/runner/late/manager/${use}`);
          expect(response.status).toBe(201);
          expect(await labelsIn(db, TABLE)).toEqual(['in the request']);
          sql.clear();

          late.release.resolve();
          const outcome = await late.outcome;

          expect(outcome).toBeInstanceOf(TransactionFinishedError);
          expect((outcome as Error).message).toMatch(
            /^The transaction of POST \/runner\/late\/manager\/:use was already committed /,
          );
          // Never ran in autocommit, nor anywhere else.
          expect(sql.statements()).toEqual([]);
          expect(await labelsIn(db, TABLE)).toEqual(['in the request']);
        },
      );

      it('a transactional repository refuses with TransactionFinishedError naming the route and the call', async () => {
        const response = await post('/runner/late/repository');
        expect(response.status).toBe(201);
        sql.clear();

        late.release.resolve();
        const outcome = await late.outcome;

        expect(outcome).toBeInstanceOf(TransactionFinishedError);
        expect((outcome as Error).message).toMatch(
          /^The transaction of POST \/runner\/late\/repository was already committed when Repository<Item>\.save\(\) ran/,
        );
        expect(sql.statements()).toEqual([]);
        expect(await labelsIn(db, TABLE)).toEqual(['in the request']);
      });

      it('says rolled back when the request failed', async () => {
        const response = await post('/runner/late/repository-after-rollback');
        expect(response.status).toBe(409);
        sql.clear();

        late.release.resolve();
        const outcome = await late.outcome;

        expect(outcome).toBeInstanceOf(TransactionFinishedError);
        expect((outcome as Error).message).toMatch(
          /^The transaction of POST \/runner\/late\/repository-after-rollback was already rolled back when Repository<Item>\.save\(\) ran/,
        );
        expect(sql.statements()).toEqual([]);
        expect(await labelsIn(db, TABLE)).toEqual([]);
      });

      it('TransactionRunner.run() gives it a fresh unit of work of its own', async () => {
        const response = await post('/runner/late/runner');
        expect(response.status).toBe(201);

        late.release.resolve();

        await expect(late.outcome).resolves.toBe('it ran');
        expect(await labelsIn(db, TABLE)).toEqual(['in the request', 'late, in its own unit of work']);
      });
    });

    describe('a transactional repository in a @NoTransaction() route', () => {
      it('throws NoTransactionError and writes nothing', async () => {
        const response = await post('/runner/no-transaction');

        expect(response.status).toBe(201);
        const body = (await response.json()) as { error: string; message: string };
        expect(body.error).toBe('NoTransactionError');
        expect(body.message).toMatch(/^Repository<Item>\.save\(\) was used outside a unit of work/);
        expect(await labelsIn(db, TABLE)).toEqual([]);
      });
    });
  });
});
