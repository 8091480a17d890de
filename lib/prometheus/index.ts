import type { Counter as CounterType, Gauge as GaugeType, Registry } from 'prom-client';
import type { TransactionHost } from '../core/transaction-runner';
import type { RouteHoldStats } from '../core/route-hold-times';
import type { DataSourceStats, DurationSummary, TransactionalStats } from '../core/stats';
import { TransactionalOptionsError } from '../errors';

/** Options of {@link registerTransactionMetrics}. */
export interface TransactionMetricsOptions {
  /** Where the metrics go. Default: prom-client's global `register`. */
  registry?: Registry;
  /** Prefix of every metric name. Default: `'nestjs_request_transaction_'`. */
  prefix?: string;
}

type PromClient = typeof import('prom-client');

function promClient(): PromClient {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('prom-client') as PromClient;
  } catch (error) {
    throw new TransactionalOptionsError(
      `registerTransactionMetrics() needs the package prom-client, which could not be loaded ` +
        `(${error instanceof Error ? error.message : String(error)}). Install it: npm install prom-client.`,
    );
  }
}

/**
 * Exposes `TransactionHost.stats()` as Prometheus metrics, read when the registry is scraped (nothing
 * is added to the request path). Call it once per registry, e.g. in `main.ts` after `app.init()`.
 *
 * Gauges: `units_of_work_open`, `connections_held{data_source}`, `pool_connections{data_source,state}`
 * (state `open`, `idle`, `waiting`), `acquisition_wait_seconds{data_source,quantile}` and
 * `connection_held_seconds{data_source,quantile}` (quantile `0.5`, `0.99`, `1` over the latest 1024);
 * per route and `run()` name, over its latest 256: `route_connection_held_seconds`,
 * `route_database_seconds` and `route_idle_in_transaction_seconds` `{data_source,route,quantile}`.
 * Counters: `commits_total`, `rollbacks_total`, `acquisition_failures_total` (per `data_source`),
 * `retries_total`, `guard_violations_total`, `slow_transactions_total`, `idle_in_transaction_gaps_total`.
 *
 * @example
 * import { registerTransactionMetrics } from 'nestjs-request-transaction/prometheus';
 * registerTransactionMetrics(app.get(TransactionHost));
 */
export function registerTransactionMetrics(host: TransactionHost, options: TransactionMetricsOptions = {}): void {
  const client = promClient();
  const registers = [options.registry ?? client.register];
  const prefix = options.prefix ?? 'nestjs_request_transaction_';
  if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(prefix)) {
    throw new TransactionalOptionsError(
      `registerTransactionMetrics(): prefix '${prefix}' is not a valid start of a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*).`,
    );
  }
  const gauge = (name: string, help: string, labelNames: string[], read: (g: GaugeType, stats: TransactionalStats) => void) =>
    new client.Gauge({
      name: prefix + name,
      help,
      labelNames,
      registers,
      collect(this: GaugeType) {
        this.reset();
        read(this, host.stats());
      },
    });
  const counter = (
    name: string,
    help: string,
    labelNames: string[],
    read: (stats: TransactionalStats) => [Record<string, string>, number][],
  ) =>
    new client.Counter({
      name: prefix + name,
      help,
      labelNames,
      registers,
      collect(this: CounterType) {
        this.reset();
        for (const [labels, value] of read(host.stats())) this.inc(labels, value);
      },
    });
  const bySource = (pick: (ds: DataSourceStats) => number) => (stats: TransactionalStats) =>
    Object.entries(stats.dataSources).map(([name, ds]): [Record<string, string>, number] => [{ data_source: name }, pick(ds)]);
  const durations = (name: string, help: string, pick: (ds: DataSourceStats) => DurationSummary) =>
    gauge(name, help, ['data_source', 'quantile'], (g, stats) => {
      for (const [data_source, ds] of Object.entries(stats.dataSources)) {
        const d = pick(ds);
        g.set({ data_source, quantile: '0.5' }, d.p50 / 1000);
        g.set({ data_source, quantile: '0.99' }, d.p99 / 1000);
        g.set({ data_source, quantile: '1' }, d.max / 1000);
      }
    });
  const byRoute = (name: string, help: string, pick: (route: RouteHoldStats) => DurationSummary) =>
    gauge(name, help, ['data_source', 'route', 'quantile'], (g, stats) => {
      for (const [data_source, ds] of Object.entries(stats.dataSources)) {
        for (const [route, times] of Object.entries(ds.routes)) {
          const d = pick(times);
          g.set({ data_source, route, quantile: '0.5' }, d.p50 / 1000);
          g.set({ data_source, route, quantile: '0.99' }, d.p99 / 1000);
          g.set({ data_source, route, quantile: '1' }, d.max / 1000);
        }
      }
    });

  gauge(
    'units_of_work_open',
    'Units of work (requests, TransactionRunner.run() calls) started and not yet settled.',
    [],
    (g, s) => g.set(s.openUnitsOfWork),
  );
  gauge('connections_held', 'Pooled connections held by units of work.', ['data_source'], (g, s) => {
    for (const [data_source, ds] of Object.entries(s.dataSources)) g.set({ data_source }, ds.connectionsHeld);
  });
  gauge(
    'pool_connections',
    "The driver pool's connections: open, idle, and requests waiting for one.",
    ['data_source', 'state'],
    (g, s) => {
      for (const [data_source, ds] of Object.entries(s.dataSources)) {
        g.set({ data_source, state: 'open' }, ds.pool.total);
        g.set({ data_source, state: 'idle' }, ds.pool.idle);
        g.set({ data_source, state: 'waiting' }, ds.pool.waiting);
      }
    },
  );
  durations(
    'acquisition_wait_seconds',
    'Wait for a pooled connection, over the latest 1024 acquisitions.',
    (ds) => ds.acquisitionWaitMs,
  );
  durations(
    'connection_held_seconds',
    'Time a unit of work held its connection, over the latest 1024.',
    (ds) => ds.transactionMs,
  );
  byRoute(
    'route_connection_held_seconds',
    "Time a route's units of work held their connection, over the route's latest 256.",
    (r) => r.heldMs,
  );
  byRoute(
    'route_database_seconds',
    "Of that, time with a statement in the database, over the route's latest 256.",
    (r) => r.databaseMs,
  );
  byRoute(
    'route_idle_in_transaction_seconds',
    "Of that, time idle in transaction (the connection held while the code waited on something else), over the route's latest 256.",
    (r) => r.idleMs,
  );
  counter(
    'commits_total',
    'Transactions committed.',
    ['data_source'],
    bySource((ds) => ds.commits),
  );
  counter(
    'rollbacks_total',
    'Transactions rolled back.',
    ['data_source'],
    bySource((ds) => ds.rollbacks),
  );
  counter(
    'acquisition_failures_total',
    'Connections the pool could not give.',
    ['data_source'],
    bySource((ds) => ds.acquisitionFailures),
  );
  counter('retries_total', 'Units of work run again after a deadlock or serialization failure.', [], (s) => [[{}, s.retries]]);
  counter(
    'guard_violations_total',
    'Connections requested while a unit of work held one or was taking one (guard warn and throw).',
    [],
    (s) => [[{}, s.guardViolations]],
  );
  counter('slow_transactions_total', 'Units of work that held a connection longer than slowTransactionMs.', [], (s) => [
    [{}, s.slowTransactions],
  ]);
  counter(
    'idle_in_transaction_gaps_total',
    'Gaps longer than idleInTransactionMs in which a unit of work held its connection and ran no statement.',
    [],
    (s) => [[{}, s.idleInTransactionGaps]],
  );
}
