import { Controller, Post } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { setTimeout as delay } from 'node:timers/promises';
import { Registry } from 'prom-client';
import { EntityManager } from 'typeorm';
import { Transactional, TransactionalModule, type TransactionalStats, TransactionHost, TransactionRunner, Tx } from '../../lib';
import { registerTransactionMetrics } from '../../lib/prometheus';
import { ConnectionAudit } from '../../lib/testing';
import { engines, typeormOptions } from '../support/databases';
import { Item } from '../support/entities';
import { call } from '../support/http';
import { RecordingNestLogger } from '../support/recording-loggers';
import { suiteApp, suiteObserver } from '../support/suite';

/** The module's idleInTransactionMs here. */
const THRESHOLD_MS = 100;
/** The other work a handler awaits (a mail, an HTTP call): three times the threshold. */
const GAP_MS = 300;
/** Node.js may fire a timer up to a millisecond before its delay: the least a GAP_MS wait can measure. */
const LEAST_GAP_MS = GAP_MS - 2;

// The statements are made in functions of their own, so that each report names a call site of its own.
async function firstStatement(tx: EntityManager): Promise<void> {
  await tx.insert(Item, { label: 'first' });
}

async function secondStatement(tx: EntityManager): Promise<void> {
  await tx.insert(Item, { label: 'second' });
}

/** Work that is not the database's: what a mail or an HTTP call would be. The wait is the behaviour under test. */
function otherWork(): Promise<void> {
  return delay(GAP_MS);
}

@Controller('idle')
class IdleController {
  constructor(private readonly host: TransactionHost) {}

  @Post('between')
  async between(@Tx() tx: EntityManager) {
    await firstStatement(tx);
    await otherWork();
    await secondStatement(tx);
    return { ok: true };
  }

  @Post('before')
  async before(@Tx() tx: EntityManager) {
    await otherWork();
    await firstStatement(tx);
    await secondStatement(tx);
    return { ok: true };
  }

  @Post('after-commit')
  async afterCommit(@Tx() tx: EntityManager) {
    await firstStatement(tx);
    await secondStatement(tx);
    this.host.afterCommit(otherWork);
    return { ok: true };
  }

  @Post('to-the-end')
  async toTheEnd(@Tx() tx: EntityManager) {
    await firstStatement(tx);
    await otherWork();
    return { ok: true };
  }

  @Post('quick')
  async quick(@Tx() tx: EntityManager) {
    await firstStatement(tx);
    await secondStatement(tx);
    return { ok: true };
  }

  @Post('intended')
  @Transactional({ idleInTransactionMs: false })
  async intended(@Tx() tx: EntityManager) {
    await firstStatement(tx);
    await otherWork();
    await secondStatement(tx);
    return { ok: true };
  }

  @Post('slow')
  @Transactional({ idleInTransactionMs: 0, slowTransactionMs: THRESHOLD_MS })
  async slow(@Tx() tx: EntityManager) {
    await firstStatement(tx);
    await otherWork();
    await secondStatement(tx);
    return { ok: true };
  }
}

const site = (name: string) => new RegExp(`^${name} \\(.*idle-in-transaction\\.e2e-spec\\.ts:\\d+:\\d+\\)$`);

