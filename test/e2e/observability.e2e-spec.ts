import { BadRequestException, Controller, Get, Post } from '@nestjs/common';
import { APP_FILTER } from '@nestjs/core';
import { TypeOrmModule } from '@nestjs/typeorm';
import { Registry } from 'prom-client';
import { EntityManager } from 'typeorm';
import { Transactional, TransactionalModule, type TransactionalStats, TransactionHost, Tx } from '../../lib';
import { registerTransactionMetrics } from '../../lib/prometheus';
import { sleepSql } from '../support/connections';
import { type EngineName, engines, typeormOptions } from '../support/databases';
import { Item } from '../support/entities';
import { type ErrorBody, ErrorBodyFilter } from '../support/error-body-filter';
import { call } from '../support/http';
import { latch, type Latch } from '../support/latch';
import { waitFor } from '../support/observer';
import { RecordingNestLogger } from '../support/recording-loggers';
import { suiteApp, suiteObserver } from '../support/suite';

/** The slow routes' threshold; the module default is far above anything these tests run. */
const SLOW_MS = 200;
/**
 * How long the slow statement runs: ten times the threshold, so that the monitor still finds it running
 * when its timer fires late on a busy machine.
 */
const SLOW_STATEMENT_MS = SLOW_MS * 10;
const STATS_INTERVAL_MS = 100;
/** The acquisition timeout of the app whose pool is kept busy past it; the other app's is the generous default. */
const SHORT_ACQUIRE_TIMEOUT_MS = 2000;

/** `/observed/hold` signals `reached` once it holds its connection, then waits for `release`. */
let hold: { reached: Latch; release: Latch } = { reached: latch(), release: latch() };

@Controller('observed')
class ObservedController {
  @Post('write')
  async write(@Tx() tx: EntityManager) {
    await tx.insert(Item, { label: 'write' });
    return { ok: true };
  }

  @Post('fail')
  async fail(@Tx() tx: EntityManager) {
    await tx.insert(Item, { label: 'fail' });
    throw new BadRequestException('refused after a write');
  }

  @Get('nothing')
  nothing() {
    return { ok: true };
  }

  @Post('hold')
  async hold(@Tx() tx: EntityManager) {
    await tx.insert(Item, { label: 'hold' });
    hold.reached.resolve();
    await hold.release.promise;
    return { ok: true };
  }

  /** Holds its connection idle in transaction, waiting on the test (as on a slow HTTP call). */
  @Post('slow-idle')
  @Transactional({ slowTransactionMs: SLOW_MS })
  async slowIdle(@Tx() tx: EntityManager) {
    await tx.insert(Item, { label: 'slow-idle' });
    hold.reached.resolve();
    await hold.release.promise;
    return { ok: true };
  }

  /** Holds its connection in one long statement. */
  @Post('slow-statement')
  @Transactional({ slowTransactionMs: SLOW_MS })
  async slowStatement(@Tx() tx: EntityManager) {
    const engine: EngineName = tx.dataSource.options.type === 'postgres' ? 'postgres' : 'mariadb';
    await tx.query(sleepSql(engine, SLOW_STATEMENT_MS / 1000));
    return { ok: true };
  }
}

