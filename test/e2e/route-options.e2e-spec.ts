import { Controller, Get, Post } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { InjectDataSource, InjectRepository, TypeOrmModule } from '@nestjs/typeorm';
import { DataSource, EntityManager, Repository } from 'typeorm';
import {
  type IsolationLevel,
  NoTransaction,
  Transactional,
  TransactionalModule,
  TransactionHost,
  TransactionRunner,
  TransactionTimeoutError,
  Tx,
} from '../../lib';
import { connectionIdOf, sleepSql } from '../support/connections';
import { type EngineName, engines, typeormOptions } from '../support/databases';
import { Item, tableOf } from '../support/entities';
import { type ErrorBody, ErrorBodyFilter } from '../support/error-body-filter';
import { latch, type Latch } from '../support/latch';
import { expectNothingLeaked } from '../support/leaks';
import { waitFor } from '../support/observer';
import { RecordingSqlLogger } from '../support/recording-loggers';
import { labelsIn } from '../support/rows';
import { suiteApp, suiteObserver } from '../support/suite';

const TABLE = tableOf(Item);
const PROBE_ID = 1;

/**
 * The timeoutMs of these tests. It also ends a transaction idle for longer (PostgreSQL
 * idle_in_transaction_session_timeout): a shorter one could end it between two statements of the
 * handler when a busy machine pauses the test process, and fail the test for the wrong reason. The
 * statements it must stop sleep 5 s.
 */
const TIMEOUT_MS = 1000;

/**
 * Isolation levels are checked by what they do, on both databases: a transaction reads a row,
 * another connection changes it and commits, the transaction reads it again. Under READ COMMITTED it
 * sees the change; under REPEATABLE READ it keeps its snapshot. (MariaDB's `@@tx_isolation` shows
 * the session's level, not the one `SET TRANSACTION` gave the current transaction.)
 */
interface SnapshotProbe {
  firstRead: Latch;
  gate: Latch;
}
let snapshot: SnapshotProbe = { firstRead: latch(), gate: latch() };

interface ProbeResult {
  sawConcurrentCommit: boolean;
  /** PostgreSQL only: `SHOW transaction_isolation` inside the transaction. */
  level: string | null;
}

async function probeIsolation(tx: EntityManager): Promise<ProbeResult> {
  const read = async () =>
    (await tx.query<Array<{ label: string }>>(`SELECT label FROM ${TABLE} WHERE id = ${PROBE_ID}`))[0].label;
  const first = await read();
  snapshot.firstRead.resolve();
  await snapshot.gate.promise;
  const second = await read();
  const level =
    tx.dataSource.options.type === 'postgres'
      ? (await tx.query<Array<{ transaction_isolation: string }>>('SHOW transaction_isolation'))[0].transaction_isolation
      : null;
  return { sawConcurrentCommit: first !== second, level };
}

/**
 * The controllers of one engine. The module default is a level the database does not use by itself
 * (PostgreSQL: READ COMMITTED; MariaDB: REPEATABLE READ), so that every level a route ends up with is
 * observable as a difference.
 */