describe.each(engines)('idle in transaction on $name', (engine) => {
  const applicationName = `idle-${engine.name}`;
  const db = suiteObserver(engine);
  const nestLog = new RecordingNestLogger();
  let host: TransactionHost;
  let audit: ConnectionAudit;

  // Before the app closes.
  afterAll(() => {
    audit?.detach();
  });

  const testApp = suiteApp(db, {
    applicationName,
    tables: [Item],
    app: () => ({
      adapter: 'express',
      imports: [
        // Pool of 1: requests queue for the connection, and the wait for it must not count as idle.
        TypeOrmModule.forRoot(typeormOptions(engine, { poolSize: 1, applicationName, entities: [Item] })),
        TransactionalModule.forRoot({ idleInTransactionMs: THRESHOLD_MS }),
      ],
      controllers: [IdleController],
      logger: nestLog,
    }),
  });

  beforeAll(() => {
    host = testApp.get(TransactionHost);
    audit = ConnectionAudit.attach(testApp.dataSource);
  });

  beforeEach(() => {
    nestLog.clear();
    audit.reset();
  });

  const idleWarnings = () => nestLog.warnings().filter((w) => w.includes('idleInTransactionMs'));
  const routes = (stats: TransactionalStats) => stats.dataSources.default.routes;

  describe('a handler that awaits other work between two statements', () => {
    it('is reported with the call sites of both statements and what to do, and fails the audit', async () => {
      const before = host.stats().idleInTransactionGaps;
      expect((await call('POST', `${testApp.url}/idle/between`)).status).toBe(201);

      const [gap, ...more] = audit.idleGaps();
      expect(more).toEqual([]);
      expect(gap).toMatchObject({ unit: 'POST /idle/between', dataSource: 'default', thresholdMs: THRESHOLD_MS, atEnd: false });
      expect(gap.before).toMatch(site('firstStatement'));
      expect(gap.after).toMatch(site('secondStatement'));
      expect(gap.idleMs).toBeGreaterThanOrEqual(LEAST_GAP_MS);
      expect(host.stats().idleInTransactionGaps - before).toBe(1);

      const [warning, ...others] = idleWarnings();
      expect(others).toEqual([]);
      expect(warning).toContain(
        `POST /idle/between held its connection of data source 'default' idle in transaction for ${gap.idleMs} ms, ` +
          `longer than idleInTransactionMs (${THRESHOLD_MS} ms), between the statement at ${gap.before} and the statement at ${gap.after}.`,
      );
      expect(warning).toContain('before the first query');
      expect(warning).toContain('TransactionHost.afterCommit()');
      expect(warning).toContain('outbox row');

      expect(() => audit.assertNoIdleInTransaction()).toThrow(
        `- POST /idle/between: ${gap.idleMs} ms after the statement at ${gap.before}, until the statement at ${gap.after}`,
      );
    });

    it('is counted and recorded every time, and logged once per pair of call sites', async () => {
      const before = host.stats().idleInTransactionGaps;
      expect((await call('POST', `${testApp.url}/idle/between`)).status).toBe(201);
      expect((await call('POST', `${testApp.url}/idle/between`)).status).toBe(201);
      expect(audit.idleGaps()).toHaveLength(2);
      expect(host.stats().idleInTransactionGaps - before).toBe(2);
      // The first test of this suite logged this pair already.
      expect(idleWarnings()).toEqual([]);
    });
  });

  it('reports a wait after the last statement up to the end of the unit of work', async () => {
    expect((await call('POST', `${testApp.url}/idle/to-the-end`)).status).toBe(201);
    const [gap, ...more] = audit.idleGaps();
    expect(more).toEqual([]);
    expect(gap).toMatchObject({ unit: 'POST /idle/to-the-end', atEnd: true, after: 'the end of the unit of work (COMMIT)' });
    expect(gap.before).toMatch(site('firstStatement'));
    expect(idleWarnings()[0]).toContain(`between the statement at ${gap.before} and the end of the unit of work (COMMIT).`);
  });

  it('reports a run() by its name', async () => {
    await testApp.app.get(TransactionRunner).run(
      async (tx) => {
        await firstStatement(tx);
        await otherWork();
        await secondStatement(tx);
      },
      { name: 'nightly-mail' },
    );
    expect(audit.idleGaps().map((gap) => gap.unit)).toEqual(['nightly-mail']);
    expect(routes(host.stats())['nightly-mail'].idleMs.max).toBeGreaterThanOrEqual(LEAST_GAP_MS);
  });

  it('takes idleInTransactionMs per run(), and rejects a bad one before running anything', async () => {
    const runner = testApp.app.get(TransactionRunner);
    await runner.run(
      async (tx) => {
        await firstStatement(tx);
        await otherWork();
        await secondStatement(tx);
      },
      { name: 'patient-job', idleInTransactionMs: GAP_MS * 10 },
    );
    expect(audit.idleGaps()).toEqual([]);
    let ran = false;
    await expect(runner.run(() => (ran = true), { idleInTransactionMs: -1 })).rejects.toThrow(
      'TransactionRunner.run(): idleInTransactionMs must be a whole number of milliseconds, or 0 or false to turn the report off; got -1.',
    );
    expect(ran).toBe(false);
  });

  it.each([
    ['before its first query', 'before'],
    ['in an afterCommit hook', 'after-commit'],
  ])('does not report a handler that awaits the other work %s', async (_, path) => {
    expect((await call('POST', `${testApp.url}/idle/${path}`)).status).toBe(201);
    expect(audit.idleGaps()).toEqual([]);
    expect(idleWarnings()).toEqual([]);
    expect(() => audit.assertNoIdleInTransaction()).not.toThrow();
  });

  it('does not report a route that turns it off with idleInTransactionMs: false, but still shows its idle time', async () => {
    expect((await call('POST', `${testApp.url}/idle/intended`)).status).toBe(201);
    expect(audit.idleGaps()).toEqual([]);
    expect(routes(host.stats())['POST /idle/intended'].idleMs.max).toBeGreaterThanOrEqual(LEAST_GAP_MS);
  });

  it("adds the route's figures to the slowTransactionMs warning", async () => {
    expect((await call('POST', `${testApp.url}/idle/slow`)).status).toBe(201);
    nestLog.clear();
    expect((await call('POST', `${testApp.url}/idle/slow`)).status).toBe(201);
    const [warning] = nestLog.warnings().filter((w) => w.includes('slowTransactionMs'));
    expect(warning).toMatch(
      /Over its latest 1 unit\(s\) of work, POST \/idle\/slow held this connection p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms; in the database p50 [\d.]+ ms, p99 [\d.]+ ms, max [\d.]+ ms; idle in transaction p50 ([\d.]+) ms/,
    );
    // idleInTransactionMs: 0 turns the gap report off on this route.
    expect(audit.idleGaps()).toEqual([]);
  });

  it('splits each route’s hold time into database and idle in transaction under load, in stats() and Prometheus', async () => {
    const before = routes(host.stats());
    const count = (route: string) => before[route]?.heldMs.count ?? 0;
    const responses = await Promise.all([
      ...Array.from({ length: 4 }, () => call('POST', `${testApp.url}/idle/between`)),
      ...Array.from({ length: 20 }, () => call('POST', `${testApp.url}/idle/quick`)),
    ]);
    expect(responses.map((r) => r.status)).toEqual(responses.map(() => 201));

    const stats = host.stats();
    const between = routes(stats)['POST /idle/between'];
    const quick = routes(stats)['POST /idle/quick'];
    for (const times of [between.heldMs, between.databaseMs, between.idleMs])
      expect(times.count - count('POST /idle/between')).toBe(4);
    for (const times of [quick.heldMs, quick.databaseMs, quick.idleMs]) expect(times.count - count('POST /idle/quick')).toBe(20);
    // The route that waits while holding its connection shows it in its idle time; the hold includes it.
    expect(between.idleMs.p50).toBeGreaterThanOrEqual(LEAST_GAP_MS);
    expect(between.heldMs.p50).toBeGreaterThanOrEqual(between.idleMs.p50);
    // The quick route queued behind it for the only connection: that wait is not idle in transaction.
    expect(quick.idleMs.p50).toBeLessThan(between.idleMs.p50);
    // Nor is it time in the database.
    expect(quick.databaseMs.p50).toBeLessThan(between.idleMs.p50);
    expect(quick.databaseMs.max).toBeGreaterThan(0);

    const registry = new Registry();
    registerTransactionMetrics(host, { registry, prefix: 'idle_' });
    const text = await registry.metrics();
    const labels = 'data_source="default",route="POST /idle/between"';
    const now = routes(host.stats())['POST /idle/between'];
    expect(text).toContain(`idle_route_idle_in_transaction_seconds{${labels},quantile="0.5"} ${now.idleMs.p50 / 1000}`);
    expect(text).toContain(`idle_route_database_seconds{${labels},quantile="0.99"} ${now.databaseMs.p99 / 1000}`);
    expect(text).toContain(`idle_route_connection_held_seconds{${labels},quantile="1"} ${now.heldMs.max / 1000}`);
    expect(text).toContain(`idle_idle_in_transaction_gaps_total ${host.stats().idleInTransactionGaps}`);
  });
});
