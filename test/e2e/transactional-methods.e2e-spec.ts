/**
 * `@Transactional()` on provider methods: services, event handlers, cron-style jobs. With a unit of
 * work open the method joins it (or, `propagation: 'nested'`, runs in a savepoint of it); with none
 * open, or only one that already ended, it runs in a new one, exactly as TransactionRunner.run().
 */
import { Controller, Injectable, Post } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { EntityManager, type Repository } from 'typeorm';
import {
  InjectTxRepository,
  NoTransactionError,
  Transactional,
  TransactionalModule,
  TransactionalOptionsError,
  TransactionHost,
  Tx,
} from '../../lib';
import { createApp } from '../support/app';
import { connectionIdOf } from '../support/connections';
import { engines, typeormOptions, type Engine } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { call } from '../support/http';
import { latch } from '../support/latch';
import { RecordingSqlLogger } from '../support/recording-loggers';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(Item);

@Injectable()
class LedgerService {
  constructor(
    @InjectTxRepository(Item) private readonly items: Repository<Item>,
    private readonly host: TransactionHost,
  ) {}

  @Transactional()
  async record(label: string, fail = false): Promise<{ unit: string | undefined; connection: number }> {
    await this.items.insert({ label });
    const connection = await connectionIdOf(this.host.manager());
    if (fail) throw new Error(`${label} failed`);
    return { unit: this.host.current()?.name, connection };
  }

  @Transactional({ propagation: 'nested' })
  async attempt(label: string, fail: boolean): Promise<void> {
    await this.items.insert({ label });
    if (fail) throw new Error(`${label} failed`);
  }

  @Transactional({ retry: { attempts: 2, baseDelayMs: 0 } })
  async flaky(label: string, failures: { left: number }): Promise<void> {
    await this.items.insert({ label });
    if (failures.left-- > 0) throw Object.assign(new Error('deadlock detected'), { driverError: { code: '40P01', errno: 1213 } });
  }

  /** Not decorated: the unit of work around the caller, if any. */
  current(): string | undefined {
    return this.host.current()?.name;
  }
}

/** A class-level @Transactional(): every method runs in a unit of work. */
@Injectable()
@Transactional()
class ArchiveService {
  constructor(@InjectTxRepository(Item) private readonly items: Repository<Item>) {}

  async archive(label: string): Promise<void> {
    await this.items.insert({ label });
  }
}

const afterResponse = { done: latch<unknown>() };

@Controller('methods')
class MethodsController {
  constructor(private readonly ledger: LedgerService) {}

  @Post('join')
  async join(@Tx() tx: EntityManager) {
    const own = await connectionIdOf(tx);
    const inner = await this.ledger.record('joined');
    return { own, inner };
  }

  @Post('join-then-fail')
  async joinThenFail() {
    await this.ledger.record('joined, then the request failed');
    throw new Error('the request failed after the method');
  }

  @Post('nested')
  async nested(@Tx() tx: EntityManager) {
    await tx.insert(Item, { label: 'outer' });
    await this.ledger.attempt('nested kept', false);
    await this.ledger.attempt('nested undone', true).catch(() => undefined);
    return { ok: true };
  }

  @Post('outlives')
  async outlives(@Tx() tx: EntityManager) {
    await tx.insert(Item, { label: 'request' });
    // An event handler that runs after the response: the request's unit of work has ended by then.
    setImmediate(() => {
      this.ledger.record('after the response').then(afterResponse.done.resolve, afterResponse.done.resolve);
    });
    return { ok: true };
  }
}

