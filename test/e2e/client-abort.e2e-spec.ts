/**
 * A client that disconnects mid-request: the unit of work rolls back and gives its connection back
 * at once, while the handler still runs; the handler's later queries get TransactionFinishedError
 * and never run (in autocommit or otherwise). On PostgreSQL and MariaDB, over Express and Fastify,
 * with a pool of one connection, so a connection kept by the aborted request would starve the next.
 */
import { Body, Controller, Injectable, Post } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { AsyncLocalStorage } from 'node:async_hooks';
import { type EntityManager, type Repository } from 'typeorm';
import type { UnitOfWorkState } from '../../lib/core/unit-of-work';
import {
  InjectTxRepository,
  TransactionalModule,
  TransactionFinishedError,
  TransactionHost,
  TransactionRunner,
  Tx,
} from '../../lib/index';
import { ConnectionAudit } from '../../lib/testing/index';
import { adapters } from '../support/app';
import { connectionIdOf, INNODB_TRX_POLL, inTransaction } from '../support/connections';
import { engines, throughPgBouncer, typeormOptions } from '../support/databases';
import { OwnedItem, Owner, tableOf } from '../support/entities';
import { post } from '../support/http';
import { latch, type Latch } from '../support/latch';
import { poolStats } from '../support/leaks';
import { type AnyObserver, observer, waitFor } from '../support/observer';
import { outcomeName, outcomeOf, within } from '../support/outcomes';
import { RecordingSqlLogger } from '../support/recording-loggers';
import { rowsWhere } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const ITEMS = tableOf(OwnedItem);
const OWNERS = tableOf(Owner);

/** The label of the row a second connection keeps locked. */
const LOCKED = 'locked-by-another-connection';

/** What the handlers report to the test, and the latches the test holds them with. */
@Injectable()
class Probe {
  engine: 'postgres' | 'mariadb' = 'postgres';
  /** Resolved by a handler once it is where the test wants it, with its connection's id (0: none taken). */
  entered: Latch<number> = latch();
  /** Resolved by the test to let the handler go on. */
  release: Latch = latch();
  /** Resolved by the handler when it is done (its later queries tried). */
  finished: Latch = latch();
  /** The state of the handler's unit of work, read from inside it. */
  unitState: () => UnitOfWorkState | undefined = () => undefined;
  /** Primary key of the row a second connection keeps locked. */
  lockedId = 0;
  /** What each way of using the transaction gave the handler once it was let go. */
  later: Record<string, unknown> = {};

  reset(): void {
    this.release.resolve();
    this.entered = latch();
    this.release = latch();
    this.finished = latch();
    this.unitState = () => undefined;
    this.later = {};
  }
}

@Controller('abort')
class AbortController_ {
  constructor(
    private readonly probe: Probe,
    private readonly host: TransactionHost,
    @InjectTxRepository(OwnedItem) private readonly items: Repository<OwnedItem>,
    private readonly runner: TransactionRunner,
  ) {}

  @Post()
  async create(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ label: string }> {
    await tx.insert(OwnedItem, { label: body.label });
    return { label: body.label };
  }

  /** Writes, then waits on the test; then tries the transaction again, through @Tx() and a tx repository. */
  @Post('latched')
  async latched(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ label: string }> {
    this.probe.unitState = AsyncLocalStorage.bind(() => this.host.current()?.state);
    await tx.insert(OwnedItem, { label: body.label });
    this.probe.entered.resolve(await connectionIdOf(tx));
    await this.probe.release.promise;
    await this.triesAgain(tx, body.label);
    return { label: body.label };
  }

  /** Waits on the test before its first query. */
  @Post('before-first-query')
  async beforeFirstQuery(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ label: string }> {
    this.probe.unitState = AsyncLocalStorage.bind(() => this.host.current()?.state);
    this.probe.entered.resolve(0);
    await this.probe.release.promise;
    await this.triesAgain(tx, body.label);
    return { label: body.label };
  }

  /** Loads an item (with a lazy relation), then waits on the test; then reads the relation. */
  @Post('lazy-relation')
  async lazyRelation(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ label: string }> {
    this.probe.unitState = AsyncLocalStorage.bind(() => this.host.current()?.state);
    const item = await tx.findOneByOrFail(OwnedItem, { label: body.label });
    this.probe.entered.resolve(await connectionIdOf(tx));
    await this.probe.release.promise;
    this.probe.later['item.owner (lazy relation)'] = await outcomeOf(() => item.owner);
    this.probe.finished.resolve();
    return { label: body.label };
  }

