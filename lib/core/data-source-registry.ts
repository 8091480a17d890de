import { Injectable, Logger, type OnApplicationBootstrap, type OnModuleDestroy } from '@nestjs/common';
import type { DataSource } from 'typeorm';
import { TransactionalOptionsError } from '../errors';
import type { ResolvedModuleOptions } from '../transactional.options';
import type { Dialect } from './dialect';
import type { RouteHoldStats } from './route-hold-times';
import { ApplicationCounters, type DataSourceCounters, type TransactionalStats } from './stats';

/** The name `@nestjs/typeorm` gives a data source registered without one. */
export const DEFAULT_DATA_SOURCE = 'default';

/** One data source under the library's care. */
export interface DataSourceEntry {
  readonly name: string;
  readonly dataSource: DataSource;
  readonly dialect: Dialect;
  readonly options: ResolvedModuleOptions;
  /**
   * Set by the testing kit's rollback-per-test: every connection is the test's own, already inside a
   * transaction, so a unit of work opens a SAVEPOINT instead of a transaction.
   */
  insideTestTransaction?: boolean;
  /** Its side of `TransactionHost.stats()`. */
  readonly counters: DataSourceCounters;
}

const logger = new Logger('TransactionalModule');

/** The data sources registered by `TransactionalModule.forRoot()` calls of one application. */
@Injectable()
export class DataSourceRegistry implements OnApplicationBootstrap, OnModuleDestroy {
  private readonly entries = new Map<string, DataSourceEntry>();
  private readonly statsTimers: NodeJS.Timeout[] = [];
  readonly counters = new ApplicationCounters();
  /** Call sites already reported in `'warn'` mode: each is logged once. */
  readonly reportedSites = new Set<string>();

  register(entry: DataSourceEntry): void {
    if (this.entries.has(entry.name)) {
      throw new TransactionalOptionsError(
        `TransactionalModule.forRoot() was called twice for data source '${entry.name}'. Call it once per data source.`,
      );
    }
    this.entries.set(entry.name, entry);
  }

  /** `TransactionHost.stats()`: the counters, and each pool as its driver reports it now. */
  stats(): TransactionalStats {
    const stats: TransactionalStats = {
      openUnitsOfWork: this.counters.openUnitsOfWork,
      connectionsHeld: 0,
      commits: 0,
      rollbacks: 0,
      acquisitionFailures: 0,
      retries: this.counters.retries,
      guardViolations: this.counters.guardViolations,
      slowTransactions: this.counters.slowTransactions,
      idleInTransactionGaps: this.counters.idleInTransactionGaps,
      dataSources: {},
    };
    for (const entry of this.entries.values()) {
      const source = entry.counters.snapshot(entry.dialect.poolStats(entry.dataSource));
      stats.dataSources[entry.name] = source;
      stats.connectionsHeld += source.connectionsHeld;
      stats.commits += source.commits;
      stats.rollbacks += source.rollbacks;
      stats.acquisitionFailures += source.acquisitionFailures;
    }
    return stats;
  }

  /** Starts the `logStatsIntervalMs` lines. */
  onApplicationBootstrap(): void {
    for (const entry of this.entries.values()) {
      const interval = entry.options.logStatsIntervalMs;
      if (interval === undefined) continue;
      let previous = this.stats();
      const timer = setInterval(() => {
        const now = this.stats();
        logger.log(statsLine(entry.name, now, previous, interval));
        previous = now;
      }, interval);
      timer.unref();
      this.statsTimers.push(timer);
    }
  }

  onModuleDestroy(): void {
    for (const timer of this.statsTimers.splice(0)) clearInterval(timer);
  }

  has(entry: DataSourceEntry): boolean {
    return this.entries.get(entry.name) === entry;
  }

  /** The entry of a data source, or an error that lists the registered ones. */
  get(name: string, use: string): DataSourceEntry {
    const entry = this.entries.get(name);
    if (entry) return entry;
    const known = [...this.entries.keys()].map((n) => `'${n}'`).join(', ') || 'none';
    throw new TransactionalOptionsError(
      `${use} asked for data source '${name}', which TransactionalModule does not manage (registered: ${known}). ` +
        `Add TransactionalModule.forRoot({ dataSource: '${name}' }) or fix the name.`,
    );
  }
}

/** One `logStatsIntervalMs` line: the state now, and the counters' changes since the previous line. */
export function statsLine(name: string, now: TransactionalStats, before: TransactionalStats, intervalMs: number): string {
  const ds = now.dataSources[name];
  const was = before.dataSources[name];
  const wait = ds.acquisitionWaitMs;
  const held = ds.transactionMs;
  return (
    `stats of data source '${name}': ${now.openUnitsOfWork} units of work open, ${ds.connectionsHeld} connections held ` +
    `(pool: ${ds.pool.total} open, ${ds.pool.idle} idle, ${ds.pool.waiting} waiting); acquisition wait p50 ${wait.p50} ms, ` +
    `p99 ${wait.p99} ms; connection held p50 ${held.p50} ms, p99 ${held.p99} ms; in the last ${intervalMs} ms: ` +
    `${ds.commits - was.commits} commits, ${ds.rollbacks - was.rollbacks} rollbacks, ` +
    `${ds.acquisitionFailures - was.acquisitionFailures} acquisition failures, ${now.retries - before.retries} retries, ` +
    `${now.guardViolations - before.guardViolations} guard violations, ${now.slowTransactions - before.slowTransactions} slow transactions, ` +
    `${now.idleInTransactionGaps - before.idleInTransactionGaps} idle-in-transaction gaps${mostIdle(ds.routes)}`
  );
}

/** The route whose connection sat idle in transaction longest (p99), for the stats line: the one to look at first. */
function mostIdle(routes: Record<string, RouteHoldStats>): string {
  let worst: [string, number] | undefined;
  for (const [route, times] of Object.entries(routes)) {
    if (times.idleMs.p99 > (worst?.[1] ?? 0)) worst = [route, times.idleMs.p99];
  }
  return worst === undefined ? '' : `; most idle in transaction: ${worst[0]} (p99 ${worst[1]} ms)`;
}