describe.each(engines)('@Transactional() on provider methods on $name', (engine: Engine) => {
  const applicationName = `methods-e2e-${engine.name}`;
  const sql = new RecordingSqlLogger();
  const db = suiteObserver(engine);
  const testApp = suiteApp(db, {
    applicationName,
    tables: [Item],
    app: () => ({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item], logger: sql })),
        TransactionalModule.forRoot(),
        TransactionalModule.forFeature([Item]),
      ],
      controllers: [MethodsController],
      providers: [LedgerService, ArchiveService],
    }),
  });
  let ledger: LedgerService;
  const begin = engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION';

  beforeAll(() => {
    ledger = testApp.get(LedgerService);
  });

  beforeEach(() => {
    sql.clear();
    afterResponse.done = latch<unknown>();
  });

  it('runs in a unit of work of its own when called outside any, committing before it resolves', async () => {
    const result = await ledger.record('from a job');

    expect(result.unit).toBe('LedgerService.record()');
    expect(await labelsIn(db, TABLE)).toEqual(['from a job']);
    expect(sql.transactionControl()).toEqual([begin, 'COMMIT']);
    expect(ledger.current()).toBeUndefined();
  });

  it('rolls back and rethrows when it throws', async () => {
    await expect(ledger.record('from a failing job', true)).rejects.toThrow('from a failing job failed');
    expect(await labelsIn(db, TABLE)).toEqual([]);
    expect(sql.transactionControl()).toEqual([begin, 'ROLLBACK']);
  });

  it("joins the request's unit of work: same connection, one COMMIT", async () => {
    const reply = await call<{ own: number; inner: { unit: string; connection: number } }>('POST', `${testApp.url}/methods/join`);

    expect(reply.status).toBe(201);
    expect(reply.body.inner.connection).toBe(reply.body.own);
    expect(reply.body.inner.unit).toBe('POST /methods/join');
    expect(sql.transactionControl()).toEqual([begin, 'COMMIT']);
  });

  it('is rolled back with the request it joined', async () => {
    const reply = await call('POST', `${testApp.url}/methods/join-then-fail`);

    expect(reply.status).toBe(500);
    expect(await labelsIn(db, TABLE)).toEqual([]);
  });

  it("with propagation 'nested' runs in a savepoint: its failure undoes its own work alone", async () => {
    const reply = await call('POST', `${testApp.url}/methods/nested`);

    expect(reply.status).toBe(201);
    expect(await labelsIn(db, TABLE)).toEqual(['nested kept', 'outer']);
    expect(sql.transactionControl()).toContain('ROLLBACK TO SAVEPOINT typeorm_1');
  });

  it('runs in a new unit of work when the one it was started from has ended', async () => {
    const reply = await call('POST', `${testApp.url}/methods/outlives`);
    expect(reply.status).toBe(201);

    const result = (await afterResponse.done.promise) as { unit: string };
    expect(result.unit).toBe('LedgerService.record()');
    expect(await labelsIn(db, TABLE)).toEqual(['after the response', 'request']);
  });

  it('runs again after a deadlock when its options allow', async () => {
    await ledger.flaky('retried', { left: 1 });

    expect(await labelsIn(db, TABLE)).toEqual(['retried']);
    expect(sql.transactionControl()).toEqual([begin, 'ROLLBACK', begin, 'COMMIT']);
  });

  it('on a class, runs every method in a unit of work', async () => {
    await testApp.get(ArchiveService).archive('archived');

    expect(await labelsIn(db, TABLE)).toEqual(['archived']);
    expect(sql.transactionControl()).toEqual([begin, 'COMMIT']);
  });

  it('uses the runner of the application that created the instance when several run', async () => {
    const otherName = `methods-e2e-other-${engine.name}`;
    const other = await createApp({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName: otherName, entities: [Item] })),
        TransactionalModule.forRoot(),
        TransactionalModule.forFeature([Item]),
      ],
      providers: [LedgerService],
    });
    try {
      await other.app.get(LedgerService).record('from the other application');
      await ledger.record('from this application');
      expect(sql.statements().filter((statement) => /INSERT/.test(statement))).toHaveLength(1);
      expect(await labelsIn(db, TABLE)).toEqual(['from the other application', 'from this application']);
      // Built with `new`, outside both: no way to tell which application it belongs to.
      const stray = new LedgerService(undefined as never, undefined as never);
      await expect(Promise.resolve().then(() => stray.record('stray'))).rejects.toBeInstanceOf(NoTransactionError);
    } finally {
      await other.close();
    }
  });
});

describe('@Transactional() declared where it cannot work', () => {
  it('fails where it is declared on an accessor', () => {
    expect(() => {
      class Broken {
        @Transactional()
        get value(): number {
          return 1;
        }
      }
      return Broken;
    }).toThrow(TransactionalOptionsError);
  });
});
