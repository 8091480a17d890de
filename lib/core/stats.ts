import type { PoolStats } from './dialect';
import { type DurationSummary, DurationWindow } from './duration-window';
export { type DurationSummary, DurationWindow, WINDOW_SIZE } from './duration-window';
import { RouteHoldTable, type RouteHoldStats } from './route-hold-times';

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
  /**
   * Per route (`POST /transfers`) and per `run()` name, over its latest 256 units of work: how long they
   * held this data source's connection, and how that split into time in the database and time idle in
   * transaction. The route whose `idleMs` is high waits on something else while holding its connection.
   */
  routes: Record<string, RouteHoldStats>;
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
  /** Gaps longer than `idleInTransactionMs` between two statements of a unit of work (or its last and its end), each counted once. */
  idleInTransactionGaps: number;
  /** Per data source, by the name given to `TransactionalModule.forRoot({ dataSource })` (`'default'`). */
  dataSources: Record<string, DataSourceStats>;
}

/** The live counters of one data source. */
export class DataSourceCounters {
  connectionsHeld = 0;
  commits = 0;
  rollbacks = 0;
  acquisitionFailures = 0;
  readonly acquisitionWait = new DurationWindow();
  readonly held = new DurationWindow();
  /** Hold times per route and `run()` name. */
  readonly routes = new RouteHoldTable();

  snapshot(pool: PoolStats): DataSourceStats {
    return {
      connectionsHeld: this.connectionsHeld,
      commits: this.commits,
      rollbacks: this.rollbacks,
      acquisitionFailures: this.acquisitionFailures,
      pool,
      acquisitionWaitMs: this.acquisitionWait.summary(),
      transactionMs: this.held.summary(),
      routes: this.routes.snapshot(),
    };
  }
}

/** The live counters of the application. */
export class ApplicationCounters {
  openUnitsOfWork = 0;
  retries = 0;
  guardViolations = 0;
  slowTransactions = 0;
  idleInTransactionGaps = 0;
}
