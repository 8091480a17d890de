import type { DataSourceEntry, DataSourceRegistry } from './data-source-registry';
import { callSite, captureStack, type StackHolder } from './call-site';
import { reportIdleGap } from './idle-gap-report';
import { ROUTE_WINDOW_SIZE, type RouteHoldTimes } from './route-hold-times';

/** What the clock needs of the transaction it times: its unit of work and its data source. */
export interface ClockedTransaction {
  readonly unitOfWork: {
    readonly label: string;
    readonly registry: DataSourceRegistry;
    readonly owner: object;
    /** Why the unit of work was ended early, once it was. */
    readonly cancelled: string | undefined;
  };
  readonly entry: DataSourceEntry;
}

/**
 * An owner of units of work that keeps its route's hold times at hand (a route's `HandlerCall`): by data
 * source name, so that recording them looks nothing up by label.
 */
export interface HoldTimesCache {
  readonly holdTimes?: Map<string, RouteHoldTimes>;
}

/**
 * Times one data source transaction's hold of its connection: when a statement of it was in flight
 * (time in the database) and when none was (idle in transaction). It reads the clock only when the
 * first statement in flight begins and the last one ends, and at the end; no timer. With a threshold
 * (`idleInTransactionMs`) it also keeps where each statement was made (a stack captured as it ends,
 * formatted only for a report), and checks the gap since the last one when the next begins and when
 * the unit of work ends. No timer per statement: a gap that never ends is reported when the unit of
 * work does (a client disconnect, `timeoutMs`), and while it lasts by `slowTransactionMs`'s one timer.
 */
export class ConnectionClock {
  private databaseMs = 0;
  /** While a statement is in flight on the held connection: when the first of them began (or the connection came). */
  private busySince?: number;
  /** When the last statement in flight ended; undefined before the first one did. */
  private lastEnd?: number;
  /** Where the latest statement was made (kept only with a threshold). */
  private lastSite?: StackHolder;
  private held = false;
  /** A gap found when a statement began, reported when it ends. */
  private gapMs?: number;

  constructor(
    private readonly tx: ClockedTransaction,
    /** `idleInTransactionMs` in force; undefined: no gap is checked, no stack captured. */
    private readonly thresholdMs: number | undefined,
  ) {}

  /** A statement begins; `first`: no other statement of the transaction is in flight. */
  begin(first: boolean): void {
    if (!first || !this.held) return;
    const now = performance.now();
    this.busySince = now;
    const threshold = this.thresholdMs;
    // Reported when this statement ends: only then do V8's async frames lead back to the code that made it.
    if (threshold !== undefined && this.lastEnd !== undefined && now - this.lastEnd > threshold) this.gapMs = now - this.lastEnd;
  }

  /** A statement ended; `last`: no other statement of the transaction is in flight. */
  end(last: boolean): void {
    if (this.thresholdMs !== undefined) {
      // Captured after the statement's await: the frames then lead back to the application (see `begin()`).
      const site = captureStack();
      if (this.gapMs !== undefined) this.report(this.gapMs, this.thresholdMs, callSite(site) ?? '(unknown)', false);
      this.gapMs = undefined;
      this.lastSite = site;
    }
    if (!last || this.busySince === undefined) return;
    const now = performance.now();
    this.databaseMs += now - this.busySince;
    this.busySince = undefined;
    this.lastEnd = now;
  }

  /** The connection came from the pool at `at`; `running`: the statement that asked for it is in flight. */
  acquired(at: number, running: boolean): void {
    this.held = true;
    // The wait for the connection is neither database time nor idle in transaction.
    if (running) this.busySince = at;
  }

  /** COMMIT or ROLLBACK is about to go out, with no statement in flight: checks the last gap; the rest is database time. */
  ending(commit: boolean): void {
    const now = performance.now();
    const threshold = this.thresholdMs;
    if (threshold !== undefined && this.lastEnd !== undefined && this.busySince === undefined && now - this.lastEnd > threshold) {
      const reason = this.tx.unitOfWork.cancelled;
      const end = `the end of the unit of work (${commit ? 'COMMIT' : 'ROLLBACK'}${reason ? `: ${reason}` : ''})`;
      this.report(now - this.lastEnd, threshold, end, true);
    }
    this.busySince ??= now;
  }

  /** Time in the database so far, until `now`. */
  databaseMsAt(now: number): number {
    return this.databaseMs + (this.busySince === undefined ? 0 : now - this.busySince);
  }

  /** The connection taken at `acquiredAt` went back to the pool (or was discarded): records the route's hold times. */
  released(acquiredAt: number | undefined): void {
    if (acquiredAt === undefined) return;
    const now = performance.now();
    this.routeTimes().record(now - acquiredAt, this.databaseMsAt(now));
    this.busySince = undefined;
    this.held = false;
  }

  /** For the slow-transaction warning: the route's figures so far, to tell one slow request from a slow route. */
  describeRoute(): string {
    const { heldMs, databaseMs, idleMs } = this.routeTimes().summary();
    if (heldMs.count === 0) return '';
    const figures = (d: { p50: number; p99: number; max: number }) => `p50 ${d.p50} ms, p99 ${d.p99} ms, max ${d.max} ms`;
    return (
      ` Over its latest ${Math.min(heldMs.count, ROUTE_WINDOW_SIZE)} unit(s) of work, ${this.tx.unitOfWork.label} held this connection ` +
      `${figures(heldMs)}; in the database ${figures(databaseMs)}; idle in transaction ${figures(idleMs)}.`
    );
  }

  private routeTimes(): RouteHoldTimes {
    const { unitOfWork: ctx, entry } = this.tx;
    const cache = (ctx.owner as HoldTimesCache).holdTimes;
    let times = cache?.get(entry.name);
    if (times === undefined) {
      times = entry.counters.routes.of(ctx.label);
      cache?.set(entry.name, times);
    }
    return times;
  }

  private report(idleMs: number, thresholdMs: number, after: string, atEnd: boolean): void {
    const { unitOfWork: ctx, entry } = this.tx;
    const before = callSite(this.lastSite) ?? '(unknown)';
    const gap = { unit: ctx.label, dataSource: entry.name, idleMs: Math.round(idleMs), thresholdMs, before, after, atEnd };
    reportIdleGap(gap, ctx.registry, entry.dataSource);
  }
}