  /** Writes, then blocks on a row another connection keeps locked, then waits on the test. */
  @Post('blocked')
  async blocked(@Body() body: { label: string }, @Tx() tx: EntityManager): Promise<{ label: string }> {
    this.probe.unitState = AsyncLocalStorage.bind(() => this.host.current()?.state);
    await tx.insert(OwnedItem, { label: body.label });
    this.probe.entered.resolve(await connectionIdOf(tx));
    const placeholder = this.probe.engine === 'postgres' ? '$1' : '?';
    // By primary key: a record lock only (a scan would also lock InnoDB's gaps and block the INSERT above).
    await tx.query(`SELECT id FROM ${ITEMS} WHERE id = ${placeholder} FOR UPDATE`, [this.probe.lockedId]);
    await this.probe.release.promise;
    await this.triesAgain(tx, body.label);
    return { label: body.label };
  }

  /** Every way a handler uses its transaction; each must now fail with TransactionFinishedError. */
  private async triesAgain(tx: EntityManager, label: string): Promise<void> {
    const late = `${label}-late`;
    const later = this.probe.later;
    later['tx.query()'] = await outcomeOf(() => tx.query('SELECT 1 AS one'));
    later['tx.find()'] = await outcomeOf(() => tx.find(OwnedItem));
    later['tx.insert()'] = await outcomeOf(() => tx.insert(OwnedItem, { label: late }));
    later['tx.getRepository().save()'] = await outcomeOf(() => tx.getRepository(OwnedItem).save({ label: late }));
    later['tx.createQueryBuilder().getMany()'] = await outcomeOf(() => tx.createQueryBuilder(OwnedItem, 'item').getMany());
    later['tx.transaction()'] = await outcomeOf(() => tx.transaction((inner) => inner.insert(OwnedItem, { label: late })));
    later['@InjectTxRepository().insert()'] = await outcomeOf(() => this.items.insert({ label: late }));
    later['TransactionRunner.run()'] = await outcomeOf(() =>
      this.runner.run((fresh) => fresh.insert(OwnedItem, { label: late })),
    );
    later["run(fn, { propagation: 'nested' })"] = await outcomeOf(() =>
      this.runner.run((fresh) => fresh.insert(OwnedItem, { label: late }), { propagation: 'nested' }),
    );
    this.probe.finished.resolve();
  }
}

/** What {@link AbortController_.triesAgain} must record: every use refused with TransactionFinishedError. */
const ALL_FINISHED = Object.fromEntries(
  [
    'tx.query()',
    'tx.find()',
    'tx.insert()',
    'tx.getRepository().save()',
    'tx.createQueryBuilder().getMany()',
    'tx.transaction()',
    '@InjectTxRepository().insert()',
    'TransactionRunner.run()',
    "run(fn, { propagation: 'nested' })",
  ].map((use) => [use, TransactionFinishedError.name]),
);