function controllersFor(moduleDefault: IsolationLevel, other: IsolationLevel) {
  @Controller('options')
  class HandlerOptionsController {
    constructor(
      private readonly host: TransactionHost,
      @InjectRepository(Item) private readonly plain: Repository<Item>,
    ) {}

    @Get('isolation/module-default')
    moduleDefaultLevel(@Tx() tx: EntityManager) {
      return probeIsolation(tx);
    }

    @Get('isolation/handler')
    @Transactional({ isolationLevel: other })
    handlerLevel(@Tx() tx: EntityManager) {
      return probeIsolation(tx);
    }

    @Post('read-only/write')
    @Transactional({ readOnly: true })
    async readOnlyWrite(@Tx() tx: EntityManager) {
      await tx.insert(Item, { label: 'written in a read-only transaction' });
      return { ok: true };
    }

    @Get('read-only/read')
    @Transactional({ readOnly: true })
    async readOnlyRead(@Tx() tx: EntityManager) {
      return { labels: (await tx.find(Item, { order: { label: 'ASC' } })).map((item) => item.label) };
    }

    @Get('timeout')
    @Transactional({ timeoutMs: TIMEOUT_MS })
    async timeout(@Tx() tx: EntityManager) {
      const engine: EngineName = tx.dataSource.options.type === 'postgres' ? 'postgres' : 'mariadb';
      await tx.query(sleepSql(engine, 5));
      return { finished: true };
    }

    @Post('no-transaction/handler')
    @NoTransaction()
    async noTransactionHandler() {
      const current = this.host.current() ?? null;
      await this.plain.insert({ label: 'handler without a transaction' });
      return { current, count: await this.plain.count() };
    }
  }

  @Controller('class-options')
  @Transactional({ isolationLevel: other, readOnly: true })
  class ClassOptionsController {
    @Get('inherits')
    inherits(@Tx() tx: EntityManager) {
      return probeIsolation(tx);
    }

    @Get('overrides')
    @Transactional({ isolationLevel: moduleDefault })
    overrides(@Tx() tx: EntityManager) {
      return probeIsolation(tx);
    }

    @Post('write')
    async write(@Tx() tx: EntityManager) {
      await tx.insert(Item, { label: 'class says read-only' });
      return { ok: true };
    }

    @Post('write-allowed')
    @Transactional({ readOnly: false })
    async writeAllowed(@Tx() tx: EntityManager) {
      await tx.insert(Item, { label: 'handler says read-write' });
      return { ok: true };
    }
  }

  @Controller('no-transaction-class')
  @NoTransaction()
  class NoTransactionController {
    constructor(
      private readonly host: TransactionHost,
      @InjectRepository(Item) private readonly plain: Repository<Item>,
      @InjectDataSource() private readonly dataSource: DataSource,
    ) {}

    @Post()
    async write() {
      const current = this.host.current() ?? null;
      await this.plain.insert({ label: 'class without a transaction' });
      // Even a raw query on the data source: no unit of work, nothing for the guard to catch.
      const [{ count }] = await this.dataSource.query<Array<{ count: unknown }>>(`SELECT COUNT(*) AS count FROM ${TABLE}`);
      return { current, count: Number(count) };
    }
  }

  return [HandlerOptionsController, ClassOptionsController, NoTransactionController];
}

