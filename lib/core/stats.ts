import type { PoolStats } from './dialect';

/** How many of the latest durations a summary is computed over. A power of two. */
export const WINDOW_SIZE = 1024;

/** Durations in milliseconds: how many were recorded in all, and p50 / p99 / max of the latest {@link WINDOW_SIZE}. */
export interface DurationSummary {
  count: number;
  p50: number;
  p99: number;
  max: number;
}

/** One data source's side of `TransactionHost.stats()`. */
export interface DataSourceStats {
  /** Connections held by units of work right now. */
  connectionsHeld: number;
  /** Transactions committed / rolled back on this data source (units of work that never queried it send neither). */
  commits: number;
  rollbacks: number;
  /** Connections the pool could not give: acquisition timeout, database unreachable (`ConnectionAcquisitionError`). */
  acquisitionFailures: number;
  /** The driver's pool, now: connections open, idle, and requests waiting for one. */
  pool: PoolStats;
  /** Time a unit of work waited for its connection. */
  acquisitionWaitMs: DurationSummary;
  /** Time a unit of work held its connection: from the pool to back to the pool. */
  transactionMs: DurationSummary;
}

/** What `TransactionHost.stats()` returns: a snapshot for the whole application. */
export interface TransactionalStats {
  /** Units of work started and not yet settled (requests in flight included, whether they queried or not). */
  openUnitsOfWork: number;
  /** Sum over the data sources. */
  connectionsHeld: number;
  commits: number;
  rollbacks: number;
  acquisitionFailures: number;
  /** Units of work run again after a deadlock or serialization failure. */
  retries: number;
  /** Connections requested while a unit of work held (or was taking) one: counted in guard modes 'warn' and 'throw'. */
  guardViolations: number;
  /** Units of work that held a connection longer than `slowTransactionMs` (each counted and logged once). */
  slowTransactions: number;
  /** Per data source, by the name given to `TransactionalModule.forRoot({ dataSource })` (`'default'`). */
  dataSources: Record<string, DataSourceStats>;
}

/** A ring of the latest durations: recording is one store, summarising sorts a copy. */
export class DurationWindow {
  private readonly samples = new Float64Array(WINDOW_SIZE);
  private count = 0;

  record(ms: number): void {
    this.samples[this.count & (WINDOW_SIZE - 1)] = ms;
    this.count += 1;
  }

  summary(): DurationSummary {
    const n = Math.min(this.count, WINDOW_SIZE);
    if (n === 0) return { count: 0, p50: 0, p99: 0, max: 0 };
    const sorted = this.samples.slice(0, n).sort();
    // Nearest rank.
    const rank = (q: number) => sorted[Math.min(n - 1, Math.ceil(q * n) - 1)];
    return { count: this.count, p50: round(rank(0.5)), p99: round(rank(0.99)), max: round(sorted[n - 1]) };
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** The live counters of one data source. */
export class DataSourceCounters {
  connectionsHeld = 0;
  commits = 0;
  rollbacks = 0;
  acquisitionFailures = 0;
  readonly acquisitionWait = new DurationWindow();
  readonly held = new DurationWindow();

  snapshot(pool: PoolStats): DataSourceStats {
    return {
      connectionsHeld: this.connectionsHeld,
      commits: this.commits,
      rollbacks: this.rollbacks,
      acquisitionFailures: this.acquisitionFailures,
      pool,
      acquisitionWaitMs: this.acquisitionWait.summary(),
      transactionMs: this.held.summary(),
    };
  }
}

/** The live counters of the application. */
export class ApplicationCounters {
  openUnitsOfWork = 0;
  retries = 0;
  guardViolations = 0;
  slowTransactions = 0;
}
