import { Registry } from 'prom-client';
import { DataSourceCounters, DurationWindow, type TransactionalStats, WINDOW_SIZE } from '../../lib/core/stats';
import { MAX_ROUTES, OTHER_ROUTES, ROUTE_WINDOW_SIZE, RouteHoldTable } from '../../lib/core/route-hold-times';
import { statsLine } from '../../lib/core/data-source-registry';
import { TransactionalOptionsError } from '../../lib/errors';
import type { TransactionHost } from '../../lib/core/transaction-runner';

describe('DurationWindow', () => {
  it('summarises nothing as zeros', () => {
    expect(new DurationWindow().summary()).toEqual({ count: 0, p50: 0, p99: 0, max: 0 });
  });

  it('gives nearest-rank p50 and p99 and the max of what it holds', () => {
    const window = new DurationWindow();
    for (let ms = 100; ms >= 1; ms--) window.record(ms);
    expect(window.summary()).toEqual({ count: 100, p50: 50, p99: 99, max: 100 });
  });

  it('keeps only the latest WINDOW_SIZE durations, and counts them all', () => {
    const window = new DurationWindow();
    for (let i = 0; i < WINDOW_SIZE; i++) window.record(1000);
    for (let i = 0; i < WINDOW_SIZE; i++) window.record(1);
    expect(window.summary()).toEqual({ count: 2 * WINDOW_SIZE, p50: 1, p99: 1, max: 1 });
  });
});

describe('RouteHoldTable', () => {
  it('splits each hold into database and idle time, per route', () => {
    const table = new RouteHoldTable();
    table.of('POST /mail').record(310, 10);
    table.of('GET /me').record(4, 3);
    const routes = table.snapshot();
    expect(routes['POST /mail']).toEqual({
      heldMs: { count: 1, p50: 310, p99: 310, max: 310 },
      databaseMs: { count: 1, p50: 10, p99: 10, max: 10 },
      idleMs: { count: 1, p50: 300, p99: 300, max: 300 },
    });
    expect(routes['GET /me'].idleMs.max).toBe(1);
  });

  it('never reports more database time than the hold, nor negative idle time', () => {
    const table = new RouteHoldTable();
    table.of('x').record(5, 5.2);
    expect(table.snapshot().x).toMatchObject({ databaseMs: { max: 5 }, idleMs: { max: 0 } });
  });

  it(`keeps ${MAX_ROUTES} routes and counts the ones after them together, so that names made per call cannot grow it`, () => {
    const table = new RouteHoldTable();
    for (let i = 0; i < MAX_ROUTES + 10; i++) table.of(`job-${i}`).record(2, 1);
    const routes = table.snapshot();
    expect(Object.keys(routes)).toHaveLength(MAX_ROUTES + 1);
    expect(routes[`job-${MAX_ROUTES - 1}`].heldMs.count).toBe(1);
    expect(routes[OTHER_ROUTES].heldMs.count).toBe(10);
    expect(routes[`job-${MAX_ROUTES}`]).toBeUndefined();
  });

  it(`summarises a route over its latest ${ROUTE_WINDOW_SIZE}`, () => {
    const table = new RouteHoldTable();
    for (let i = 0; i < ROUTE_WINDOW_SIZE; i++) table.of('r').record(1000, 0);
    for (let i = 0; i < ROUTE_WINDOW_SIZE; i++) table.of('r').record(1, 0);
    expect(table.snapshot().r.idleMs).toEqual({ count: 2 * ROUTE_WINDOW_SIZE, p50: 1, p99: 1, max: 1 });
  });
});

describe('statsLine()', () => {
  const statsOf = (counters: DataSourceCounters, gaps: number): TransactionalStats => ({
    openUnitsOfWork: 0,
    connectionsHeld: 0,
    commits: 0,
    rollbacks: 0,
    acquisitionFailures: 0,
    retries: 0,
    guardViolations: 0,
    slowTransactions: 0,
    idleInTransactionGaps: gaps,
    dataSources: { default: counters.snapshot({ total: 1, idle: 1, waiting: 0, max: 1 }) },
  });

  it('counts the idle-in-transaction gaps of the interval and names the route idle in transaction longest', () => {
    const counters = new DataSourceCounters();
    const before = statsOf(counters, 3);
    counters.routes.of('GET /me').record(3, 2);
    counters.routes.of('POST /users').record(1210, 10);
    counters.routes.of('POST /orders').record(60, 10);
    expect(statsLine('default', statsOf(counters, 5), before, 1000)).toMatch(
      / 0 slow transactions, 2 idle-in-transaction gaps; most idle in transaction: POST \/users \(p99 1200 ms\)$/,
    );
    expect(statsLine('default', before, before, 1000)).toMatch(/ 0 idle-in-transaction gaps$/);
  });
});

describe('registerTransactionMetrics()', () => {
  const host = { stats: () => ({}) } as unknown as TransactionHost;

  it('rejects a prefix Prometheus would not accept', () => {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { registerTransactionMetrics } = require('../../lib/prometheus') as typeof import('../../lib/prometheus');
    expect(() => registerTransactionMetrics(host, { registry: new Registry(), prefix: 'my-app.' })).toThrow(
      new TransactionalOptionsError(
        "registerTransactionMetrics(): prefix 'my-app.' is not a valid start of a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*).",
      ),
    );
  });

  it('says to install prom-client when it is missing', () => {
    jest.isolateModules(() => {
      jest.doMock('prom-client', () => {
        throw new Error("Cannot find module 'prom-client'");
      });
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { registerTransactionMetrics } = require('../../lib/prometheus') as typeof import('../../lib/prometheus');
      expect(() => registerTransactionMetrics(host)).toThrow(
        /^registerTransactionMetrics\(\) needs the package prom-client, which could not be loaded \(Cannot find module 'prom-client'\)\. Install it: npm install prom-client\.$/,
      );
    });
  });
});