describe.each(engines)('route options on $name', (engine) => {
  const applicationName = `route-options-e2e-${engine.name}`;
  // A level the database does not default to, and the other one.
  const moduleDefault: IsolationLevel = engine.name === 'postgres' ? 'REPEATABLE READ' : 'READ COMMITTED';
  const other: IsolationLevel = engine.name === 'postgres' ? 'READ COMMITTED' : 'REPEATABLE READ';
  const sees = (level: IsolationLevel) => level === 'READ COMMITTED';
  const pgName = (level: IsolationLevel) => level.toLowerCase();
  const sql = new RecordingSqlLogger();
  // Before the leak check: a probing route of a failed test still waiting at its gate would hold the connection.
  afterEach(() => snapshot.gate.resolve());
  const db = suiteObserver(engine);
  const testApp = suiteApp(db, {
    applicationName,
    tables: [Item],
    app: () => ({
      adapter: 'express',
      imports: [
        TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item], logger: sql })),
        TypeOrmModule.forFeature([Item]),
        TransactionalModule.forRoot({ isolationLevel: moduleDefault }),
      ],
      controllers: controllersFor(moduleDefault, other),
      providers: [{ provide: APP_FILTER, useClass: ErrorBodyFilter }],
    }),
  });
  let runner: TransactionRunner;
  let host: TransactionHost;

  beforeAll(() => {
    runner = testApp.get(TransactionRunner);
    host = testApp.get(TransactionHost);
  });

  beforeEach(() => {
    sql.clear();
    snapshot = { firstRead: latch(), gate: latch() };
  });

  const get = (path: string) => fetch(`${testApp.url}${path}`);
  const post = (path: string) => fetch(`${testApp.url}${path}`, { method: 'POST' });
  const beginOf = () =>
    sql.transactionControl({ settings: true }).find((statement) => /^(BEGIN|START TRANSACTION)/.test(statement));

  /** Runs a probing route while another connection commits a change between its two reads. */
  async function isolationSeenBy(path: string): Promise<ProbeResult> {
    await db.query(`INSERT INTO ${TABLE} (id, label) VALUES (${PROBE_ID}, 'before')`);
    const response = get(path);
    await Promise.race([
      snapshot.firstRead.promise,
      response.then((res) => {
        throw new Error(`${path} answered ${res.status} before its first read`);
      }),
    ]);
    await db.query(`UPDATE ${TABLE} SET label = 'after' WHERE id = ${PROBE_ID}`);
    snapshot.gate.resolve();
    const res = await response;
    expect(res.status).toBe(200);
    return (await res.json()) as ProbeResult;
  }

  /** What the route must report under `level`. */
  const behavesAs = (level: IsolationLevel): ProbeResult => ({
    sawConcurrentCommit: sees(level),
    level: engine.name === 'postgres' ? pgName(level) : null,
  });

  describe('isolationLevel', () => {
    it("applies the module's default when the route sets none", async () => {
      expect(await isolationSeenBy('/options/isolation/module-default')).toEqual(behavesAs(moduleDefault));
      expect(sql.transactionControl({ settings: true }).join('; ')).toContain(`ISOLATION LEVEL ${moduleDefault}`);
    });

    it("applies the handler's level over the module's", async () => {
      expect(await isolationSeenBy('/options/isolation/handler')).toEqual(behavesAs(other));
      expect(sql.transactionControl({ settings: true }).join('; ')).toContain(`ISOLATION LEVEL ${other}`);
    });

    it("applies the class's level to a handler that sets none", async () => {
      expect(await isolationSeenBy('/class-options/inherits')).toEqual(behavesAs(other));
    });

    it("lets the handler's level win over the class's", async () => {
      expect(await isolationSeenBy('/class-options/overrides')).toEqual(behavesAs(moduleDefault));
      // The class's other options still apply to it.
      expect(beginOf()).toMatch(/READ ONLY/);
    });
  });

  describe('readOnly', () => {
    const readOnlyError = engine.name === 'postgres' ? { code: '25006' } : { errno: 1792 };

    it('has the database reject a write, and the request fails', async () => {
      const res = await post('/options/read-only/write');

      expect(res.status).toBe(500);
      expect(await res.json()).toMatchObject({ name: 'QueryFailedError', ...readOnlyError });
      expect(beginOf()).toMatch(/READ ONLY/);
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it('serves reads', async () => {
      await db.query(`INSERT INTO ${TABLE} (label) VALUES ('readable')`);

      const res = await get('/options/read-only/read');

      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ labels: ['readable'] });
      expect(beginOf()).toMatch(/READ ONLY/);
    });

    it('comes from the class when the handler sets none', async () => {
      const res = await post('/class-options/write');

      expect(res.status).toBe(500);
      expect(await res.json()).toMatchObject({ name: 'QueryFailedError', ...readOnlyError });
      expect(await labelsIn(db, TABLE)).toEqual([]);
    });

    it("is overridden by the handler's readOnly: false", async () => {
      const res = await post('/class-options/write-allowed');

      expect(res.status).toBe(201);
      expect(beginOf()).not.toMatch(/READ ONLY/);
      expect(await labelsIn(db, TABLE)).toEqual(['handler says read-write']);
    });
  });

  describe('timeoutMs', () => {
    const timeoutCause = engine.name === 'postgres' ? { code: '57014' } : { errno: 1969 };

    it('has the database stop a long statement of a route; the request fails with TransactionTimeoutError', async () => {
      const res = await get('/options/timeout');

      expect(res.status).toBe(500);
      const body = (await res.json()) as ErrorBody;
      expect(body).toMatchObject({ name: 'TransactionTimeoutError', cause: { name: 'QueryFailedError', ...timeoutCause } });
      expect(body.message).toContain('GET /options/timeout');
      // The connection is back and usable.
      await expectNothingLeaked({ dataSource: testApp.dataSource, db, applicationName });
      expect((await get('/options/read-only/read')).status).toBe(200);
    });

    it('rejects TransactionRunner.run() with TransactionTimeoutError caused by the driver error', async () => {
      const run = runner.run((tx) => tx.query(sleepSql(engine.name, 5)), { timeoutMs: TIMEOUT_MS, name: 'slow job' });

      await expect(run).rejects.toBeInstanceOf(TransactionTimeoutError);
      await expect(run).rejects.toMatchObject({ cause: { name: 'QueryFailedError', driverError: timeoutCause } });
    });

    it('ends a transaction that sits idle longer than timeoutMs, with TransactionTimeoutError', async () => {
      const holding = latch<number>();
      const serverEndedIt = latch();
      const run = runner.run(
        async (tx) => {
          holding.resolve(await connectionIdOf(tx));
          // The transaction idles here (think: awaiting a slow HTTP call) until the database ends it.
          await serverEndedIt.promise;
          await tx.query('SELECT 1');
        },
        { timeoutMs: TIMEOUT_MS, name: 'idle job' },
      );
      const id = await holding.promise;
      const sessionSql =
        engine.name === 'postgres'
          ? 'SELECT pid FROM pg_stat_activity WHERE pid = $1'
          : 'SELECT ID FROM information_schema.PROCESSLIST WHERE ID = ?';
      await waitFor(async () => expect(await db.query(sessionSql, [id])).toEqual([]), { intervalMs: 50 });

      serverEndedIt.resolve();

      await expect(run).rejects.toBeInstanceOf(TransactionTimeoutError);
      await expect(run).rejects.toThrow(
        new RegExp(
          `^The database closed the connection of idle job \\(.+\\): its transaction sat idle longer than timeoutMs \\(${TIMEOUT_MS} ms\\)`,
        ),
      );
      // The pool replaced the connection the server closed.
      await expectNothingLeaked({ dataSource: testApp.dataSource, db, applicationName });
      await expect(runner.run((tx) => connectionIdOf(tx))).resolves.not.toBe(id);
    });

    it('leaves no timeout on the connection for the next unit of work', async () => {
      let limitedId: number | undefined;
      const limited = runner.run(
        async (tx) => {
          limitedId = await connectionIdOf(tx);
          await tx.query(sleepSql(engine.name, 5));
        },
        { timeoutMs: TIMEOUT_MS },
      );
      await expect(limited).rejects.toBeInstanceOf(TransactionTimeoutError);

      const next = await runner.run(async (tx) => {
        const id = await connectionIdOf(tx);
        const settings =
          engine.name === 'postgres'
            ? await tx.query<Array<{ statement: string; idle: string }>>(
                `SELECT current_setting('statement_timeout') AS statement, current_setting('idle_in_transaction_session_timeout') AS idle`,
              )
            : await tx.query<Array<{ statement: unknown; idle: unknown }>>(
                'SELECT @@SESSION.max_statement_time AS statement, @@SESSION.idle_transaction_timeout AS idle',
              );
        // Longer than the previous limit.
        await tx.query(sleepSql(engine.name, (TIMEOUT_MS * 1.5) / 1000));
        return { id, statement: Number(settings[0].statement), idle: Number(settings[0].idle) };
      });

      // A pool of one: the same connection both times.
      expect(next.id).toBe(limitedId);
      expect(next).toMatchObject({ statement: 0, idle: 0 });
    });
  });

  describe('@NoTransaction()', () => {
    it('on a handler: no unit of work, and a plain repository works without the guard', async () => {
      const violationsBefore = host.stats().guardViolations;

      const res = await post('/options/no-transaction/handler');

      expect(res.status).toBe(201);
      expect(await res.json()).toEqual({ current: null, count: 1 });
      expect(host.stats().guardViolations).toBe(violationsBefore);
      expect(sql.transactionControl({ settings: true })).toEqual([]);
      expect(await labelsIn(db, TABLE)).toEqual(['handler without a transaction']);
    });

    it('on a class: no unit of work, and plain repositories and queries work without the guard', async () => {
      const violationsBefore = host.stats().guardViolations;

      const res = await post('/no-transaction-class');

      expect(res.status).toBe(201);
      expect(await res.json()).toEqual({ current: null, count: 1 });
      expect(host.stats().guardViolations).toBe(violationsBefore);
      expect(sql.transactionControl({ settings: true })).toEqual([]);
      expect(await labelsIn(db, TABLE)).toEqual(['class without a transaction']);
    });
  });
});