describe.each(engines)('when the client aborts, on $name', (engine) => {
  const db = suiteObserver(engine);

  describe.each(adapters)('over %s', (adapter) => {
    const applicationName = `abort-e2e-${adapter}`;
    const sqlLog = new RecordingSqlLogger();
    let probe: Probe;

    /** What each later use of the transaction gave the handler, by class name. */
    function laterOutcomes(): Record<string, string> {
      return Object.fromEntries(Object.entries(probe.later).map(([use, outcome]) => [use, outcomeName(outcome)]));
    }

    /** Sends a request the test can abort. */
    function abortable(path: string, label: string): { response: Promise<Response>; abort: () => void } {
      const controller = new AbortController();
      const response = post(`${testApp.url}${path}`, { label }, { signal: controller.signal });
      // Observed by the test; keep an abort from surfacing as an unhandled rejection first.
      response.catch(() => undefined);
      return { response, abort: () => controller.abort() };
    }

    // Before the suite's leak check (hooks run in the order they are declared): a handler the test held
    // is let go, and finishes, before the next test starts.
    afterEach(async () => {
      probe.release.resolve();
      if (probe.entered.settled) await waitFor(() => probe.finished.settled);
    });

    const testApp = suiteApp(db, {
      applicationName,
      tables: [OwnedItem, Owner],
      leakCheck: { mariadb: 'app-connections' },
      app: () => ({
        adapter,
        imports: [
          TypeOrmModule.forRoot(
            typeormOptions(engine, {
              poolSize: 1,
              applicationName,
              entities: [OwnedItem, Owner],
              logger: sqlLog,
              // Keep the pooled connection for the whole suite (pg-pool closes idle ones after 10 s by
              // default), so "back to its starting count" means exactly that.
              extra: engine.name === 'postgres' ? { idleTimeoutMillis: 0 } : undefined,
            }),
          ),
          TransactionalModule.forRoot(),
          TransactionalModule.forFeature([OwnedItem]),
        ],
        controllers: [AbortController_],
        providers: [Probe],
      }),
    });

    beforeAll(() => {
      probe = testApp.get(Probe);
      probe.engine = engine.name;
    });

    beforeEach(() => {
      sqlLog.clear();
    });

    afterEach(() => {
      probe.reset();
    });

    describe('mid-handler, after a write', () => {
      it('rolls back and releases the connection right away, while the handler still waits', async () => {
        const label = `aborted-${adapter}`;
        const start = poolStats(testApp.dataSource);
        const request = abortable('/abort/latched', label);
        const connectionId = await within(probe.entered.promise, 'the handler reaching its latch');
        await waitFor(async () => expect(await inTransaction(db, connectionId)).toBe(true), INNODB_TRX_POLL);
        expect(poolStats(testApp.dataSource).idle).toBe(start.idle - 1);

        request.abort();

        await expect(request.response).rejects.toThrow();
        await waitFor(async () => {
          expect(probe.unitState()).toBe('rolledBack');
          expect(poolStats(testApp.dataSource)).toEqual(start);
          expect(await inTransaction(db, connectionId)).toBe(false);
          if (db.engine === 'postgres') {
            expect(await db.idleInTransactionCount(applicationName)).toBe(0);
            // The same backend, back in the pool: idle, outside any transaction. (Through PgBouncer the
            // client connection goes back; the server backend it ran on serves any client next.)
            if (!throughPgBouncer()) {
              const backends = await db.backends(applicationName);
              expect(backends.map(({ pid, state, xactStart }) => ({ pid, state, xactStart }))).toEqual([
                { pid: connectionId, state: 'idle', xactStart: null },
              ]);
            }
          } else {
            // The same connection, back in the pool (not destroyed).
            expect((await db.processlist()).map((process) => Number(process.id))).toContain(connectionId);
          }
        }, INNODB_TRX_POLL);
        expect(await rowsWhere(db, ITEMS, 'label', label)).toEqual([]);
        expect(sqlLog.transactionControl().at(-1)).toBe('ROLLBACK');
        // All of that happened while the handler was still held on its latch.
        expect(probe.finished.settled).toBe(false);
      });

      it("fails the handler's later queries with TransactionFinishedError, and they never run", async () => {
        const label = `late-${adapter}`;
        const request = abortable('/abort/latched', label);
        await within(probe.entered.promise, 'the handler reaching its latch');
        request.abort();
        await waitFor(() => expect(probe.unitState()).toBe('rolledBack'));
        sqlLog.clear();

        probe.release.resolve();
        await within(probe.finished.promise, 'the handler finishing');

        // Nothing ran: no statement sent, in autocommit or otherwise, and nothing persisted.
        expect(sqlLog.statements()).toEqual([]);
        expect(await rowsWhere(db, ITEMS, 'label', label)).toEqual([]);
        expect(await rowsWhere(db, ITEMS, 'label', `${label}-late`)).toEqual([]);
        // Every way of using the transaction says why it is refused.
        expect(laterOutcomes()).toEqual(ALL_FINISHED);
        for (const outcome of Object.values(probe.later)) {
          expect(String(outcome)).toMatch(/already rolled back \(the client disconnected\)/);
        }
      });

      it('serves the next request on the pool of one while the aborted handler is still held', async () => {
        const request = abortable('/abort/latched', `held-${adapter}`);
        await within(probe.entered.promise, 'the handler reaching its latch');
        request.abort();

        const next = await post(`${testApp.url}/abort`, { label: `next-${adapter}` });

        expect(next.status).toBe(201);
        expect(await rowsWhere(db, ITEMS, 'label', `next-${adapter}`)).toHaveLength(1);
        expect(await rowsWhere(db, ITEMS, 'label', `held-${adapter}`)).toEqual([]);
        expect(probe.finished.settled).toBe(false);
      });
    });

    describe('after the handler loaded an entity with a lazy relation', () => {
      it('fails the later load of that relation with TransactionFinishedError instead of running it on another connection', async () => {
        const label = `lazy-${adapter}`;
        const [owner] = await db.query<{ id: number }>(`INSERT INTO ${OWNERS} (name) VALUES ('owner') RETURNING id`);
        const ownerColumn = db.engine === 'postgres' ? '"ownerId"' : 'ownerId';
        const placeholders = db.engine === 'postgres' ? '$1, $2' : '?, ?';
        await db.query(`INSERT INTO ${ITEMS} (label, ${ownerColumn}) VALUES (${placeholders})`, [label, owner.id]);
        const audit = ConnectionAudit.attach(testApp.dataSource);
        try {
          const request = abortable('/abort/lazy-relation', label);
          await within(probe.entered.promise, 'the handler reaching its latch');
          request.abort();
          await waitFor(() => expect(probe.unitState()).toBe('rolledBack'));
          sqlLog.clear();
          audit.reset();

          probe.release.resolve();
          await within(probe.finished.promise, 'the handler finishing');

          // Nothing ran after the unit of work ended: no statement, no connection taken.
          expect(sqlLog.statements()).toEqual([]);
          expect(audit.units()).toEqual([]);
        } finally {
          audit.detach();
        }
        expect(laterOutcomes()).toEqual({ 'item.owner (lazy relation)': TransactionFinishedError.name });
      });
    });

    describe('before the handler queried', () => {
      it('never takes a connection: the later query fails with TransactionFinishedError', async () => {
        const label = `unqueried-${adapter}`;
        const audit = ConnectionAudit.attach(testApp.dataSource);
        try {
          const request = abortable('/abort/before-first-query', label);
          await within(probe.entered.promise, 'the handler reaching its latch');
          request.abort();
          await waitFor(() => expect(probe.unitState()).toBe('rolledBack'));

          probe.release.resolve();
          await within(probe.finished.promise, 'the handler finishing');

          expect(audit.units()).toEqual([]);
        } finally {
          audit.detach();
        }
        expect(sqlLog.statements()).toEqual([]);
        expect(await rowsWhere(db, ITEMS, 'label', `${label}-late`)).toEqual([]);
        expect(laterOutcomes()).toEqual(ALL_FINISHED);
      });
    });

    describe("while the handler's query waits on a lock", () => {
      let lockHolder: AnyObserver;

      beforeEach(async () => {
        const placeholder = engine.name === 'postgres' ? '$1' : '?';
        lockHolder = await observer(engine);
        await db.query(`INSERT INTO ${ITEMS} (label) VALUES (${placeholder})`, [LOCKED]);
        const [row] = await db.query<{ id: number }>(`SELECT id FROM ${ITEMS} WHERE label = ${placeholder}`, [LOCKED]);
        probe.lockedId = Number(row.id);
        await lockHolder.query(engine.name === 'postgres' ? 'BEGIN' : 'START TRANSACTION');
        await lockHolder.query(`SELECT id FROM ${ITEMS} WHERE id = ${placeholder} FOR UPDATE`, [probe.lockedId]);
      });

      afterEach(async () => {
        await lockHolder.query('ROLLBACK').catch(() => undefined);
        await lockHolder.close();
      });

      it('rolls back and releases the connection once that query returns', async () => {
        const label = `blocked-${adapter}`;
        const start = poolStats(testApp.dataSource);
        const request = abortable('/abort/blocked', label);
        const connectionId = await within(probe.entered.promise, 'the handler reaching its latch');
        await waitFor(async () => {
          if (db.engine === 'postgres') {
            const [row] = await db.query<{ wait: string | null }>(
              'SELECT wait_event_type AS wait FROM pg_stat_activity WHERE pid = $1',
              [connectionId],
            );
            expect(row.wait).toBe('Lock');
          } else {
            const running = (await db.processlist()).find((p) => Number(p.id) === connectionId);
            expect(running?.info).toMatch(/FOR UPDATE/);
          }
        });

        request.abort();
        await expect(request.response).rejects.toThrow();
        await waitFor(() => expect(probe.unitState()).toBe('settling'));
        await lockHolder.query('ROLLBACK');

        await waitFor(async () => {
          expect(probe.unitState()).toBe('rolledBack');
          expect(poolStats(testApp.dataSource)).toEqual(start);
          expect(await inTransaction(db, connectionId)).toBe(false);
        }, INNODB_TRX_POLL);
        expect(await rowsWhere(db, ITEMS, 'label', label)).toEqual([]);
        probe.release.resolve();
        await within(probe.finished.promise, 'the handler finishing');
        // (Every later use is covered in 'mid-handler, after a write'; here, the writes.)
        expect(outcomeName(probe.later['tx.insert()'])).toBe(TransactionFinishedError.name);
        expect(outcomeName(probe.later['@InjectTxRepository().insert()'])).toBe(TransactionFinishedError.name);
        expect(await rowsWhere(db, ITEMS, 'label', `${label}-late`)).toEqual([]);
      });
    });
  });
});