describe.each(engines)('observability on $name', (engine) => {
  const applicationName = `observability-${engine.name}`;
  const nestLog = new RecordingNestLogger();
  const db = suiteObserver(engine);
  // Registered before the app's leak check, which runs after it: a request still held would fail it.
  afterEach(() => {
    hold.release.resolve();
  });
  const testApp = suiteApp(db, {
    applicationName,
    tables: [Item],
    app: () => ({
      adapter: 'express',
      imports: [
        // Pool of 1: a second request waits for the first one's connection.
        TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item] })),
        TransactionalModule.forRoot({ slowTransactionMs: 60_000, logStatsIntervalMs: STATS_INTERVAL_MS }),
      ],
      controllers: [ObservedController],
      providers: [{ provide: APP_FILTER, useClass: ErrorBodyFilter }],
      logger: nestLog,
    }),
  });
  let host: TransactionHost;

  beforeAll(() => {
    host = testApp.get(TransactionHost);
  });

  beforeEach(() => {
    hold = { reached: latch(), release: latch() };
    nestLog.clear();
  });

  const own = (stats: TransactionalStats) => stats.dataSources.default;

  describe('TransactionHost.stats()', () => {
    it('counts commits, rollbacks, acquisitions and hold times of concurrent requests, and ends at rest', async () => {
      const before = host.stats();
      const responses = await Promise.all([
        ...Array.from({ length: 20 }, () => call('POST', `${testApp.url}/observed/write`)),
        ...Array.from({ length: 5 }, () => call('POST', `${testApp.url}/observed/fail`)),
        ...Array.from({ length: 5 }, () => call('GET', `${testApp.url}/observed/nothing`)),
      ]);
      expect(responses.map((r) => r.status).sort()).toEqual([
        ...Array(5).fill(200),
        ...Array(20).fill(201),
        ...Array(5).fill(400),
      ]);

      const after = host.stats();
      expect(after.openUnitsOfWork).toBe(0);
      expect(after.connectionsHeld).toBe(0);
      expect(after.commits - before.commits).toBe(20);
      expect(after.rollbacks - before.rollbacks).toBe(5);
      // The routes that never queried took no connection and sent neither COMMIT nor ROLLBACK.
      expect(own(after).acquisitionWaitMs.count - own(before).acquisitionWaitMs.count).toBe(25);
      expect(own(after).transactionMs.count - own(before).transactionMs.count).toBe(25);
      expect(own(after).commits).toBe(after.commits);
      expect(own(after).pool).toEqual({ total: 1, idle: 1, waiting: 0, max: 1 });
      // 25 requests queued on one connection: most of them waited for it.
      expect(own(after).acquisitionWaitMs.max).toBeGreaterThan(0);
      const { p50, p99, max } = own(after).transactionMs;
      expect(p50).toBeGreaterThan(0);
      expect(p50).toBeLessThanOrEqual(p99);
      expect(p99).toBeLessThanOrEqual(max);
    });

    it('shows a request holding the only connection and another one waiting for it', async () => {
      const holding = call('POST', `${testApp.url}/observed/hold`);
      await hold.reached.promise;
      const waiting = call('POST', `${testApp.url}/observed/write`);
      const during = await waitFor(() => {
        const stats = host.stats();
        return own(stats).pool.waiting === 1 && stats;
      });
      expect(during.openUnitsOfWork).toBe(2);
      expect(during.connectionsHeld).toBe(1);
      expect(own(during).pool).toEqual({ total: 1, idle: 0, waiting: 1, max: 1 });

      hold.release.resolve();
      expect((await holding).status).toBe(201);
      expect((await waiting).status).toBe(201);
      expect(host.stats()).toMatchObject({ openUnitsOfWork: 0, connectionsHeld: 0 });
    });

    describe(`with an acquisition timeout of ${SHORT_ACQUIRE_TIMEOUT_MS} ms`, () => {
      const starvedName = `observability-starved-${engine.name}`;
      // An app of its own: the other one's acquisition timeout is long, for a busy machine.
      const starvedApp = suiteApp(db, {
        applicationName: starvedName,
        app: () => ({
          adapter: 'express',
          imports: [
            TypeOrmModule.forRoot(
              typeormOptions(engine, {
                poolSize: 1,
                applicationName: starvedName,
                entities: [Item],
                acquireTimeoutMs: SHORT_ACQUIRE_TIMEOUT_MS,
              }),
            ),
            TransactionalModule.forRoot({ slowTransactionMs: 60_000 }),
          ],
          controllers: [ObservedController],
          providers: [{ provide: APP_FILTER, useClass: ErrorBodyFilter }],
          // Nest's logger is one for the process: an app created without it would silence the other's.
          logger: nestLog,
        }),
      });

      it('fails a request that waited out the acquisition timeout with ConnectionAcquisitionError, and counts it', async () => {
        const starvedHost = starvedApp.get(TransactionHost);
        const before = starvedHost.stats();
        const holding = call('POST', `${starvedApp.url}/observed/hold`);
        await hold.reached.promise;

        const starved = await call('POST', `${starvedApp.url}/observed/write`);
        hold.release.resolve();

        expect(starved.status).toBe(500);
        const body = starved.body as ErrorBody;
        expect(body.name).toBe('ConnectionAcquisitionError');
        expect(body.message).toMatch(
          /^POST \/observed\/write got no connection of data source 'default' after \d+ ms \(pool: 1 of 1 open, 0 idle, \d+ waiting; 1 held by units of work\): /,
        );
        expect(body.message).toContain('Every connection stayed in use by units of work for the whole acquisition timeout');
        expect((await holding).status).toBe(201);
        const after = starvedHost.stats();
        expect(after.acquisitionFailures - before.acquisitionFailures).toBe(1);
        expect(after.commits - before.commits).toBe(1);
        expect(after.rollbacks - before.rollbacks).toBe(0);
      });
    });
  });

  describe('slowTransactionMs', () => {
    const slowWarnings = () => nestLog.warnings().filter((w) => w.includes('slowTransactionMs'));

    it('warns once, while the connection is still held, where it was taken and that it sat idle in transaction', async () => {
      const before = host.stats().slowTransactions;
      const request = call('POST', `${testApp.url}/observed/slow-idle`);
      await hold.reached.promise;
      const [warning] = await waitFor(() => {
        const found = slowWarnings();
        return found.length > 0 && found;
      });
      // Logged before the request ended: the handler is still waiting on the test.
      expect(hold.release.settled).toBe(false);
      hold.release.resolve();
      expect((await request).status).toBe(201);

      expect(warning).toMatch(
        new RegExp(
          `^POST /observed/slow-idle has held a connection of data source 'default' for \\d+ ms, longer than ` +
            `slowTransactionMs \\(${SLOW_MS} ms\\); it took it at .*observability\\.e2e-spec\\.ts:\\d+`,
        ),
      );
      expect(warning).toMatch(/\d+ ms went to 1 statement\(s\) in the database, \d+ ms to idling in transaction between them\./);
      expect(warning).toContain('Idle in transaction means the connection waited on application code');
      expect(slowWarnings()).toHaveLength(1);
      expect(host.stats().slowTransactions - before).toBe(1);
    });

    it('says so when the time goes to a statement still running in the database', async () => {
      const response = await call('POST', `${testApp.url}/observed/slow-statement`);
      expect(response.status).toBe(201);
      const warnings = slowWarnings();
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toContain('POST /observed/slow-statement has held a connection');
      expect(warnings[0]).toContain('(one is running now)');
      expect(warnings[0]).toContain('Most of it went to the database');
    });

    it('stays quiet for a unit of work under its threshold', async () => {
      await Promise.all(Array.from({ length: 5 }, () => call('POST', `${testApp.url}/observed/write`)));
      expect(slowWarnings()).toEqual([]);
    });
  });

  it("logs the stats of the data source every logStatsIntervalMs through Nest's Logger, counters as changes", async () => {
    const statsLines = () =>
      nestLog
        .library('log')
        .map((entry) => entry.message)
        .filter((m) => m.startsWith('stats of'));
    expect((await call('POST', `${testApp.url}/observed/write`)).status).toBe(201);
    const counted = await waitFor(() => statsLines().find((line) => / [1-9]\d* commits, /.test(line)) ?? false);
    expect(counted).toMatch(
      new RegExp(
        `^stats of data source 'default': \\d+ units of work open, \\d+ connections held \\(pool: 1 open, [01] idle, \\d+ waiting\\); ` +
          `acquisition wait p50 [\\d.]+ ms, p99 [\\d.]+ ms; connection held p50 [\\d.]+ ms, p99 [\\d.]+ ms; ` +
          `in the last ${STATS_INTERVAL_MS} ms: \\d+ commits, \\d+ rollbacks, 0 acquisition failures, 0 retries, 0 guard violations, 0 slow transactions, \\d+ idle-in-transaction gaps(; most idle in transaction: POST /observed/[\\w-]+ \\(p99 [\\d.]+ ms\\))?$`,
      ),
    );
    // With nothing going on, the next line counts nothing: the counters are changes, not totals.
    const idle = await waitFor(
      () =>
        statsLines()
          .slice(statsLines().indexOf(counted) + 1)
          .find((line) => line.includes(' 0 commits, ')) ?? false,
    );
    expect(idle).toContain('0 units of work open, 0 connections held (pool: 1 open, 1 idle, 0 waiting)');
  });

  it('exposes the same figures as Prometheus metrics, read at scrape time', async () => {
    const registry = new Registry();
    registerTransactionMetrics(host, { registry, prefix: 'app_tx_' });
    await Promise.all([call('POST', `${testApp.url}/observed/write`), call('POST', `${testApp.url}/observed/fail`)]);

    const text = await registry.metrics();
    const stats = host.stats();
    const ds = 'data_source="default"';
    expect(text).toContain('# TYPE app_tx_commits_total counter');
    expect(text).toContain(`app_tx_commits_total{${ds}} ${stats.commits}`);
    expect(text).toContain(`app_tx_rollbacks_total{${ds}} ${stats.rollbacks}`);
    expect(text).toContain(`app_tx_acquisition_failures_total{${ds}} ${stats.acquisitionFailures}`);
    expect(text).toContain(`app_tx_retries_total 0`);
    expect(text).toContain(`app_tx_guard_violations_total 0`);
    expect(text).toContain(`app_tx_slow_transactions_total ${stats.slowTransactions}`);
    expect(text).toContain('app_tx_units_of_work_open 0');
    expect(text).toContain(`app_tx_connections_held{${ds}} 0`);
    expect(text).toContain(`app_tx_pool_connections{${ds},state="open"} 1`);
    expect(text).toContain(`app_tx_pool_connections{${ds},state="waiting"} 0`);
    expect(text).toContain(`app_tx_acquisition_wait_seconds{${ds},quantile="0.99"} ${own(stats).acquisitionWaitMs.p99 / 1000}`);
    expect(text).toContain(`app_tx_connection_held_seconds{${ds},quantile="0.5"} ${own(stats).transactionMs.p50 / 1000}`);
    expect(stats.commits).toBeGreaterThan(0);
  });
});
